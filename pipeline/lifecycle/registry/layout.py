"""The registry's names on disk (files, version folders), version numbers, and its error."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pipeline.core.errors import EvergreenError

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

READ_ONLY_FILE = 0o444
READ_ONLY_DIR = 0o555
POINTER_MODE = 0o644  # the pointer and counter: servers running as another user must read them

_NAME = re.compile(r"^v(\d{4,})$")
_SPEC = re.compile(r"^[vV]?(\d+)$")
_TEMP_VERSION = re.compile(r"^\.tmp-v(\d+)-")


class RegistryError(EvergreenError):
    """The registry cannot do what was asked (unknown version, damaged file, nothing to roll back to)."""


class ProductionChanged(RegistryError):
    """A promotion decided against one production version found another there (another writer switched it)."""


def check_expected(target: str, current: str | None, expected: str | None) -> None:
    """The compare-and-swap of a promotion: ProductionChanged when production is no longer the version the
    decision was made against (None: none was in production)."""
    if current != expected:
        raise ProductionChanged(
            f"promote {target}: production is {current or 'none'}, not {expected or 'none'} "
            "as when the decision was made; gate again against the new champion"
        )


def rollback_plan(current: str | None, earlier: list[str], to: str | None, *, damaged: bool = False) -> tuple[str, list[str]]:
    """(the version production goes back to, the earlier versions left on the stack): the rollback rule of
    every registry store. Promotion pushes the outgoing version; ``rollback()`` pops it, so v1 -> v2 -> v3 then
    rollback gives v2, and again v1, and again an error. ``to`` on the stack pops down to it (the versions above
    it are abandoned); ``to`` not on the stack (never production, or rolled back past) is pushed over the current
    one, as a promotion, so a later rollback returns to it. ``damaged``: the pointer could not be read, and
    ``to`` replaces it."""
    if current is None and not damaged:
        raise RegistryError("rollback: nothing is in production yet; promote a version first")
    if to is None:
        if not earlier:
            raise RegistryError(
                f"rollback: {current} is the first production version; there is no earlier one to roll back to"
            )
        return earlier[-1], earlier[:-1]
    if to == current:
        raise RegistryError(f"rollback: {to} is already production")
    if to in earlier:
        return to, earlier[: len(earlier) - 1 - earlier[::-1].index(to)]
    return to, earlier + ([current] if current else [])


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


def number_of(name: str) -> int | None:
    """The number of a published version folder, or None for anything else (temp folders, stray files)."""
    match = _NAME.match(name)
    if match is None or version_name(int(match.group(1))) != name:
        return None
    return int(match.group(1))


def temp_number(name: str) -> int | None:
    """The number a crashed writer was given, for its temp folder (``.tmp-v0007-<pid>``); None for anything else."""
    match = _TEMP_VERSION.match(name)
    return None if match is None else int(match.group(1))


def temp_name(number: int, pid: int) -> str:
    """The hidden folder a version is written into before it is renamed into place."""
    return f".tmp-{version_name(number)}-{pid}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
