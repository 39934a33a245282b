"""The image kind's stages (the ``KindStages`` contract): one function per DVC stage.

=========  ===================================  ===============================================
stage      reads                                writes
=========  ===================================  ===============================================
ingest     ``ingest.source``                    ``paths.ingested``/images.npz, schema.json;
                                                ``paths.ingest_report``
clean      ``paths.ingested``                   ``paths.clean``/images.npz, schema.json;
                                                ``paths.clean_report``
split      ``paths.clean``                      ``paths.split``/{train,val,test}.npz, schema.json;
                                                ``paths.split_report``
augment    ``paths.split``/train.npz            ``paths.augmented``/train.npz; ``paths.augment_report``
train      split train (normaliser), val;       (``prepare``) normalised [N, C, H, W] tensors, the
           augmented train (trained on)         CNN's config and the normaliser (the encoder)
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
    ImageAugment,
    ImageClean,
    ImageFeatures,
    ImageIngest,
    IngestParams,
    Paths,
    SplitParams,
    TrainParams,
)

if TYPE_CHECKING:
    from pipeline.engine import Prepared

# Each function imports its own stage's module: a stage loads only the code it runs (the data stages
# never load the engine or the ONNX builder), which is what its DVC deps in dvc.yaml declare.


def ingest(cfg: IngestParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.image.ingest import run

    return run(narrow(cfg, ImageIngest), paths, seed)


def clean(cfg: CleanParams, paths: Paths) -> Report:
    from pipeline.kinds.image.clean import run

    return run(narrow(cfg, ImageClean), paths)


def split(cfg: SplitParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.image.split import run

    return run(cfg, paths, seed)


def augment(cfg: AugmentParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.image.augment import run

    return run(narrow(cfg, ImageAugment), paths, seed)


def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    from pipeline.kinds.image import train

    return train.prepare(narrow(features, ImageFeatures), cfg, paths, encoder)


def evaluate(cfg: EvaluateParams, paths: Paths, seed: int) -> Report:
    from pipeline.kinds.image.evaluate import run

    return run(cfg, paths, seed)


def export(cfg: ExportParams, paths: Paths) -> Report:
    from pipeline.kinds.image.export import run

    return run(cfg, paths)
