"""The registry on an object store (``s3://bucket/prefix``), through fsspec: shared by hosts that share no disk.

Same versions, pointer, history and rollback as the folder registry (``store.Registry``), same public
methods, but an object store has no rename, no append and no lock. What replaces each, and why a crash or
a second writer at any instant leaves the old or the new state:

* **Every write is one create-if-absent PUT** (S3's conditional ``If-None-Match: *``; s3fs's
  ``pipe_file(mode="create")``, which raises ``FileExistsError`` when the object exists). A PUT is atomic on
  the store: readers see the whole object or none. Nothing is ever overwritten or deleted.
* **Version numbers**: a writer claims ``claims/v0007`` with a create-if-absent PUT; of two writers that try
  the same number one gets it and the other tries the next. A claim is never removed, so a number is never
  handed out twice, even after a crash.
* **A version** is its files under ``versions/v0007/``, uploaded first, then ``meta.json`` (with the sha256
  of every file), created last: a version exists exactly when its ``meta.json`` does. A writer killed
  before that leaves files no reader lists (and a retired number).
* **The production pointer is a versioned pointer object**: ``production/0000000042.json``, each switch
  creating the next number with a create-if-absent PUT. The current pointer is the highest number. Two
  writers that read pointer 41 both try to create 42; exactly one succeeds, the other re-reads: a promote
  that was gated against the old champion (``expected_current``) then fails with ``ProductionChanged``,
  as the folder registry's compare-and-swap does. The earlier pointer objects stay as the switch log.
* **The history** needs no append: register events come from the versions' ``meta.json``, promote and
  rollback events from the pointer objects, and other decisions (rejected, unchanged) are one object each
  under ``events/``. So no event can be lost between two writes, and there is nothing to reconcile.

This relies on the store's create-if-absent being atomic: true of AWS S3 (since 2024) and S3-compatible
stores that implement conditional writes (MinIO, Cloudflare R2, moto), and of fsspec's ``memory://``
inside one process. Other fsspec back-ends only check, then write; they are refused rather than trusted.
A folder shared over NFS or a plain path uses ``store.Registry`` (``file://`` URLs too).

Reads list the store (S3 listings are strongly consistent) and download a version's files once into a
local cache (``$EVERGREEN_CACHE``, else ``~/.cache/evergreen``), where ``ModelVersion.verify`` checks them
against ``meta.json`` like any version. ``versions()`` reads only each version's ``meta.json``; ``get``
and ``production`` fetch the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import Any

import fsspec

from pipeline.core.gitinfo import git_revision as head_revision
from pipeline.core.io import _json_default, file_sha256
from pipeline.lifecycle.registry.history import SWITCH_EVENTS
from pipeline.lifecycle.registry.layout import (
    META_FILE,
    ONNX_FILE,
    VERSIONS_DIR,
    RegistryError,
    check_expected,
    number_of,
    parse_version,
    rollback_plan,
    version_name,
)
from pipeline.lifecycle.registry.versions import ModelVersion, parse_meta, version_meta, version_sources

log = logging.getLogger(__name__)

CACHE_ENV = "EVERGREEN_CACHE"
ATOMIC_CREATE_PROTOCOLS = ("s3", "s3a", "memory")  # fsspec back-ends whose pipe_file(mode="create") is atomic
CLAIMS_DIR = "claims"
POINTERS_DIR = "production"
EVENTS_DIR = "events"
_POINTER = re.compile(r"^(\d{10})\.json$")
MAX_SWITCH_ATTEMPTS = 20  # a promote without expected_current retries this often when other writers keep winning


def is_store_url(location: str | os.PathLike[str]) -> bool:
    """True for a URL with a scheme other than file:// (those go to ObjectRegistry), False for a path."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def utc_now() -> str:
    """UTC time to the microsecond: the history is merged from objects by time, so ties must not reorder it."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def default_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "evergreen") / "registry"


class ObjectRegistry:
    """Numbered model versions with a production pointer, a history and rollback, on an fsspec object store."""

    def __init__(
        self,
        url: str,
        *,
        cache_dir: str | Path | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = url.rstrip("/")
        try:
            self.fs, path = fsspec.core.url_to_fs(self.root, **dict(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise RegistryError(f"registry store {self.root}: {exc}") from None
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        if not set(protocols) & set(ATOMIC_CREATE_PROTOCOLS):
            raise RegistryError(
                f"registry store {self.root}: {protocols[0]}:// gives no atomic create-if-absent, which the pointer "
                f"swap needs with several writers; use s3:// (or an S3-compatible store) or a shared folder"
            )
        self.base = path.rstrip("/")
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:16]
        self.cache = Path(cache_dir) if cache_dir is not None else default_cache() / digest

    def __repr__(self) -> str:
        return f"ObjectRegistry({self.root!r})"

    def _key(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def _list(self, folder: str) -> list[str]:
        """The names directly under ``folder``, listed afresh (fsspec caches listings; another host may have written)."""
        path = self._key(folder)
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)

    def _create(self, key: str, payload: Any) -> None:
        """One create-if-absent PUT of a JSON object; FileExistsError when another writer created it first."""
        try:
            data = json.dumps(payload, sort_keys=True, indent=2, default=_json_default).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"{key}: not JSON serialisable: {exc}") from None
        self.fs.pipe_file(key, data, mode="create")

    # ------------------------------------------------------------ reading

    def _numbers(self) -> list[int]:
        """Published versions: those whose meta.json exists (written last, so the version is complete)."""
        folders = [n for name in self._list(VERSIONS_DIR) if (n := number_of(name)) is not None]
        if not folders:
            return []
        metas = [self._key(VERSIONS_DIR, version_name(n), META_FILE) for n in folders]
        present = {p.rstrip("/") for p in self.fs.glob(self._key(VERSIONS_DIR, "v*", META_FILE))}
        return [n for n, meta in zip(folders, metas, strict=True) if meta in present]

    def _metas(self, numbers: list[int]) -> dict[int, dict[str, Any]]:
        keys = {self._key(VERSIONS_DIR, version_name(n), META_FILE): n for n in numbers}
        raw = self.fs.cat(list(keys)) if keys else {}
        if isinstance(raw, bytes):  # one path: fsspec returns its bytes, not a dict
            raw = {next(iter(keys)): raw}
        return {n: parse_meta(raw[key], f"{self.root}/{key[len(self.base) + 1 :]}", n) for key, n in keys.items()}

    def _version(self, number: int, meta: dict[str, Any]) -> ModelVersion:
        return ModelVersion(number=number, path=self.cache / version_name(number), meta=meta)

    def versions(self) -> list[ModelVersion]:
        """Every published version, oldest first, from its meta.json only (``get`` fetches the files)."""
        metas = self._metas(self._numbers())
        return [self._version(n, metas[n]) for n in sorted(metas)]

    def get(self, version: int | str) -> ModelVersion:
        """A version by 7, "7", "v7" or "v0007", its files in the local cache (fetched on first use)."""
        number = parse_version(version)
        key = self._key(VERSIONS_DIR, version_name(number), META_FILE)
        try:
            raw = self.fs.cat_file(key)
        except FileNotFoundError:
            numbers = self._numbers()
            known = f"it holds {version_name(numbers[0])} to {version_name(numbers[-1])}" if numbers else "it is empty"
            raise RegistryError(
                f"model version {version_name(number)} is not in the registry at {self.root} ({known})"
            ) from None
        meta = parse_meta(raw, f"{self.root}/{VERSIONS_DIR}/{version_name(number)}/{META_FILE}", number)
        self._fetch(number, meta)
        return self._version(number, meta)

    def _fetch(self, number: int, meta: dict[str, Any]) -> None:
        """Download a version's files into the cache once: into a temporary folder, then renamed into place,
        so a cached folder is always complete (``verify`` still checks its bytes before serving)."""
        final = self.cache / version_name(number)
        if (final / META_FILE).is_file():
            return
        self.cache.mkdir(parents=True, exist_ok=True)
        temp = self.cache / f".tmp-{version_name(number)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
        try:
            names = [*meta.get("sha256", {}), META_FILE]
            for name in names:
                try:
                    self.fs.get_file(self._key(VERSIONS_DIR, version_name(number), name), str(temp / name))
                except FileNotFoundError:
                    raise RegistryError(
                        f"{version_name(number)}: {name} is missing from {self.root}/{VERSIONS_DIR}/{version_name(number)}; "
                        "the version is damaged"
                    ) from None
            try:
                os.rename(temp, final)
            except OSError:  # another process of this host fetched it first: theirs is as good
                if not (final / META_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def _pointer(self) -> tuple[int, dict[str, Any] | None]:
        """(sequence number, content) of the current pointer object; (0, None) before the first promotion."""
        sequence = max(self._sequences(), default=0)
        if sequence == 0:
            return 0, None
        where = f"{self.root}/{POINTERS_DIR}/{sequence:010d}.json"
        fix = "fix it with: python -m pipeline.lifecycle.registry rollback --to VERSION"
        try:
            pointer = json.loads(self.fs.cat_file(self._key(POINTERS_DIR, f"{sequence:010d}.json")))
        except ValueError as exc:
            raise RegistryError(f"{where}: not valid JSON ({exc}); {fix}") from None
        if not isinstance(pointer, dict) or "version" not in pointer:
            raise RegistryError(f"{where}: has no 'version'; {fix}")
        return sequence, pointer

    def _sequences(self) -> list[int]:
        return [int(m.group(1)) for name in self._list(POINTERS_DIR) if (m := _POINTER.match(name))]

    def pointer_token(self) -> bytes | None:
        """Changes on every switch (the current pointer object's number); cheap enough to poll: one listing."""
        sequence = max(self._sequences(), default=0)
        return str(sequence).encode() if sequence else None

    def production(self) -> ModelVersion | None:
        """The serving version, or None before the first promotion."""
        sequence, pointer = self._pointer()
        if pointer is None:
            return None
        try:
            return self.get(pointer["version"])
        except RegistryError as exc:
            raise RegistryError(
                f"{self.root}/{POINTERS_DIR}/{sequence:010d}.json points at a version that cannot be read: {exc}"
            ) from None

    def find_by_onnx_sha256(self, sha256: str) -> ModelVersion | None:
        """The newest version whose ONNX file has this hash (so an unchanged model is not registered twice)."""
        for version in reversed(self.versions()):
            if version.meta.get("sha256", {}).get(ONNX_FILE) == sha256:
                return self.get(version.number)
        return None

    def history(self) -> list[dict[str, Any]]:
        """Every event, oldest first: registrations (from meta.json), switches (the pointer objects), decisions."""
        events = [
            {
                "event": "register",
                "version": version.name,
                "time": version.meta.get("created"),
                "onnx_sha256": version.meta.get("sha256", {}).get(ONNX_FILE),
                "git_revision": version.meta.get("git_revision"),
            }
            for version in self.versions()
        ]
        for folder, pick in ((EVENTS_DIR, lambda doc: doc), (POINTERS_DIR, lambda doc: doc.get("event"))):
            keys = [self._key(folder, name) for name in self._list(folder) if name.endswith(".json")]
            raw = self.fs.cat(keys) if keys else {}
            if isinstance(raw, bytes):
                raw = {keys[0]: raw}
            for key in keys:
                try:
                    event = pick(json.loads(raw[key]))
                except ValueError:
                    log.warning("%s/%s is not valid JSON; skipped in the history", self.root, key[len(self.base) + 1 :])
                    continue
                if isinstance(event, dict):
                    events.append(event)
        return sorted(events, key=lambda e: str(e.get("time") or ""))  # stable: a registration stays first

    def reconcile(self) -> None:
        """Nothing to repair: every event is derived from, or is, one object written in a single PUT."""

    # ------------------------------------------------------------ writing

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
        """Upload a model and everything that explains it as the next numbered version (meta.json last)."""
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
        number = self._claim()
        name = version_name(number)
        hashes = {}
        for file_name, source in sources.items():
            hashes[file_name] = file_sha256(source)
            self.fs.put_file(str(source), self._key(VERSIONS_DIR, name, file_name))
        meta = version_meta(number, utc_now(), revision, hashes, reference_file, sources, extra)
        self._create(self._key(VERSIONS_DIR, name, META_FILE), meta)  # the instant the version appears, complete
        log.info("registered %s (onnx sha256 %s...) at %s/%s/%s", name, hashes[ONNX_FILE][:12], self.root, VERSIONS_DIR, name)
        return self.get(number)

    def _claim(self) -> int:
        """The next version number, claimed with a create-if-absent PUT (a number is never handed out twice)."""
        claimed = [n for name in self._list(CLAIMS_DIR) if (n := number_of(name)) is not None]
        number = max([*claimed, *self._numbers()], default=0) + 1
        while True:
            try:
                self._create(self._key(CLAIMS_DIR, version_name(number)), {"pid": os.getpid(), "time": utc_now()})
                return number
            except FileExistsError:
                number += 1  # another writer claimed it between our listing and our PUT

    def _switch(self, compute: Any, kind: str, *, replace_damaged: bool = False) -> tuple[ModelVersion, str | None]:
        """Create the next pointer object from ``compute(current, earlier, damaged) -> (target, earlier, reason, decision)``;
        when another writer creates it first, read again and recompute (``compute`` may raise ProductionChanged)."""
        for _ in range(MAX_SWITCH_ATTEMPTS):
            damaged = False
            try:
                sequence, pointer = self._pointer()
            except RegistryError as exc:
                if not replace_damaged:
                    raise
                # A damaged pointer is exactly when an operator needs `rollback --to` to work: the next object replaces it.
                log.warning("%s; replacing it with a new pointer", exc)
                sequence, pointer, damaged = max(self._sequences(), default=0), None, True
            current = None if pointer is None else version_name(parse_version(pointer["version"]))
            earlier = [] if pointer is None else [version_name(parse_version(v)) for v in pointer.get("earlier", [])]
            plan = compute(current, earlier, damaged)
            if plan is None:
                return self.get(current), current  # type: ignore[arg-type]  # nothing to switch: already there
            target, remaining, reason, decision = plan
            target.verify()
            now = utc_now()
            event: dict[str, Any] = {
                "event": kind,
                "id": uuid.uuid4().hex,
                "version": target.name,
                "previous": current,
                "reason": reason,
                "time": now,
            }
            if decision is not None:
                event["decision"] = decision
            content = {"version": target.name, "promoted_at": now, "reason": reason, "earlier": remaining, "event": event}
            try:
                self._create(self._key(POINTERS_DIR, f"{sequence + 1:010d}.json"), content)
            except FileExistsError:
                log.info("%s: another writer switched production first; reading the pointer again", self.root)
                continue
            return target, current
        raise RegistryError(f"{kind}: other writers switched production {MAX_SWITCH_ATTEMPTS} times in a row; try again")

    def promote(
        self,
        version: int | str,
        *,
        reason: str,
        decision: dict[str, Any] | None = None,
        expected_current: str | None | EllipsisType = ...,
    ) -> ModelVersion:
        """Make ``version`` production (after re-verifying its files); promoting the current one is a no-op.

        ``expected_current``: the production version the decision was made against (None: none yet); when
        another writer switched production since, ProductionChanged (a compare-and-swap on the pointer)."""
        target = self.get(version)

        def plan(current: str | None, earlier: list[str], _damaged: bool) -> Any:
            if expected_current is not ...:
                check_expected(target.name, current, expected_current)
            if current == target.name:
                log.info("%s is already production; nothing to switch", target.name)
                return None
            return target, earlier + ([current] if current else []), reason, decision

        _, previous = self._switch(plan, "promote")
        if previous != target.name:
            log.info("production is now %s (was %s): %s", target.name, previous or "none", reason)
        return target

    def record(self, event: dict[str, Any]) -> None:
        """Log a decision that does not move production (e.g. a rejected challenger), stamped with UTC time."""
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise RegistryError(f"record: an event must be a dict with a string 'event' key, got {event!r:.80}")
        if event["event"] in SWITCH_EVENTS:
            raise RegistryError(f"record: {event['event']!r} events move production; call Registry.{event['event']}() instead")
        stamped = {**event, "time": event.get("time", utc_now())}
        self._create(self._key(EVENTS_DIR, f"{stamped['time']}-{uuid.uuid4().hex}.json"), stamped)

    def rollback(self, to: int | str | None = None, *, reason: str = "manual rollback") -> ModelVersion:
        """Switch production back, as ``store.Registry.rollback`` does (the pointer keeps the stack of earlier versions)."""
        wanted = None if to is None else self.get(to)

        def plan(current: str | None, earlier: list[str], damaged: bool) -> Any:
            name, remaining = rollback_plan(current, earlier, None if wanted is None else wanted.name, damaged=damaged)
            return self.get(name), remaining, reason, None

        target, previous = self._switch(plan, "rollback", replace_damaged=to is not None)
        log.warning("rolled back production to %s (was %s): %s", target.name, previous or "unreadable", reason)
        return target
