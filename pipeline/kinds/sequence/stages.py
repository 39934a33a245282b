"""The sequence kind's stages (the ``KindStages`` contract): one function per DVC stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.kinds.base import Report, narrow
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

if TYPE_CHECKING:
    from pipeline.engine import Prepared

# Each function imports its own stage's module: a stage loads only the code it runs (the data stages
# never load the engine or the ONNX builder), which is what its DVC deps in dvc.yaml declare.


def ingest(cfg: IngestParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.sequence.ingest import run

    return run(narrow(cfg, SequenceIngest), paths, seed)


def clean(cfg: CleanParams, paths: Paths) -> Report:
    from pipeline.kinds.sequence.clean import run

    return run(narrow(cfg, SequenceClean), paths)


def split(cfg: SplitParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.sequence.split import run

    return run(cfg, paths, seed)


def augment(cfg: AugmentParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.sequence.augment import run

    return run(narrow(cfg, SequenceAugment), paths, seed)


def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    from pipeline.kinds.sequence import train

    return train.prepare(narrow(features, SequenceFeatures), cfg, paths, encoder)


def evaluate(cfg: EvaluateParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.sequence.evaluate import run

    return run(cfg, paths, seed)


def export(cfg: ExportParams, paths: Paths) -> Report:
    from pipeline.kinds.sequence.export import run

    return run(cfg, paths)
