"""Classification reports every kind writes alike: metrics beside baselines, per-class scores, plot files for ``dvc plots``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from pipeline.core.io import write_csv, write_json
from pipeline.params import EvaluateParams, Paths
from pipeline.shared.metrics import all_metrics, classification_scores, expected_calibration_error


def majority_proba(y_train: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """The majority-class baseline: always the training prior (its argmax is the majority class)."""
    prior = np.bincount(y_train, minlength=n_classes).astype(float) / len(y_train)
    return np.tile(prior, (n_rows, 1))


def curves(y_true: np.ndarray, proba: np.ndarray, points: int) -> dict[str, pd.DataFrame]:
    """Micro-averaged ROC and precision-recall curves on a fixed grid, and the reliability diagram."""
    onehot = np.eye(proba.shape[1], dtype=bool)[y_true].ravel()
    scores = proba.ravel()
    grid = np.linspace(0.0, 1.0, points)
    fpr, tpr, _ = roc_curve(onehot, scores)
    precision, recall, _ = precision_recall_curve(onehot, scores)
    # Interpolated precision: the best precision reachable at recall >= r.
    order = np.argsort(recall)
    best_precision = np.maximum.accumulate(precision[order][::-1])[::-1]
    pr = np.interp(grid, recall[order], best_precision)
    return {
        "roc": pd.DataFrame({"fpr": grid, "tpr": np.interp(grid, fpr, tpr)}),
        "precision_recall": pd.DataFrame({"recall": grid, "precision": pr}),
    }


def evaluate(
    model_proba: np.ndarray,
    test_y: np.ndarray,
    train_y: np.ndarray,
    baseline_proba: np.ndarray,
    classes: tuple[str, ...],
    cfg: EvaluateParams,
    baseline: str = "hgb",
) -> dict[str, Any]:
    """The metrics file: the model, the majority class and a trained ``baseline`` (HGB for tables)
    side by side, and the model's margin over that baseline."""
    n_classes = len(classes)
    model = all_metrics(test_y, model_proba, cfg.calibration_bins)
    trained = all_metrics(test_y, baseline_proba, cfg.calibration_bins)
    majority = all_metrics(test_y, majority_proba(train_y, len(test_y), n_classes), cfg.calibration_bins)
    return {
        "test_rows": int(len(test_y)),
        "model": model,
        "baseline_majority": majority,
        f"baseline_{baseline}": trained,
        f"model_minus_{baseline}": {k: model[k] - trained[k] for k in ("accuracy", "macro_f1", "balanced_accuracy")},
    }


def write_plot(plots: str | Path, name: str, table: pd.DataFrame) -> Path:
    """One plot's data for ``dvc plots``: ``<plots>/<name>/<name>.csv``. Each plot has a folder of its own, a DVC
    output of evaluate that exists (empty) when a run has no such plot, so dvc.yaml can declare every task's plots
    and ``dvc plots show`` loads what this run wrote without a warning about the others."""
    path = Path(plots) / name / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, table)
    return path


def write_classification_reports(
    test_y: np.ndarray, proba: np.ndarray, classes: tuple[str, ...], cfg: EvaluateParams, paths: Paths
) -> None:
    """Per-class precision/recall/F1 (``paths.eval_per_class``) and the plot data in ``paths.eval_plots``:
    confusion pairs, ROC, precision-recall and the reliability diagram. Any classifier's, of any data kind."""
    scores = classification_scores(test_y, proba.argmax(1), len(classes))
    per_class = {cls: {k: scores[k][i] for k in ("precision", "recall", "f1", "support")} for i, cls in enumerate(classes)}
    write_json(paths.eval_per_class, per_class)

    names = np.array(classes, dtype=object)
    write_plot(paths.eval_plots, "confusion", pd.DataFrame({"actual": names[test_y], "predicted": names[proba.argmax(1)]}))
    for name, frame in curves(test_y, proba, cfg.curve_points).items():
        write_plot(paths.eval_plots, name, frame)
    _, reliability = expected_calibration_error(test_y, proba, cfg.calibration_bins)
    write_plot(paths.eval_plots, "calibration", pd.DataFrame(reliability))
