"""What both flows share: the workspace root, the retrain lock, the monitor's state file, DVC calls, the DVC remote.

    python -m flows.common prepare-workspace   # the retrain-remote deployment's pull step, in its fresh clone

That command imports no Prefect (it starts in about a second, where ``flows.retrain`` takes several).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from flows import TELEMETRY_OFF
from pipeline.core.errors import DataError, EvergreenError, LockTimeout
from pipeline.core.gitinfo import git_revision
from pipeline.core.io import atomic_write, file_lock, write_json
from pipeline.lifecycle.registry import AnyRegistry, ModelVersion, open_registry
from pipeline.params import Paths, load_params
from pipeline.params.paths import REGISTRY_ENV, registry_location

log = logging.getLogger(__name__)

RETRAIN_LOCK = Path(".dvc/tmp/evergreen-retrain.lock")


class WorkspaceBusy(EvergreenError):
    """Another retrain holds the DVC workspace."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def workspace_root() -> Path:
    """The repo the flows operate on: $EVERGREEN_ROOT, else (unset or empty) the current directory, which a
    worker's pull step sets: the checkout (``retrain``) or a fresh clone (``retrain-remote``)."""
    return Path(os.environ.get("EVERGREEN_ROOT") or ".").resolve()


def registry_at(root: Path, paths: Paths) -> AnyRegistry:
    """The registry the flows read and write: $EVERGREEN_REGISTRY (a shared folder or an ``s3://`` store) when
    set, else ``paths.registry`` in ``root``."""
    return open_registry(registry_location(paths), base=root)  # an absolute location replaces root


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


# ---------------------------------------------------------------- the DVC remote: pull before the stages, push after

DVC_REMOTE_ENV = "EVERGREEN_DVC_REMOTE"  # a folder or URL; made the workspace's default remote (.dvc/config.local)
DVC_REMOTE_NAME = "evergreen"  # the name Evergreen gives that remote (make setup uses the same)
DVC_CONFIG_TIMEOUT_S = 120.0
DVC_TRANSFER_TIMEOUT_S = 3600.0  # a pull or push still running after an hour is stuck on its network: fail, free the worker
_MISSING = "Missing cache files:"  # DVC's warning, followed by one "md5: <hash>" line per object
_UNSAVED = "Can't remove the following unsaved files"  # pull would overwrite outputs that differ from dvc.lock
_NO_REMOTE = "no default remote set"
_OBJECT_LINE = re.compile(r"^\s*\w+: [0-9a-f]{32,}(\.dir)?\s*$")
_FILES = {"pull": re.compile(r"(\d+) files? fetched"), "push": re.compile(r"(\d+) files? pushed")}


class DvcRemoteError(EvergreenError):
    """A ``dvc pull`` or ``dvc push`` against the remote failed; the message carries DVC's own last lines."""


class WorkspaceNotShareable(EvergreenError):
    """A fresh per-run workspace lacks what would keep its results: a shared registry or a DVC remote."""


@dataclass(frozen=True)
class Transfer:
    """What one ``dvc pull`` or ``dvc push`` did, read from its output.

    status: ``done``; ``first-use`` (pull: the remote lacks some objects dvc.lock names, as on a new
    remote or before the first push: the stages compute them); ``kept-local`` (pull: outputs in the
    workspace differ from dvc.lock and DVC would not overwrite them: the stages decide); ``no-remote``.
    """

    command: str
    status: str
    files: int = 0  # files fetched (pull) or pushed (push)
    missing: int = 0  # objects in neither the local cache nor the remote
    seconds: float = 0.0
    remote: str | None = None
    detail: str = ""


def _tail(output: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in output.strip().splitlines()[-lines:] if line.strip())


def missing_objects(output: str) -> int:
    """How many objects DVC listed under "Missing cache files:" (0 when it listed none)."""
    if _MISSING not in output:
        return 0
    listed = output.split(_MISSING, 1)[1].splitlines()
    return sum(1 for line in listed if _OBJECT_LINE.match(line))


def transfer_result(command: str, returncode: int, output: str) -> Transfer:
    """The policy for what a pull or push means; DvcRemoteError naming DVC's last lines when it failed.

    pull (run with ``--allow-missing``): objects the remote lacks are expected (first use, nothing pushed yet)
    and outputs that differ from dvc.lock are left alone (the stages re-run what they must); anything else
    that fails (network, credentials, a busy DVC lock) is an error. push: success only when DVC exits 0 and
    no object of dvc.lock is missing from both the cache and the remote, since the registered version would
    then not be reproducible elsewhere.
    """
    if command not in _FILES:
        raise ValueError(f"unknown DVC transfer {command!r}; choose one of {sorted(_FILES)}")
    found = _FILES[command].search(output)
    files = int(found.group(1)) if found else 0
    missing = missing_objects(output)
    if _NO_REMOTE in output:
        return Transfer(command, "no-remote", detail=_tail(output))
    if returncode != 0:
        if command == "pull" and _UNSAVED in output:
            unsaved = output.split(_UNSAVED, 1)[1].splitlines()[1:]
            kept = [line.strip() for line in unsaved if line.strip().startswith("/")]
            return Transfer(command, "kept-local", files, missing, detail=f"outputs differ from dvc.lock: {', '.join(kept)}")
        raise DvcRemoteError(f"dvc {command} failed (exit {returncode}): {_tail(output)}")
    if missing and command == "push":
        raise DvcRemoteError(
            f"dvc push: {missing} object(s) of dvc.lock are in neither the local cache nor the remote, so this "
            f"workspace's results cannot be reproduced elsewhere: {_tail(output)}"
        )
    return Transfer(command, "first-use" if missing else "done", files, missing)


def _remote_config(root: Path) -> tuple[str | None, str | None]:
    """DVC's default remote for ``root`` and its URL, from DVC's whole config chain (repo, local, global, system)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = repo.config["core"].get("remote")
        url = repo.config["remote"].get(name, {}).get("url") if name else None
    return name, url


def dvc_remote(root: Path, url: str | None) -> str | None:
    """The remote pulls and pushes use: ``url`` ($EVERGREEN_DVC_REMOTE: an absolute folder or a URL), made the
    default in ``.dvc/config.local`` (git-ignored, as a machine's paths must be); else the default remote DVC's
    config names (one committed to .dvc/config, e.g. S3); else None."""
    name, current = _remote_config(root)
    if not url:
        return name
    if (name, current) != (DVC_REMOTE_NAME, url):
        result = dvc(
            root, "remote", "add", "--local", "--default", "--force", DVC_REMOTE_NAME, url, timeout=DVC_CONFIG_TIMEOUT_S
        )
        if result.returncode != 0:
            raise DvcRemoteError(f"${DVC_REMOTE_ENV}={url}: dvc remote add failed: {_tail(result.stdout + result.stderr)}")
    return DVC_REMOTE_NAME


def transfer(root: Path, command: str, remote: str, timeout: float = DVC_TRANSFER_TIMEOUT_S) -> Transfer:
    """``dvc pull --allow-missing`` or ``dvc push`` against ``remote``, supervised (``run_in_group``) and timed."""
    args = [command, "--remote", remote] + (["--allow-missing"] if command == "pull" else [])
    started = time.perf_counter()
    try:
        result = dvc(root, *args, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DvcRemoteError(f"dvc {command} from {root} did not finish within {timeout:.0f}s") from None
    outcome = transfer_result(command, result.returncode, result.stdout + result.stderr)
    return replace(outcome, seconds=round(time.perf_counter() - started, 2), remote=remote)


def lock_to_restore(versions: Sequence[ModelVersion], revision: str | None) -> ModelVersion | None:
    """The newest registered version built from git commit ``revision``: its dvc.lock describes the state of
    the last run of this code, so a fresh clone that takes it (and pulls) skips the stages nothing changed for.
    Safe whatever changed since: DVC re-hashes every dependency and re-runs a stage whose inputs differ."""
    if revision is None:
        return None
    built_here = [v for v in versions if v.meta.get("git_revision") == revision]
    return max(built_here, key=lambda v: v.number, default=None)


def prepare_fresh_workspace(root: Path, env: Mapping[str, str]) -> dict[str, object]:
    """The ``retrain-remote`` deployment's pull step, run in its fresh clone before the flow.

    Refuses (WorkspaceNotShareable) without $EVERGREEN_REGISTRY (the clone is deleted after the run, and a
    registry inside it with it) or a DVC remote (the run's data would go the same way); then puts in place
    the dvc.lock of the newest version registered from this commit and pulls what it names.
    """
    if not env.get(REGISTRY_ENV):
        raise WorkspaceNotShareable(
            f"{root} is a fresh per-run clone, deleted after the run: set ${REGISTRY_ENV} to a registry folder or "
            "s3:// store shared with the service (python -m serving --registry)"
        )
    remote = dvc_remote(root, env.get(DVC_REMOTE_ENV))
    if remote is None:
        raise WorkspaceNotShareable(
            f"{root} is a fresh per-run clone: set ${DVC_REMOTE_ENV} (a shared folder or URL) or commit a default "
            "remote (dvc remote add -d <name> <url>) so its data and models outlive it"
        )
    registry = registry_at(root, load_params(root / "params.yaml").paths)
    version = lock_to_restore(registry.versions(), git_revision(root))
    if version is not None:
        shutil.copyfile(registry.get(version.number).dvc_lock, root / "dvc.lock")  # get(): its files, fetched
        log.info("dvc.lock of %s (registered from this commit) put in place", version.name)
    pulled = transfer(root, "pull", remote)
    log.info(
        "dvc pull from %s: %s, %d files, %d missing, %.1fs",
        remote,
        pulled.status,
        pulled.files,
        pulled.missing,
        pulled.seconds,
    )
    return {"remote": remote, "dvc_lock_from": None if version is None else version.name, **asdict(pulled)}


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.common")
    parser.add_argument(
        "command",
        choices=["prepare-workspace"],
        help="prepare-workspace: make this fresh clone ready for the retrain (shared registry and DVC remote "
        "required, the dvc.lock of the newest version registered from this commit, dvc pull)",
    )
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        prepare_fresh_workspace(workspace_root(), os.environ)
    except EvergreenError as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
