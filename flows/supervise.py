"""Run one command so that it, and everything it starts, ends with the process that asked for it.

    python flows/supervise.py <parent pid> -- <command...>

``flows.common.run_in_group`` starts this script in a new session (its own process group) and it
runs the command as the leader of a process group of its own. Linux's parent-death signal
(``prctl(PR_SET_PDEATHSIG)``) sends this script SIGTERM the moment its parent dies, even by SIGKILL;
it then SIGKILLs the command's whole group: ``dvc repro``, the stage's ``python -m
pipeline.stages.train``, and anything those started. The signal only reaches a direct child, which
is why this supervisor sits between the flow and DVC. When the command exits, whatever it left
running in its group is killed too, so the caller's output pipes close and its wait returns.
Limits: a process that leaves the group (``setsid``) escapes; elsewhere than Linux there is no
parent-death signal and only ``run_in_group``'s own cleanup (on return, error or timeout) applies.

Run as a script by path, not as ``-m flows.supervise``: the command's working directory is the DVC
workspace, which need not hold this package. Standard library only, so it starts in milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_command: subprocess.Popen | None = None  # the command, leader of its own process group once started


def die_with_parent(parent: int) -> None:
    """SIGTERM to this process when ``parent`` dies; if it already has, end now."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before prctl took effect: nobody would signal us
        end(signal.SIGTERM, None)


def kill_command_group() -> None:
    """SIGKILL the command's group: the command and everything it started that is still alive."""
    if _command is not None:
        try:
            os.killpg(_command.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # the group is gone (macOS says PermissionError)
            pass


def end(signum: int, frame: object) -> None:
    """The parent died, or asked us to stop: end the command's whole group, then this process."""
    kill_command_group()
    os._exit(128 + signum)


def main(argv: list[str]) -> int:
    global _command
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python flows/supervise.py <parent pid> -- <command...>\n")
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, end)
    die_with_parent(int(argv[0]))
    # The command leads a group of its own, so that once it exits its stragglers (a backgrounded
    # grandchild holding the output pipes open) can be killed without killing this process first.
    _command = subprocess.Popen(argv[2:], process_group=0)
    code = _command.wait()
    kill_command_group()  # nothing the command started outlives it: the caller's pipes close now
    return code if code >= 0 else 128 - code  # killed by signal N: the shell's 128 + N


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
