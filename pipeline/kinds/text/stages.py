"""The text kind's stages (the ``KindStages`` contract): one function per DVC stage.

=========  ===================================  ===============================================
stage      reads                                writes
=========  ===================================  ===============================================
ingest     ``ingest.source``, landed batches    ``paths.ingested``/texts.parquet, schema.json;
                                                ``paths.ingest_report``
clean      ``paths.ingested``                   ``paths.clean``/texts.parquet, schema.json;
                                                ``paths.clean_report``
split      ``paths.clean``                      ``paths.split``/{train,val,test}.parquet, schema.json;
                                                ``paths.split_report``
augment    ``paths.split``/train.parquet        ``paths.augmented``/train.parquet; ``paths.augment_report``
train      split train (tokeniser), val;        (``prepare``) ids [N, max_length], the network's
           augmented train (trained on)         config and the tokeniser (the encoder)
evaluate   split train, test; model, encoder    ``paths.eval_metrics``, ``eval_per_class``, ``eval_plots``
export     split test; model, encoder, metrics  ``paths.onnx`` (+ int8), ``model_card``, ``export_report``
=========  ===================================  ===============================================

The storage format is in ``data.py``, the sources in ``ingest.py``.
"""

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
    TextAugment,
    TextClean,
    TextFeatures,
    TextIngest,
    TrainParams,
)

if TYPE_CHECKING:
    from pipeline.engine import Prepared

# Each function imports its own stage's module: a stage loads only the code it runs (the data stages
# never load the engine or the ONNX builder), which is what its DVC deps in dvc.yaml declare.


def ingest(cfg: IngestParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.text.ingest import run

    return run(narrow(cfg, TextIngest), paths, seed)


def clean(cfg: CleanParams, paths: Paths) -> Report:
    from pipeline.kinds.text.clean import run

    return run(narrow(cfg, TextClean), paths)


def split(cfg: SplitParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.text.split import run

    return run(cfg, paths, seed)


def augment(cfg: AugmentParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.text.augment import run

    return run(narrow(cfg, TextAugment), paths, seed)


def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    from pipeline.kinds.text import train

    return train.prepare(narrow(features, TextFeatures), cfg, paths, encoder)


def evaluate(cfg: EvaluateParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.text.evaluate import run

    return run(cfg, paths, seed)


def export(cfg: ExportParams, paths: Paths) -> Report:
    from pipeline.kinds.text.export import run

    return run(cfg, paths)
