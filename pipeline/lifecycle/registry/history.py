"""history.jsonl: read every complete event (skipping lines torn by a crash), append one durably."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.core.io import _json_default, append_line
from pipeline.lifecycle.registry.layout import RegistryError

log = logging.getLogger(__name__)

# Events that move the production pointer; only promote() and rollback() may write them.
SWITCH_EVENTS = ("promote", "rollback")
# Each crash mid-append can tear at most one line; more than this many means the log was damaged.
MAX_UNREADABLE_HISTORY_LINES = 5


def read_history(path: Path, max_unreadable: int | None) -> list[dict[str, Any]]:
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


def append_event(path: Path, event: dict[str, Any]) -> None:
    """Append one event as a line (flush + fsync); the caller holds the registry lock."""
    try:
        line = json.dumps(event, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"history event {event.get('event')!r} is not JSON serialisable: {exc}") from None
    append_line(path, line)
