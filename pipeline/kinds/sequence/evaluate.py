"""Sequence evaluate: every test window scored by the trained model and the baselines.

A forecast reports MAE, RMSE and MAPE in the target's own units, overall, per horizon step and per
series, beside the seasonal-naive and persistence baselines; a classifier reports the tabular
classification metrics and plots beside the majority class.

Inputs:  ``paths.split``, ``paths.preprocessor``, ``paths.model``
Outputs: ``paths.eval_metrics``, ``paths.eval_per_class`` (a forecast's per-step and per-series errors),
         ``paths.eval_plots``
Params:  ``evaluate``
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.io import write_json
from pipeline.kinds.sequence.data import SequenceSchema
from pipeline.kinds.sequence.encoder import SequenceEncoder, load_encoder
from pipeline.kinds.sequence.metrics import forecast_report
from pipeline.kinds.sequence.windows import Windows, read_split_windows
from pipeline.models import load_model
from pipeline.params import EvaluateParams, Paths
from pipeline.shared.metrics import all_metrics
from pipeline.shared.reports import majority_proba, write_classification_reports, write_plot

log = logging.getLogger(__name__)


def torch_outputs(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The network's raw outputs [N, K] for normalised windows, in eval mode, no gradients."""
    model.eval()
    with torch.no_grad():
        out = [model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def predict(model: nn.Module, encoder: SequenceEncoder, x: np.ndarray) -> np.ndarray:
    """PyTorch path from raw windows: forecasts [N, H] in target units, or probabilities [N, K]."""
    out = torch_outputs(model, encoder.transform(x))
    if encoder.schema.forecast:
        return encoder.decode_target(out)
    return torch.softmax(torch.from_numpy(out), dim=1).numpy()


def evaluate_classifier(
    windows: Windows, proba: np.ndarray, schema: SequenceSchema, cfg: EvaluateParams, paths: Paths
) -> dict[str, Any]:
    """Sequence classification: the tabular classification metrics and plots, beside the majority class."""
    train = read_split_windows(paths.split, "train", schema, schema.stride)
    majority = majority_proba(train.y, len(windows), len(schema.classes))
    metrics: dict[str, Any] = {
        "task": "classify",
        "test_rows": len(windows),
        "model": all_metrics(windows.y, proba, cfg.calibration_bins),
        "baseline_majority": all_metrics(windows.y, majority, cfg.calibration_bins),
    }
    write_json(paths.eval_metrics, metrics)
    write_classification_reports(windows.y, proba, schema.classes, cfg, paths)
    log.info(
        "test accuracy %.4f (majority %.4f) on %d windows",
        metrics["model"]["accuracy"],
        metrics["baseline_majority"]["accuracy"],
        len(windows),
    )
    return metrics


def run(cfg: EvaluateParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Score every test window with the trained model and the baselines; write metrics and plot data."""
    encoder = load_encoder(paths.preprocessor)
    schema = encoder.schema
    model = load_model(paths.model)
    windows = read_split_windows(paths.split, "test", schema)
    predicted = predict(model, encoder, windows.x)
    if not schema.forecast:
        return evaluate_classifier(windows, predicted, schema, cfg, paths)
    metrics, breakdown, plots = forecast_report(windows, predicted, schema.features.index(schema.target))
    write_json(paths.eval_metrics, metrics)
    write_json(paths.eval_per_class, breakdown)  # a forecast has no classes: its breakdowns are per step and per series
    for name, table in plots.items():
        write_plot(paths.eval_plots, name, table)
    log.info(
        "test MAE %.4f (seasonal naive %.4f, persistence %.4f), RMSE %.4f (seasonal naive %.4f) on %d windows",
        metrics["model"]["mae"],
        metrics["baseline_seasonal_naive"]["mae"],
        metrics["baseline_persistence"]["mae"],
        metrics["model"]["rmse"],
        metrics["baseline_seasonal_naive"]["rmse"],
        len(windows),
    )
    return metrics
