"""What both flows share: the workspace root, the retrain lock, the monitor's state file, DVC calls."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flows import TELEMETRY_OFF
from pipeline.core.errors import DataError, EvergreenError, LockTimeout
from pipeline.core.io import atomic_write, file_lock, write_json

log = logging.getLogger(__name__)

RETRAIN_LOCK = Path(".dvc/tmp/evergreen-retrain.lock")


class WorkspaceBusy(EvergreenError):
    """Another retrain holds the DVC workspace."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def workspace_root() -> Path:
    """The repo the flows operate on: $EVERGREEN_ROOT, else the current directory (a worker's pull step sets it)."""
    return Path(os.environ.get("EVERGREEN_ROOT", ".")).resolve()


@contextmanager
def retrain_lock(root: Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """Exclusive lock on the DVC workspace for a whole retrain; two retrains never overlap."""
    path = root / RETRAIN_LOCK
    with ExitStack() as stack:
        try:
            stack.enter_context(file_lock(path, wait_seconds, poll_interval=1.0))
        except LockTimeout:
            raise WorkspaceBusy(f"{path}: another retrain is running in this workspace") from None
        yield


def retrain_in_progress(root: Path) -> bool:
    """True while some process holds the retrain lock (checked without taking it for long)."""
    try:
        with retrain_lock(root):
            return False
    except WorkspaceBusy:
        return True


def dvc_env() -> dict[str, str]:
    """Stage commands call `python`: the interpreter running the flow must come first on PATH."""
    env = dict(os.environ, **TELEMETRY_OFF)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


SUPERVISOR = Path(__file__).with_name("supervise.py")
# DVC's messages when another process holds its repo lock or one of a stage's paths: a retry can succeed.
DVC_LOCK_MESSAGES = ("Unable to acquire lock", "is busy, it is being blocked by")
DVC_RWLOCK = Path(".dvc/tmp/rwlock")


def run_in_group(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float | None = None
) -> subprocess.CompletedProcess:
    """Run ``command`` in a process group of its own that never outlives this call or this process.

    ``flows/supervise.py`` (see its docstring) runs the command and SIGKILLs the command's group when
    the command exits (stragglers), when this call times out (``subprocess.TimeoutExpired``) or is
    interrupted (it is sent SIGTERM), and when this process dies, even by SIGKILL: no ``dvc repro``
    or training is left running to block the next retrain.
    """
    process = subprocess.Popen(
        [sys.executable, str(SUPERVISOR), str(os.getpid()), "--", *command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own session and group: killpg reaches everything it starts
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:  # timed out or interrupted: the supervisor ends the command's group
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()  # a supervisor that did not react; its command's group is then on its own
                process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def dvc(root: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``dvc <args>`` in ``root``, in a process group that ends with the flow (``run_in_group``)."""
    return run_in_group([sys.executable, "-m", "dvc", *args], root, dvc_env(), timeout)


def is_lock_contention(output: str) -> bool:
    """True when DVC failed only because another process holds its lock or one of the stage's paths."""
    return any(message in output for message in DVC_LOCK_MESSAGES)


def _owner_gone(pid: int) -> bool:
    """The process that took a DVC lock entry has ended: no such pid, a zombie, or the pid now runs something else."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # another user's live process: leave its entry alone
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return False  # no procfs (macOS): alive is all we can tell
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except FileNotFoundError:
        return True  # it ended a moment ago
    return state == "Z" or b"dvc" not in cmdline  # a zombie, or a reused pid that is not a DVC process


def clear_stale_dvc_locks(root: Path) -> list[str]:
    """Remove entries of DVC's ``.dvc/tmp/rwlock`` whose owner is gone, with a warning each; returns them.

    DVC drops entries of pids that no longer exist by itself, but not those of a pid reused by
    another process, which then blocks every stage with "is busy". The edit is made under DVC's own
    guard (``rwlock.lock``) and written atomically. ``.dvc/tmp/lock`` needs nothing: it is an flock,
    released by the kernel when its owner dies.
    """
    from dvc.lock import LockError, make_lock

    path = root / DVC_RWLOCK
    if not path.exists():
        return []
    guard = make_lock(str(path.with_name("rwlock.lock")), tmp_dir=str(path.parent))
    try:
        guard.lock()
    except LockError:
        return []  # a DVC process is editing it right now: it is alive, and it checks the owners itself
    try:
        try:
            lock = json.loads(path.read_text())
            writes, reads = lock.get("write", {}), lock.get("read", {})
            if not isinstance(writes, dict) or not isinstance(reads, dict):
                raise ValueError("'write' and 'read' must be objects")
            cleared = []
            for target, owner in list(writes.items()):
                if isinstance(owner, dict) and _owner_gone(int(owner.get("pid", 0))):
                    cleared.append(f"write {target} (pid {owner.get('pid')}: {owner.get('cmd')})")
                    del writes[target]
            for target, owners in list(reads.items()):
                kept = [o for o in owners if not (isinstance(o, dict) and _owner_gone(int(o.get("pid", 0))))]
                cleared += [f"read {target} (pid {o.get('pid')}: {o.get('cmd')})" for o in owners if o not in kept]
                if kept:
                    reads[target] = kept
                else:
                    del reads[target]
        except (ValueError, TypeError, AttributeError) as exc:  # bad JSON, no object, a pid that is no number
            raise DataError(f"{path}: DVC's lock file is damaged ({exc}); remove it when no dvc command runs") from None
        if cleared:
            atomic_write(path, json.dumps(lock))
            for entry in cleared:
                log.warning("%s: cleared a stale DVC lock whose owner is gone: %s", path, entry)
        return cleared
    finally:
        guard.unlock()


@dataclass
class MonitorState:
    """What the drift monitor remembers between checks (JSON, replaced atomically)."""

    checked_batches: list[str] = field(default_factory=list)  # sha256 of every batch already compared
    triggered_keys: list[str] = field(default_factory=list)  # idempotency keys that already triggered a retrain
    last_check_at: str | None = None
    last_retrain_at: str | None = None

    @classmethod
    def load(cls, path: Path) -> MonitorState:
        """The saved state; a damaged file is moved aside with a warning and the state starts fresh.

        Starting fresh re-checks batches already checked (at worst one extra drift report) and forgets
        triggered keys (the deployment's idempotency key still stops a duplicate retrain); refusing to
        start would stop every monitor run and every retrain's last step until someone edits the file.
        """
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise DataError(f"{path}: cannot read the monitor state ({exc.strerror})") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"a JSON object expected, found {type(data).__name__}")
            state = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
            state.check()
        except (ValueError, TypeError) as exc:
            aside = path.with_name(f"{path.name}.damaged-{utc_now().strftime('%Y%m%dT%H%M%S%fZ')}")
            try:
                os.replace(path, aside)
            except FileNotFoundError:  # another reader moved it aside first
                return cls()
            log.warning("%s is damaged (%s); moved it to %s and starting from an empty state", path, exc, aside.name)
            return cls()
        return state

    def check(self) -> None:
        """ValueError naming the first field of the wrong type (a hand edit or a foreign file)."""
        for name in ("checked_batches", "triggered_keys"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"{name!r} is not a list of strings")
        for name in ("last_check_at", "last_retrain_at"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise ValueError(f"{name!r} is not a time string")
                datetime.fromisoformat(value)  # ValueError names the bad value

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))


@contextmanager
def locked_state(path: Path) -> Iterator[MonitorState]:
    """Read-modify-write of the monitor state under a lock: the monitor and a finishing retrain
    both write it, and neither may lose the other's change."""
    with file_lock(path.with_name(f".{path.name}.lock")):
        state = MonitorState.load(path)
        yield state
        state.save(path)


def update_state(path: Path, **changes) -> MonitorState:
    with locked_state(path) as state:
        for key, value in changes.items():
            setattr(state, key, value)
    return state
