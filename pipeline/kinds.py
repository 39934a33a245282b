"""Data kinds: tabular (the stage modules themselves), image and sequence (their own modules).

``ingest.kind`` picks the kind; ingest writes it into the data's ``schema.json`` and every later
stage reads it from its input folder (``data_kind``), so the kind travels with the data and a
stage never needs a param it does not otherwise use. A non-tabular kind's module provides, for
the same seven stages, functions with the stage's ``run`` signature:

``ingest(cfg: IngestParams, paths, seed)``, ``clean(cfg: CleanParams, paths)``,
``split(cfg: SplitParams, paths, seed)``, ``augment(cfg: AugmentParams, paths, seed)``,
``prepare(features: FeatureParams, cfg: TrainParams, paths, encoder) -> Prepared`` (train;
``encoder``: a warm start's fitted encoder, or None),
``evaluate(cfg: EvaluateParams, paths, seed)``, ``export(cfg: ExportParams, paths)``, and for the
champion/challenger gate ``score_split(onnx_path, card, split_dir) -> dict[str, float]``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from pipeline.common import SCHEMA_FILE, read_json
from pipeline.errors import DataError

TABULAR = "tabular"
KIND_MODULES = {"image": "pipeline.images", "sequence": "pipeline.sequences"}


def data_kind(directory: str | Path) -> str:
    """The kind of the data in a stage's output folder (tabular when its schema names none)."""
    return read_json(Path(directory) / SCHEMA_FILE).get("kind", TABULAR)


def training_split_file(split_dir: str | Path) -> Path:
    """The training split's data file, whatever the kind stores (train.parquet, train.npz, ...);
    the registry keeps it with each version as the reference a drift check compares against."""
    found = sorted(Path(split_dir).glob("train.*"))
    if len(found) != 1:
        raise DataError(f"{split_dir}: expected one train.* file in the split, found {[p.name for p in found]}")
    return found[0]


def kind_module(kind: str) -> ModuleType:
    """The module implementing the stages for a non-tabular kind."""
    if kind not in KIND_MODULES:
        raise ValueError(f"unknown data kind {kind!r}; known: {[TABULAR, *KIND_MODULES]}")
    return importlib.import_module(KIND_MODULES[kind])
