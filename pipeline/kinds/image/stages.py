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

from pipeline.kinds.image.augment import run as augment
from pipeline.kinds.image.clean import run as clean
from pipeline.kinds.image.evaluate import run as evaluate
from pipeline.kinds.image.export import run as export
from pipeline.kinds.image.ingest import run as ingest
from pipeline.kinds.image.split import run as split
from pipeline.kinds.image.train import prepare

__all__ = ["augment", "clean", "evaluate", "export", "ingest", "prepare", "split"]
