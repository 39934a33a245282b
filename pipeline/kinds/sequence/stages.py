"""The sequence kind's stages (the ``KindStages`` contract): one function per DVC stage."""

from __future__ import annotations

from typing import Any

from pipeline.engine import Prepared
from pipeline.kinds.base import Report, narrow
from pipeline.kinds.sequence import augment as _augment
from pipeline.kinds.sequence import clean as _clean
from pipeline.kinds.sequence import evaluate as _evaluate
from pipeline.kinds.sequence import export as _export
from pipeline.kinds.sequence import ingest as _ingest
from pipeline.kinds.sequence import split as _split
from pipeline.kinds.sequence import train as _train
from pipeline.params import (
    AugmentParams,
    CleanParams,
    EvaluateParams,
    ExportParams,
    FeatureParams,
    IngestParams,
    Paths,
    SequenceAugment,
    SequenceClean,
    SequenceFeatures,
    SequenceIngest,
    SplitParams,
    TrainParams,
)


def ingest(cfg: IngestParams, paths: Paths, seed: int) -> Report:
    return _ingest.run(narrow(cfg, SequenceIngest), paths, seed)


def clean(cfg: CleanParams, paths: Paths) -> Report:
    return _clean.run(narrow(cfg, SequenceClean), paths)


def split(cfg: SplitParams, paths: Paths, seed: int) -> Report:
    return _split.run(cfg, paths, seed)


def augment(cfg: AugmentParams, paths: Paths, seed: int) -> Report:
    return _augment.run(narrow(cfg, SequenceAugment), paths, seed)


def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    return _train.prepare(narrow(features, SequenceFeatures), cfg, paths, encoder)


def evaluate(cfg: EvaluateParams, paths: Paths, seed: int) -> Report:
    return _evaluate.run(cfg, paths, seed)


def export(cfg: ExportParams, paths: Paths) -> Report:
    return _export.run(cfg, paths)
