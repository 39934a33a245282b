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
from pipeline.core.io import file_lock, write_json

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
