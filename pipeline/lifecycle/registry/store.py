"""The Registry: reads that take no lock, and crash-safe writes under ``<root>/.lock``.

The guarantees (a crash at any instant leaves the old or the new state) are described in the
package docstring, ``pipeline.lifecycle.registry``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import EllipsisType
from typing import Any

from pipeline.core.errors import LockTimeout
from pipeline.core.gitinfo import git_revision as head_revision
from pipeline.core.io import (
    _json_default,
    atomic_leftovers,
    file_lock,
    file_sha256,
    fsync_dir,
    fsync_file,
    write_json,
)
from pipeline.lifecycle.registry.history import MAX_UNREADABLE_HISTORY_LINES, SWITCH_EVENTS, append_event, read_history
from pipeline.lifecycle.registry.layout import (
    COUNTER_FILE,
    HISTORY_FILE,
    LOCK_FILE,
    META_FILE,
    ONNX_FILE,
    POINTER_FILE,
    POINTER_MODE,
    READ_ONLY_DIR,
    READ_ONLY_FILE,
    VERSIONS_DIR,
    RegistryError,
    check_expected,
    number_of,
    parse_version,
    rollback_plan,
    temp_name,
    temp_number,
    utc_now,
    version_name,
)
from pipeline.lifecycle.registry.versions import ModelVersion, load_version, version_meta, version_sources

log = logging.getLogger(__name__)


class Registry:
    """Numbered model versions under ``root`` with a production pointer, a history and rollback.

    Construction writes only to repair: when a published version has no ``register`` line in the
    history (a crash between its rename and the append), the line is appended (``reconcile``).
    Reads of an empty or absent root see no versions, and the first write creates the folders.
    """

    def __init__(self, root: str | Path, *, lock_timeout: float = 600.0, reconcile: bool = True) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        if reconcile:
            self.reconcile()

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
        numbers = (number_of(entry.name) for entry in os.scandir(self.versions_dir) if entry.is_dir())
        return sorted(number for number in numbers if number is not None)

    def versions(self) -> list[ModelVersion]:
        """Every published version, oldest first (half-written temp folders are invisible)."""
        return [load_version(self.versions_dir / version_name(n), n) for n in self._numbers()]

    def get(self, version: int | str) -> ModelVersion:
        """A version by 7, "7", "v7" or "v0007"."""
        number = parse_version(version)
        path = self.versions_dir / version_name(number)
        if not path.is_dir():
            numbers = self._numbers()
            known = f"it holds {version_name(numbers[0])} to {version_name(numbers[-1])}" if numbers else "it is empty"
            raise RegistryError(f"model version {version_name(number)} is not in the registry at {self.root} ({known})")
        return load_version(path, number)

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

    def pointer_token(self) -> bytes | None:
        """The pointer's bytes: cheap to read every few seconds, changes on every switch (None before the first).
        Bytes, not text: a pointer overwritten with garbage must not fail here but in ``production()``, with its reason."""
        try:
            return self.pointer_file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # unreadable (permissions, a folder in its place): production() says why
            return f"unreadable: {exc}".encode()

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
        return read_history(self.history_file, MAX_UNREADABLE_HISTORY_LINES)

    def _unlogged_versions(self) -> list[int]:
        """Published versions without a ``register`` event in the history."""
        numbers = self._numbers()
        if not numbers:
            return []
        logged = {e.get("version") for e in read_history(self.history_file, None) if e.get("event") == "register"}
        return [n for n in numbers if version_name(n) not in logged]

    def reconcile(self) -> None:
        """Give every published version its ``register`` line (marked ``"reconciled": true``), under the lock.

        Checked without the lock first, so a healthy registry costs one read of the history. A busy
        lock is left alone: its holder runs the same repair (``_recover``) on entry. A registry this
        process may not write (a server running as another user) is only warned about.
        """
        try:
            if not self._unlogged_versions():
                return
            with file_lock(self.root / LOCK_FILE, 0, poll_interval=0.02):
                self._recover()
        except LockTimeout:
            return
        except (OSError, RegistryError) as exc:  # opening a registry never fails on a damaged history:
            log.warning("%s: history not reconciled with the versions (%s)", self.root, exc)  # reads say why

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
            stale = sorted((p, n) for p in self.versions_dir.iterdir() if (n := temp_number(p.name)) is not None)
            if stale:
                # Record the numbers first, so deleting the folders can never free a number for reuse.
                highest = max(number for _, number in stale)
                if highest > self._last_number():
                    write_json(self.root / COUNTER_FILE, {"last_version": highest}, mode=POINTER_MODE)
            for path, _ in stale:
                log.warning("removing %s: a version half-written by a crashed process (its number stays retired)", path)
                try:
                    os.chmod(path, 0o755)
                    shutil.rmtree(path)
                except OSError as exc:  # harmless to leave: readers ignore it and its number is retired
                    log.warning("could not remove %s (%s); it is ignored", path, exc)
        for temp in atomic_leftovers(self.pointer_file) + atomic_leftovers(self.root / COUNTER_FILE):
            log.warning("removing %s: a pointer update interrupted by a crash (the switch never happened)", temp)
            temp.unlink(missing_ok=True)
        self._reconcile_versions()
        self._reconcile_history()

    def _reconcile_versions(self) -> None:
        """Append the ``register`` event of every version a crash published without one (before any switch line)."""
        for number in self._unlogged_versions():
            name = version_name(number)
            try:
                version = load_version(self.versions_dir / name, number)
            except RegistryError as exc:
                log.warning("%s; its history line cannot be rebuilt", exc)
                continue
            log.warning("history.jsonl lacks the registration of %s (crash before it was logged); appending it", name)
            meta = version.meta
            self._append_history(
                {
                    "event": "register",
                    "version": name,
                    "time": meta.get("created", utc_now()),
                    "onnx_sha256": meta.get("sha256", {}).get(ONNX_FILE),
                    "git_revision": meta.get("git_revision"),
                    "reconciled": True,
                }
            )

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
        logged = [e for e in read_history(self.history_file, None) if e.get("event") in SWITCH_EVENTS]
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
        append_event(self.history_file, event)

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
        sources, reference_file, extra = version_sources(
            onnx=onnx,
            model_card=model_card,
            metrics=metrics,
            params=params,
            dvc_lock=dvc_lock,
            reference=reference,
            onnx_int8=onnx_int8,
            torch_model=torch_model,
            encoder=encoder,
            extra=extra,
        )
        revision = git_revision if git_revision is not None else head_revision()

        with self._locked():
            self.versions_dir.mkdir(exist_ok=True)
            number = max([self._last_number(), *self._numbers()], default=0) + 1
            # Retire the number before writing anything: a crash from here on can never lead to its reuse.
            write_json(self.root / COUNTER_FILE, {"last_version": number}, mode=POINTER_MODE)
            name = version_name(number)
            temp = self.versions_dir / temp_name(number, os.getpid())
            try:
                temp.mkdir()
                hashes = {}
                for file_name, source in sources.items():
                    target = temp / file_name
                    shutil.copyfile(source, target)
                    fsync_file(target)
                    os.chmod(target, READ_ONLY_FILE)
                    hashes[file_name] = file_sha256(target)  # hash what is stored, which is what verify() reads
                meta = version_meta(number, utc_now(), revision, hashes, reference_file, sources, extra)
                # Durable and read-only; write_json also fsyncs ``temp``, which makes every entry above durable.
                write_json(temp / META_FILE, meta, mode=READ_ONLY_FILE)
                final = self.versions_dir / name
                os.rename(temp, final)  # the instant the version appears, complete
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            fsync_dir(self.versions_dir)
            os.chmod(final, READ_ONLY_DIR)
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
            mode=POINTER_MODE,
        )
        self._append_history(event)

    def _pointer_state(self) -> tuple[str | None, list[str]]:
        pointer = self._read_pointer()
        if pointer is None:
            return None, []
        earlier = [version_name(parse_version(v)) for v in pointer.get("earlier", [])]
        return version_name(parse_version(pointer["version"])), earlier

    def promote(
        self,
        version: int | str,
        *,
        reason: str,
        decision: dict[str, Any] | None = None,
        expected_current: str | None | EllipsisType = ...,
    ) -> ModelVersion:
        """Make ``version`` production (after re-verifying its files); promoting the current one is a no-op.

        ``expected_current``: the production version the caller's decision was made against (None: none yet).
        Checked under the registry's lock, so two retrains that gated against the same champion cannot both
        switch: the second gets a ``ProductionChanged`` and production stays the first's (a compare-and-swap)."""
        with self._locked():
            target = self.get(version)
            target.verify()
            current, earlier = self._pointer_state()
            if expected_current is not ...:
                check_expected(target.name, current, expected_current)
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
            damaged = False
            try:
                current, earlier = self._pointer_state()
            except RegistryError as exc:
                if to is None:
                    raise
                # A damaged pointer is exactly when an operator needs `rollback --to` to work.
                log.warning("%s; replacing it with a pointer to %s", exc, to)
                current, earlier, damaged = None, [], True
            name, remaining = rollback_plan(current, earlier, None if to is None else self.get(to).name, damaged=damaged)
            target = self.get(name)
            target.verify()
            self._switch(target, kind="rollback", previous=current, earlier=remaining, reason=reason, decision=None)
        log.warning("rolled back production to %s (was %s): %s", target.name, current or "unreadable", reason)
        return target
