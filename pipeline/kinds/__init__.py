"""The kind table: every data kind Evergreen trains, by the name ``ingest.kind`` gives it.

``ingest.kind`` picks the kind; ingest writes it into the data's ``schema.json`` and every later stage
reads it from its input folder (``data_kind``), so the kind travels with the data. Each entry imports
its package only when asked for, so a stage imports exactly one kind (its DVC deps list that kind's
folder) and the torch-free lifecycle never imports a kind's stages.

Adding a kind: a package beside these with ``runtime.py`` and ``stages.py`` (see ``base.py``), its params
in ``pipeline/params``, and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.core.io import SCHEMA_FILE, read_json
from pipeline.kinds.base import Kind
from pipeline.onnxio.card import ModelCard

TABULAR = "tabular"


def _tabular() -> Kind:
    from pipeline.kinds.tabular import KIND

    return KIND


def _image() -> Kind:
    from pipeline.kinds.image import KIND

    return KIND


def _sequence() -> Kind:
    from pipeline.kinds.sequence import KIND

    return KIND


def _text() -> Kind:
    from pipeline.kinds.text import KIND

    return KIND


KINDS: dict[str, Callable[[], Kind]] = {"tabular": _tabular, "image": _image, "sequence": _sequence, "text": _text}


def get(name: str) -> Kind:
    """The kind registered under ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in KINDS:
        raise DataError(f"unknown data kind {name!r}; known: {sorted(KINDS)}")
    return KINDS[name]()


def data_kind(directory: str | Path) -> str:
    """The kind of the data in a stage's output folder (tabular when its schema names none)."""
    kind = read_json(Path(directory) / SCHEMA_FILE).get("kind", TABULAR)
    return str(kind)


def training_split_file(split_dir: str | Path) -> Path:
    """The training split's data file, whatever the kind stores (train.parquet, train.npz, ...);
    the registry keeps it with each version as the reference a drift check compares against."""
    found = sorted(Path(split_dir).glob("train.*"))
    if len(found) != 1:
        raise DataError(f"{split_dir}: expected one train.* file in the split, found {[p.name for p in found]}")
    return found[0]


def score_test(onnx_path: str | Path, card_path: str | Path, split_dir: str | Path) -> dict[str, float]:
    """A model's gate metrics on the test split in ``split_dir``, for the kind its card names (no torch)."""
    card = ModelCard.load(card_path)
    return get(card.KIND).runtime.score_split(onnx_path, card, split_dir)
