"""What both flows share: the workspace root, the retrain lock, the monitor's state file, DVC calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core.errors import EvergreenError, LockTimeout
from pipeline.core.io import atomic_write, file_lock

RETRAIN_LOCK = Path(".dvc/tmp/evergreen-retrain.lock")
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ORT_DISABLE_TELEMETRY": "1"}


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
        atomic_write(path, json.dumps(asdict(self), indent=2, sort_keys=True))


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
