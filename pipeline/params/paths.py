"""Every file and folder the pipeline reads or writes, defined once (dvc.yaml templates them from params.yaml)."""

from __future__ import annotations

import os

from pipeline.params.base import Section

REGISTRY_ENV = "EVERGREEN_REGISTRY"
LANDING_ENV = "EVERGREEN_LANDING"


class Paths(Section):
    """Every file and folder the pipeline reads or writes, defined once (dvc.yaml templates them)."""

    ingested: str
    clean: str
    split: str
    augmented: str
    preprocessor: str
    model: str
    checkpoints: str
    onnx: str
    onnx_int8: str
    model_card: str
    ingest_report: str
    clean_report: str
    split_report: str
    augment_report: str
    train_live: str
    tensorboard: str
    eval_metrics: str
    eval_per_class: str
    eval_plots: str
    export_report: str
    raw: str
    landing: str
    quarantine: str
    registry: str
    drift_reports: str
    evidently: str  # folder: the Evidently workspace every drift check adds a snapshot to (evidently ui)
    monitor_state: str
    init_model: str  # folder: a model.pt here warm-starts training (the retrain flow's start=warm puts production's there)
    tune: str  # folder: optuna.db (the default study storage), best_params.yaml, summary.json


def registry_location(paths: Paths) -> str:
    """The registry folder: $EVERGREEN_REGISTRY when set (a folder shared by workers that share no checkout, e.g.
    the retrain-remote deployment's fresh clones), else ``paths.registry`` (relative to the workspace)."""
    return os.environ.get(REGISTRY_ENV) or paths.registry


def shared_landing() -> str | None:
    """$EVERGREEN_LANDING: a landing area shared by hosts (a folder or an object-store URL such as
    ``s3://bucket/landing``) that the monitor and every retrain copy new batches from into ``paths.landing``
    before screening them; None (unset or empty): batches land in ``paths.landing`` only."""
    return os.environ.get(LANDING_ENV) or None
