"""What both flows share: the workspace root, the retrain lock, the monitor's state file, DVC calls."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pipeline.core.errors import EvergreenError

RETRAIN_LOCK = Path(".dvc/tmp/evergreen-retrain.lock")
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ORT_DISABLE_TELEMETRY": "1"}


class WorkspaceBusy(EvergreenError):
    """Another retrain holds the DVC workspace."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def workspace_root() -> Path:
    """The repo the flows operate on: $EVERGREEN_ROOT, else the current directory (a worker's pull step sets it)."""
    return Path(os.environ.get("EVERGREEN_ROOT", ".")).resolve()


@contextmanager
def retrain_lock(root: Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """Exclusive lock on the DVC workspace for a whole retrain; two retrains never overlap."""
    path = root / RETRAIN_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WorkspaceBusy(f"{path}: another retrain is running in this workspace") from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=dvc_env(), capture_output=True, text=True)


@dataclass
class MonitorState:
    """What the drift monitor remembers between checks (JSON, replaced atomically)."""

    checked_batches: list[str] = field(default_factory=list)  # sha256 of every batch already compared
    triggered_keys: list[str] = field(default_factory=list)  # idempotency keys that already triggered a retrain
    last_check_at: str | None = None
    last_retrain_at: str | None = None

    @classmethod
    def load(cls, path: Path) -> MonitorState:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(descriptor, "w") as handle:
            json.dump(asdict(self), handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)


@contextmanager
def locked_state(path: Path) -> Iterator[MonitorState]:
    """Read-modify-write of the monitor state under a lock: the monitor and a finishing retrain
    both write it, and neither may lose the other's change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = MonitorState.load(path)
            yield state
            state.save(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_state(path: Path, **changes) -> MonitorState:
    with locked_state(path) as state:
        for key, value in changes.items():
            setattr(state, key, value)
    return state
