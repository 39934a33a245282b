"""Model cards for tests: the cards written at commit 9e2a95f (``cards/``), as files or as JSON data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OLD_CARDS = Path(__file__).parent / "cards"
KINDS = ("tabular", "image", "sequence")


def old_card_path(kind: str) -> Path:
    return OLD_CARDS / f"9e2a95f_{kind}.json"


def old_card_data(kind: str) -> dict[str, Any]:
    """A fresh copy of the kind's 9e2a95f card as JSON data, to change in a test."""
    return json.loads(old_card_path(kind).read_text())
