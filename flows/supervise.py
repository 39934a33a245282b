"""Run one command so that it, and everything it starts, ends with the process that asked for it.

    python flows/supervise.py <parent pid> -- <command...>

``flows.common.run_in_group`` starts this script in a new session (its own process group) and it
runs the command in that group. Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) sends
this script SIGTERM the moment its parent dies, even by SIGKILL; it then SIGKILLs the whole group:
``dvc repro``, the stage's ``python -m pipeline.stages.train``, and anything those started. The
signal only reaches a direct child, which is why this supervisor sits between the flow and DVC.
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


def die_with_parent(parent: int) -> None:
    """SIGTERM to this process when ``parent`` dies; if it already has, end the group now."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before prctl took effect: nobody would signal us
        end_group(signal.SIGTERM, None)


def end_group(signum: int, frame: object) -> None:
    """SIGKILL every process of this group, this one included (a SIGKILL cannot be ignored or outlived)."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python flows/supervise.py <parent pid> -- <command...>\n")
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, end_group)
    die_with_parent(int(argv[0]))
    code = subprocess.call(argv[2:])
    return code if code >= 0 else 128 - code  # killed by signal N: the shell's 128 + N


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
