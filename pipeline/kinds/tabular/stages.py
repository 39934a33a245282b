"""The tabular kind's stages (the ``KindStages`` contract): one function per DVC stage."""

from __future__ import annotations

from typing import Any

from pipeline.engine import Prepared
from pipeline.kinds.base import Report, narrow
from pipeline.kinds.tabular import augment as _augment
from pipeline.kinds.tabular import clean as _clean
from pipeline.kinds.tabular import evaluate as _evaluate
from pipeline.kinds.tabular import export as _export
from pipeline.kinds.tabular import ingest as _ingest
from pipeline.kinds.tabular import split as _split
from pipeline.kinds.tabular import train as _train
from pipeline.params import (
    AugmentParams,
    CleanParams,
    EvaluateParams,
    ExportParams,
    FeatureParams,
    IngestParams,
    Paths,
    SplitParams,
    TabularAugment,
    TabularClean,
    TabularFeatures,
    TabularIngest,
    TrainParams,
)


def ingest(cfg: IngestParams, paths: Paths, seed: int) -> Report:
    return _ingest.run(narrow(cfg, TabularIngest), paths, seed)


def clean(cfg: CleanParams, paths: Paths) -> Report:
    return _clean.run(narrow(cfg, TabularClean), paths)


def split(cfg: SplitParams, paths: Paths, seed: int) -> Report:
    return _split.run(cfg, paths, seed)


def augment(cfg: AugmentParams, paths: Paths, seed: int) -> Report:
    return _augment.run(narrow(cfg, TabularAugment), paths, seed)


def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    return _train.prepare_tabular(narrow(features, TabularFeatures), cfg, paths, encoder)


def evaluate(cfg: EvaluateParams, paths: Paths, seed: int) -> Report:
    return _evaluate.run(cfg, paths, seed)


def export(cfg: ExportParams, paths: Paths) -> Report:
    return _export.run(cfg, paths)
