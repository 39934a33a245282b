"""A file-based model registry: immutable numbered versions, an atomic production pointer, a history.

Layout under the registry root (``paths.registry``)::

    versions/v0001/        model.onnx, model_card.json, metrics.json, params.yaml, dvc.lock,
                           reference.parquet (the model's exact training rows: the drift reference)
                           and meta.json (number, creation time, git revision, sha256 of every file)
    production.json        the pointer: which version serves, why, and the earlier production versions
    history.jsonl          append-only log of every decision (register, promote, reject, rollback)
    .last_version          the highest version number ever handed out (numbers are never reused)
    .lock                  file lock (pipeline.core.io.file_lock) held around every write

Crash safety: a crash at any instant leaves either the old or the new state, never a mix.

* A version is written into a hidden sibling folder (``versions/.tmp-v0007-<pid>``), every file is
  fsynced and made read-only, and only then is the folder renamed into place; a reader never sees a
  half-written version. A folder left by a crash is removed on the next write, after its number has
  been recorded in ``.last_version`` so the number is never handed out again.
* ``production.json`` is written with ``pipeline.core.io.write_json`` (``atomic_write``): a temporary
  file in the same folder, fsynced, swapped in with ``os.replace``; the folder is fsynced so the swap
  itself is durable. Readers see the old or the new pointer. The pointer also carries the stack of
  earlier production versions, so rollback depends on the pointer alone, not on the log.
* ``history.jsonl`` is appended with ``append_line`` (flush + fsync) *after* the pointer switch. A
  crash in between leaves the pointer ahead of the log; the next write notices (each switch carries
  an id) and appends the missing event marked ``"recovered": true``. A torn last line is skipped
  with a warning.

Reads take no lock (they only ever see complete files); writes serialise on ``<root>/.lock``.

Command: ``python -m pipeline.lifecycle.registry [--root DIR] list | show [VERSION] | history |
rollback [--to VERSION] [--reason TEXT]`` (root defaults to ``paths.registry``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.core.cli import run_or_exit, setup_logging
from pipeline.core.errors import EvergreenError, LockTimeout
from pipeline.core.gitinfo import git_revision as head_revision
from pipeline.core.io import (
    _json_default,
    append_line,
    atomic_leftovers,
    file_lock,
    file_sha256,
    fsync_dir,
    fsync_file,
    read_json,
    write_json,
)
from pipeline.params import load_params

log = logging.getLogger(__name__)

VERSIONS_DIR = "versions"
POINTER_FILE = "production.json"
HISTORY_FILE = "history.jsonl"
COUNTER_FILE = ".last_version"
LOCK_FILE = ".lock"
META_FILE = "meta.json"

ONNX_FILE = "model.onnx"
CARD_FILE = "model_card.json"
METRICS_FILE = "metrics.json"
PARAMS_FILE = "params.yaml"
DVC_LOCK_FILE = "dvc.lock"
REFERENCE_FILE = "reference.parquet"  # a table's; other data kinds keep their split file's suffix (reference.npz)
INT8_FILE = "model.int8.onnx"  # optional: the dynamically quantised model
TORCH_FILE = "model.pt"  # optional: the PyTorch checkpoint, to warm-start a later training from
ENCODER_FILE = "preprocessor.json"  # optional: the fitted encoder that goes with model.pt
REFERENCE_STEM = "reference."
VERSION_FILES = (ONNX_FILE, CARD_FILE, METRICS_FILE, PARAMS_FILE, DVC_LOCK_FILE, REFERENCE_FILE)

# Events that move the production pointer; only promote() and rollback() may write them.
SWITCH_EVENTS = ("promote", "rollback")
# Each crash mid-append can tear at most one line; more than this many means the log was damaged.
MAX_UNREADABLE_HISTORY_LINES = 5

_NAME = re.compile(r"^v(\d{4,})$")
_SPEC = re.compile(r"^[vV]?(\d+)$")
_TEMP_VERSION = re.compile(r"^\.tmp-v(\d+)-")
_READ_ONLY_FILE = 0o444
_READ_ONLY_DIR = 0o555
_POINTER_MODE = 0o644  # the pointer and counter: servers running as another user must read them


class RegistryError(EvergreenError):
    """The registry cannot do what was asked (unknown version, damaged file, nothing to roll back to)."""


# ---------------------------------------------------------------- names and times


def version_name(number: int) -> str:
    """7 -> "v0007" (more digits once past 9999)."""
    return f"v{number:04d}"


def parse_version(spec: int | str) -> int:
    """Accept 7, "7", "v7" or "v0007" and return 7."""
    if isinstance(spec, bool) or not isinstance(spec, int | str):
        raise RegistryError(f"{spec!r} is not a model version; use a number like 7, 'v7' or 'v0007'")
    if isinstance(spec, int):
        number = spec
    else:
        match = _SPEC.match(spec.strip())
        if match is None:
            raise RegistryError(f"{spec!r} is not a model version; use a number like 7, 'v7' or 'v0007'")
        number = int(match.group(1))
    if number < 1:
        raise RegistryError(f"model version {spec!r} is not valid; versions start at v0001")
    return number


def _number_of(name: str) -> int | None:
    """The number of a published version folder, or None for anything else (temp folders, stray files)."""
    match = _NAME.match(name)
    if match is None or version_name(int(match.group(1))) != name:
        return None
    return int(match.group(1))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _read_history(path: Path, max_unreadable: int | None) -> list[dict[str, Any]]:
    """Every complete event in order; torn lines (a crash mid-append) are skipped with a warning."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    events: list[dict[str, Any]] = []
    unreadable = 0
    for line_number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
            event = None
        if not isinstance(event, dict):
            unreadable += 1
            log.warning("%s line %d is not a complete event (torn by a crash mid-append?); skipped", path, line_number)
            continue
        events.append(event)
    if max_unreadable is not None and unreadable > max_unreadable:
        raise RegistryError(
            f"{path}: {unreadable} unreadable lines (a crash tears at most one each); "
            f"the log was damaged, inspect it before trusting the history"
        )
    return events


# ---------------------------------------------------------------- versions


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered model: its folder and the ``meta.json`` describing it."""

    number: int
    path: Path
    meta: dict[str, Any] = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return version_name(self.number)

    @property
    def onnx(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def card(self) -> Path:
        return self.path / CARD_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def params_file(self) -> Path:
        return self.path / PARAMS_FILE

    @property
    def dvc_lock(self) -> Path:
        return self.path / DVC_LOCK_FILE

    @property
    def reference(self) -> Path:
        hashes = self.meta.get("sha256", {})
        return self.path / next((name for name in hashes if name.startswith(REFERENCE_STEM)), REFERENCE_FILE)

    def _optional(self, name: str) -> Path | None:
        """An optional file of the version: its path when it was registered (and hashed), else None."""
        return self.path / name if name in self.meta.get("sha256", {}) else None

    @property
    def onnx_int8(self) -> Path | None:
        """The int8 model, when the version has one."""
        return self._optional(INT8_FILE)

    @property
    def torch_model(self) -> Path | None:
        """The PyTorch checkpoint, when the version has one (warm starts fine-tune it)."""
        return self._optional(TORCH_FILE)

    @property
    def encoder(self) -> Path | None:
        """The fitted encoder of the PyTorch checkpoint, when the version has one."""
        return self._optional(ENCODER_FILE)

    @property
    def serving_onnx(self) -> Path:
        """The file to serve: int8 when the gate chose it at registration (``extra.serve``), else fp32."""
        if self.meta.get("extra", {}).get("serve") == "int8" and self.onnx_int8 is not None:
            return self.onnx_int8
        return self.onnx

    @property
    def onnx_sha256(self) -> str:
        return self.meta["sha256"][ONNX_FILE]

    @property
    def data_sha256(self) -> str:
        return self.meta["data_sha256"]

    def metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_file)

    def card_data(self) -> dict[str, Any]:
        return read_json(self.card)

    def verify(self) -> None:
        """Re-hash every file against ``meta.json``; raise RegistryError naming the first bad one."""
        hashes = self.meta.get("sha256")
        required = [name for name in VERSION_FILES if name != REFERENCE_FILE] + [self.reference.name]
        missing = [name for name in required if not isinstance(hashes, dict) or name not in hashes]
        if missing:
            raise RegistryError(f"{self.path / META_FILE}: no sha256 recorded for {', '.join(missing)}; the version is damaged")
        for name, expected in sorted(hashes.items()):
            path = self.path / name
            if not path.is_file():
                raise RegistryError(f"{self.name}: {name} is missing from {self.path}; restore it or register the model again")
            actual = file_sha256(path)
            if actual != expected:
                raise RegistryError(
                    f"{self.name}: {name} changed after registration (sha256 {actual[:12]}..., "
                    f"meta.json says {expected[:12]}...); restore it or register the model again"
                )
        if self.meta.get("data_sha256") != hashes[self.reference.name]:
            raise RegistryError(f"{self.path / META_FILE}: data_sha256 disagrees with the sha256 of {self.reference.name}")


def _load_version(path: Path, number: int) -> ModelVersion:
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise RegistryError(f"{meta_path}: missing; the version folder is damaged (restore it from a backup)") from None
    except ValueError as exc:
        raise RegistryError(f"{meta_path}: not valid JSON ({exc}); the version folder is damaged") from None
    if not isinstance(meta, dict) or meta.get("number") != number:
        found = meta.get("number") if isinstance(meta, dict) else meta
        raise RegistryError(f"{meta_path}: describes version {found!r}, not {version_name(number)}; the folder was moved or edited")
    return ModelVersion(number=number, path=path, meta=meta)


# ---------------------------------------------------------------- the registry


class Registry:
    """Numbered model versions under ``root`` with a production pointer, a history and rollback.

    Construction touches nothing on disk; reads of an empty or absent root see no versions, and the
    first write creates the folders.
    """

    def __init__(self, root: str | Path, *, lock_timeout: float = 600.0) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS_DIR

    @property
    def pointer_file(self) -> Path:
        return self.root / POINTER_FILE

    @property
    def history_file(self) -> Path:
        return self.root / HISTORY_FILE

    # ------------------------------------------------------------ reading (no lock)

    def _numbers(self) -> list[int]:
        if not self.versions_dir.is_dir():
            return []
        numbers = (_number_of(entry.name) for entry in os.scandir(self.versions_dir) if entry.is_dir())
        return sorted(number for number in numbers if number is not None)

    def versions(self) -> list[ModelVersion]:
        """Every published version, oldest first (half-written temp folders are invisible)."""
        return [_load_version(self.versions_dir / version_name(n), n) for n in self._numbers()]

    def get(self, version: int | str) -> ModelVersion:
        """A version by 7, "7", "v7" or "v0007"."""
        number = parse_version(version)
        path = self.versions_dir / version_name(number)
        if not path.is_dir():
            numbers = self._numbers()
            known = f"it holds {version_name(numbers[0])} to {version_name(numbers[-1])}" if numbers else "it is empty"
            raise RegistryError(f"model version {version_name(number)} is not in the registry at {self.root} ({known})")
        return _load_version(path, number)

    def _read_pointer(self) -> dict[str, Any] | None:
        try:
            pointer = json.loads(self.pointer_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise RegistryError(
                f"{self.pointer_file}: not valid JSON ({exc}); fix it with: python -m pipeline.lifecycle.registry rollback --to VERSION"
            ) from None
        if not isinstance(pointer, dict) or "version" not in pointer:
            raise RegistryError(
                f"{self.pointer_file}: has no 'version'; fix it with: python -m pipeline.lifecycle.registry rollback --to VERSION"
            )
        return pointer

    def production(self) -> ModelVersion | None:
        """The serving version, or None before the first promotion."""
        pointer = self._read_pointer()
        if pointer is None:
            return None
        try:
            return self.get(pointer["version"])
        except RegistryError as exc:
            raise RegistryError(f"{self.pointer_file} points at a version that cannot be read: {exc}") from None

    def find_by_onnx_sha256(self, sha256: str) -> ModelVersion | None:
        """The newest version whose ONNX file has this hash (so an unchanged model is not registered twice)."""
        for version in reversed(self.versions()):
            if version.meta.get("sha256", {}).get(ONNX_FILE) == sha256:
                return version
        return None

    def history(self) -> list[dict[str, Any]]:
        """Every recorded event, oldest first."""
        return _read_history(self.history_file, MAX_UNREADABLE_HISTORY_LINES)

    # ------------------------------------------------------------ writing (under the lock)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive access for one write; on entry, clean up whatever a crashed writer left behind."""
        with ExitStack() as stack:
            try:
                stack.enter_context(file_lock(self.root / LOCK_FILE, self.lock_timeout, poll_interval=0.02))
            except LockTimeout:
                raise RegistryError(
                    f"{self.root / LOCK_FILE}: another process has held the registry lock for "
                    f"{self.lock_timeout:g}s; check for a stuck register/promote"
                ) from None
            self._recover()
            yield

    def _recover(self) -> None:
        """Undo the traces of a crashed writer. Safe because we hold the lock: whoever made them is gone."""
        if self.versions_dir.is_dir():
            stale = sorted(p for p in self.versions_dir.iterdir() if _TEMP_VERSION.match(p.name))
            if stale:
                # Record the numbers first, so deleting the folders can never free a number for reuse.
                highest = max(int(_TEMP_VERSION.match(p.name).group(1)) for p in stale)
                if highest > self._last_number():
                    write_json(self.root / COUNTER_FILE, {"last_version": highest}, mode=_POINTER_MODE)
            for path in stale:
                log.warning("removing %s: a version half-written by a crashed process (its number stays retired)", path)
                try:
                    os.chmod(path, 0o755)
                    shutil.rmtree(path)
                except OSError as exc:  # harmless to leave: readers ignore it and its number is retired
                    log.warning("could not remove %s (%s); it is ignored", path, exc)
        for temp in atomic_leftovers(self.pointer_file) + atomic_leftovers(self.root / COUNTER_FILE):
            log.warning("removing %s: a pointer update interrupted by a crash (the switch never happened)", temp)
            temp.unlink(missing_ok=True)
        self._reconcile_history()

    def _reconcile_history(self) -> None:
        """Append the last pointer switch if a crash struck between the switch and its log line."""
        try:
            pointer = self._read_pointer()
        except RegistryError as exc:
            log.warning("%s", exc)
            return
        if pointer is None or not isinstance(pointer.get("event"), dict):
            return
        switch = pointer["event"]
        logged = [e for e in _read_history(self.history_file, None) if e.get("event") in SWITCH_EVENTS]
        if logged and logged[-1].get("id") == switch.get("id"):
            return
        log.warning(
            "history.jsonl lacks the last %s to %s (crash before it was logged); appending it",
            switch.get("event"),
            switch.get("version"),
        )
        self._append_history({**switch, "recovered": True})

    def _last_number(self) -> int:
        path = self.root / COUNTER_FILE
        try:
            return int(json.loads(path.read_text())["last_version"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            # Written atomically, so only a hand edit gets here; the folder scan still prevents reuse of published numbers.
            log.warning("%s is unreadable (%s); using the highest published version instead", path, exc)
            return 0

    def _append_history(self, event: dict[str, Any]) -> None:
        try:
            line = json.dumps(event, sort_keys=True, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"history event {event.get('event')!r} is not JSON serialisable: {exc}") from None
        append_line(self.history_file, line)

    def register(
        self,
        *,
        onnx: Path,
        model_card: Path,
        metrics: Path,
        params: Path,
        dvc_lock: Path,
        reference: Path,
        onnx_int8: Path | None = None,
        torch_model: Path | None = None,
        encoder: Path | None = None,
        git_revision: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Copy a model and everything that explains it into the next numbered, read-only version.

        ``git_revision`` defaults to HEAD of the working directory's repository.
        """
        sources = {
            ONNX_FILE: onnx,
            CARD_FILE: model_card,
            METRICS_FILE: metrics,
            PARAMS_FILE: params,
            DVC_LOCK_FILE: dvc_lock,
        }
        arguments = dict(zip(VERSION_FILES[:-1], ("onnx", "model_card", "metrics", "params", "dvc_lock"), strict=True))
        reference_file = Path(REFERENCE_FILE).with_suffix(Path(reference).suffix or ".parquet").name
        sources[reference_file], arguments[reference_file] = reference, "reference"
        if onnx_int8 is not None:
            sources[INT8_FILE], arguments[INT8_FILE] = onnx_int8, "onnx_int8"
        if torch_model is not None:
            sources[TORCH_FILE], arguments[TORCH_FILE] = torch_model, "torch_model"
        if encoder is not None:
            sources[ENCODER_FILE], arguments[ENCODER_FILE] = encoder, "encoder"
        for name, source in sources.items():
            if not Path(source).is_file():
                raise RegistryError(f"register: {arguments[name]} file {source} not found (run the pipeline first: dvc repro)")
        for name in (CARD_FILE, METRICS_FILE):
            try:
                json.loads(Path(sources[name]).read_text())
            except ValueError as exc:
                raise RegistryError(f"register: {arguments[name]} file {sources[name]} is not valid JSON ({exc})") from None
        extra = dict(extra or {})
        try:
            json.dumps(extra, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"register: extra is not JSON serialisable: {exc}") from None
        revision = git_revision if git_revision is not None else head_revision()

        with self._locked():
            self.versions_dir.mkdir(exist_ok=True)
            number = max([self._last_number(), *self._numbers()], default=0) + 1
            # Retire the number before writing anything: a crash from here on can never lead to its reuse.
            write_json(self.root / COUNTER_FILE, {"last_version": number}, mode=_POINTER_MODE)
            name = version_name(number)
            temp = self.versions_dir / f".tmp-{name}-{os.getpid()}"
            try:
                temp.mkdir()
                hashes = {}
                for file_name, source in sources.items():
                    target = temp / file_name
                    shutil.copyfile(source, target)
                    fsync_file(target)
                    os.chmod(target, _READ_ONLY_FILE)
                    hashes[file_name] = file_sha256(target)  # hash what is stored, which is what verify() reads
                meta = {
                    "version": name,
                    "number": number,
                    "created": utc_now(),
                    "git_revision": revision,
                    "sha256": hashes,
                    "data_sha256": hashes[reference_file],
                    "sources": {file_name: str(source) for file_name, source in sources.items()},
                    "extra": extra,
                }
                # Durable and read-only; write_json also fsyncs ``temp``, which makes every entry above durable.
                write_json(temp / META_FILE, meta, mode=_READ_ONLY_FILE)
                final = self.versions_dir / name
                os.rename(temp, final)  # the instant the version appears, complete
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            fsync_dir(self.versions_dir)
            os.chmod(final, _READ_ONLY_DIR)
            self._append_history(
                {
                    "event": "register",
                    "version": name,
                    "time": meta["created"],
                    "onnx_sha256": hashes[ONNX_FILE],
                    "git_revision": revision,
                }
            )
        log.info("registered %s (onnx sha256 %s...) at %s", name, hashes[ONNX_FILE][:12], final)
        return ModelVersion(number=number, path=final, meta=meta)

    def _switch(
        self,
        target: ModelVersion,
        *,
        kind: str,
        previous: str | None,
        earlier: list[str],
        reason: str,
        decision: dict[str, Any] | None,
    ) -> None:
        """Point production at ``target`` atomically, then log the switch."""
        now = utc_now()
        # The id lets the next writer tell whether this switch reached history.jsonl (see _reconcile_history).
        event: dict[str, Any] = {
            "event": kind,
            "id": uuid.uuid4().hex,
            "version": target.name,
            "previous": previous,
            "reason": reason,
            "time": now,
        }
        if decision is not None:
            event["decision"] = decision
        try:
            json.dumps(event, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"{kind}: decision is not JSON serialisable: {exc}") from None
        write_json(
            self.pointer_file,
            {"version": target.name, "promoted_at": now, "reason": reason, "earlier": earlier, "event": event},
            mode=_POINTER_MODE,
        )
        self._append_history(event)

    def _pointer_state(self) -> tuple[str | None, list[str]]:
        pointer = self._read_pointer()
        if pointer is None:
            return None, []
        earlier = [version_name(parse_version(v)) for v in pointer.get("earlier", [])]
        return version_name(parse_version(pointer["version"])), earlier

    def promote(self, version: int | str, *, reason: str, decision: dict[str, Any] | None = None) -> ModelVersion:
        """Make ``version`` production (after re-verifying its files); promoting the current one is a no-op."""
        with self._locked():
            target = self.get(version)
            target.verify()
            current, earlier = self._pointer_state()
            if current == target.name:
                log.info("%s is already production; nothing to switch", target.name)
                return target
            self._switch(
                target,
                kind="promote",
                previous=current,
                earlier=earlier + ([current] if current else []),
                reason=reason,
                decision=decision,
            )
        log.info("production is now %s (was %s): %s", target.name, current or "none", reason)
        return target

    def record(self, event: dict[str, Any]) -> None:
        """Log a decision that does not move production (e.g. a rejected challenger), stamped with UTC time."""
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise RegistryError(f"record: an event must be a dict with a string 'event' key, got {event!r:.80}")
        if event["event"] in SWITCH_EVENTS:
            raise RegistryError(f"record: {event['event']!r} events move production; call Registry.{event['event']}() instead")
        with self._locked():
            self._append_history({**event, "time": event.get("time", utc_now())})

    def rollback(self, to: int | str | None = None, *, reason: str = "manual rollback") -> ModelVersion:
        """Switch production back: to the version before the current one, or to a named version.

        Production history is a stack kept in the pointer. Promotion pushes the outgoing version;
        ``rollback()`` pops it, so v1 -> v2 -> v3 then rollback gives v2, and again v1, and again an
        error. ``rollback(to=X)`` with X on the stack pops down to X (the versions above it are
        abandoned); with X not on the stack (never production, or already rolled back past), the
        current version is pushed as by a promotion, so a later ``rollback()`` returns to it.
        """
        with self._locked():
            try:
                current, earlier = self._pointer_state()
            except RegistryError as exc:
                if to is None:
                    raise
                # A damaged pointer is exactly when an operator needs `rollback --to` to work.
                log.warning("%s; replacing it with a pointer to %s", exc, to)
                current, earlier = None, []
            else:
                if current is None:
                    raise RegistryError("rollback: nothing is in production yet; promote a version first")
            if to is None:
                if not earlier:
                    raise RegistryError(
                        f"rollback: {current} is the first production version; there is no earlier one to roll back to"
                    )
                target = self.get(earlier[-1])
                remaining = earlier[:-1]
            else:
                target = self.get(to)
                if target.name == current:
                    raise RegistryError(f"rollback: {target.name} is already production")
                if target.name in earlier:
                    remaining = earlier[: len(earlier) - 1 - earlier[::-1].index(target.name)]
                else:
                    remaining = earlier + ([current] if current else [])
            target.verify()
            self._switch(target, kind="rollback", previous=current, earlier=remaining, reason=reason, decision=None)
        log.warning("rolled back production to %s (was %s): %s", target.name, current or "unreadable", reason)
        return target


# ---------------------------------------------------------------- command line


def _short(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def format_versions(versions: list[ModelVersion], production: ModelVersion | None) -> str:
    """A table of versions with the production one marked ``*``."""
    if not versions:
        return "no model versions registered\n"
    rows = [("", "VERSION", "CREATED", "GIT", "ONNX SHA256", "EXTRA")]
    for v in versions:
        scalars = sorted((k, val) for k, val in v.meta.get("extra", {}).items() if not isinstance(val, dict | list))
        rows.append(
            (
                "*" if production and v.number == production.number else "",
                v.name,
                v.meta.get("created", ""),
                (v.meta.get("git_revision") or "-")[:10],
                v.meta.get("sha256", {}).get(ONNX_FILE, "")[:12],
                " ".join(f"{k}={_short(val)}" for k, val in scalars),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.append("* production" if production else "(nothing in production)")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def format_version(version: ModelVersion, is_production: bool) -> str:
    header = f"{version.name}{' (production)' if is_production else ''}  {version.path}"
    return header + "\n" + json.dumps({"meta": version.meta, "metrics": version.metrics()}, indent=2, sort_keys=True) + "\n"


def format_history(events: list[dict[str, Any]]) -> str:
    """One line per event: time, kind, version, then the remaining fields as key=value."""
    if not events:
        return "no history yet\n"
    lines = []
    for event in events:
        rest = " ".join(f"{k}={_short(v)}" for k, v in sorted(event.items()) if k not in ("time", "event", "version", "id"))
        kind, version = str(event.get("event", "?")), str(event.get("version", "-"))
        lines.append(f"{event.get('time', '?')}  {kind:<10} {version:<6} {rest}".rstrip())
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.lifecycle.registry", description="Inspect the model registry or roll production back."
    )
    parser.add_argument("--root", help="registry folder (default: paths.registry in params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="all versions; * marks production")
    show = commands.add_parser("show", help="one version's meta and metrics (default: production)")
    show.add_argument("version", nargs="?")
    commands.add_parser("history", help="every promotion, rejection and rollback")
    rollback = commands.add_parser("rollback", help="switch production back")
    rollback.add_argument("--to", help="version to roll back to (default: the previous production version)")
    rollback.add_argument("--reason", default="manual rollback (CLI)")
    return parser


def _run_cli(args: argparse.Namespace) -> str:
    root = Path(args.root) if args.root else Path(load_params().paths.registry)
    if not root.is_dir():
        raise RegistryError(f"no registry at {root} (register a model first, or pass --root)")
    registry = Registry(root)
    if args.command == "list":
        return format_versions(registry.versions(), registry.production())
    if args.command == "show":
        production = registry.production()
        if args.version is None and production is None:
            raise RegistryError("nothing is in production yet; name a version: python -m pipeline.lifecycle.registry show v0001")
        version = registry.get(args.version) if args.version is not None else production
        return format_version(version, production is not None and production.number == version.number)
    if args.command == "history":
        return format_history(registry.history())
    try:
        previous = registry.production()
    except RegistryError:  # a damaged pointer is what `rollback --to` repairs
        previous = None
    target = registry.rollback(args.to, reason=args.reason)
    return f"production: {target.name} (was {previous.name if previous else 'unreadable'})\n"


def main(argv: list[str] | None = None) -> None:
    """CLI entry: results on stdout; a user error is one line on stderr and exit code 1."""
    setup_logging()
    args = _parser().parse_args(argv)
    sys.stdout.write(run_or_exit(lambda: _run_cli(args)))


if __name__ == "__main__":
    main()
