"""The tabular kind's stages (the ``KindStages`` contract): one function per DVC stage."""

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
    SplitParams,
    TabularAugment,
    TabularClean,
    TabularFeatures,
    TabularIngest,
    TrainParams,
)

if TYPE_CHECKING:
    from pipeline.engine import Prepared

# Each function imports its own stage's module: a stage loads only the code it runs (the data stages
# never load the engine or the ONNX builder), which is what its DVC deps in dvc.yaml declare.


def ingest(cfg: IngestParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.tabular.ingest import run

    return run(narrow(cfg, TabularIngest), paths, seed)


def clean(cfg: CleanParams, paths: Paths) -> Report:
    from pipeline.kinds.tabular.clean import run

    return run(narrow(cfg, TabularClean), paths)


def split(cfg: SplitParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.tabular.split import run

    return run(cfg, paths, seed)


def augment(cfg: AugmentParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.tabular.augment import run

    return run(narrow(cfg, TabularAugment), paths, seed)


def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    from pipeline.kinds.tabular import train

    return train.prepare(narrow(features, TabularFeatures), cfg, paths, encoder)


def evaluate(cfg: EvaluateParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.tabular.evaluate import run

    return run(cfg, paths, seed)


def export(cfg: ExportParams, paths: Paths) -> Report:
    from pipeline.kinds.tabular.export import run

    return run(cfg, paths)
