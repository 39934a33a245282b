"""Classification and regression metrics shared by train (validation), evaluate and the gate.

Pure functions of label and probability arrays (classes are integer indices 0..K-1), or of
predicted and actual values in the target's units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1 and per-class precision/recall/F1/support.

    Macro averages run over the classes present in ``y_true`` (as scikit-learn's balanced accuracy
    does); a class never predicted has precision 0.
    """
    matrix = confusion(np.asarray(y_true), np.asarray(y_pred), n_classes)
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(support.sum(), 1)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.astype(int).tolist(),
    }


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int) -> tuple[float, list[dict[str, float]]]:
    """Top-label ECE with equal-width confidence bins, and the reliability-diagram points."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece, points = 0.0, []
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        gap = abs(correct[mask].mean() - confidence[mask].mean())
        ece += mask.mean() * gap
        points.append(
            {"confidence": float(confidence[mask].mean()), "accuracy": float(correct[mask].mean()), "count": int(mask.sum())}
        )
    return float(ece), points


def probability_metrics(y_true: np.ndarray, proba: np.ndarray, bins: int) -> dict[str, float]:
    """Macro one-vs-rest ROC AUC over the classes present (with both outcomes), log loss, ECE."""
    n_classes = proba.shape[1]
    aucs = [roc_auc_score(y_true == k, proba[:, k]) for k in range(n_classes) if 0 < (y_true == k).sum() < len(y_true)]
    ece, _ = expected_calibration_error(y_true, proba, bins)
    clipped = np.clip(proba, 1e-15, 1.0)
    return {
        "roc_auc_ovr": float(np.mean(aucs)) if aucs else float("nan"),
        "log_loss": float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=list(range(n_classes)))),
        "ece": ece,
    }


def all_metrics(y_true: np.ndarray, proba: np.ndarray, bins: int) -> dict[str, float]:
    """The headline numbers for one model on one split."""
    scores = classification_scores(y_true, proba.argmax(axis=1), proba.shape[1])
    return {
        "accuracy": scores["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"],
        "macro_f1": scores["macro_f1"],
        **probability_metrics(y_true, proba, bins),
    }


def label_scores(truth, predicted, classes: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and rows of predicted against true labels (text, any data
    kind). Labels the model does not know count as errors (it cannot predict them)."""
    names = list(classes) + sorted(set(truth) - set(classes))
    index = {name: i for i, name in enumerate(names)}
    y_true = np.array([index[v] for v in truth], dtype=np.int64)
    y_pred = np.array([index[v] for v in predicted], dtype=np.int64)
    scores = classification_scores(y_true, y_pred, len(names))
    return {
        "accuracy": scores["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"],
        "macro_f1": scores["macro_f1"],
        "rows": int(len(truth)),
    }


def regression_scores(actual, predicted) -> dict[str, float]:
    """MAE, RMSE and R^2 of predicted against actual values (float64; any data kind). R^2 is 1 - SSE/SST
    around the actual values' own mean: 0 for predicting that mean, negative for worse; NaN when the
    actual values are constant (nothing to explain)."""
    y = np.asarray(actual, dtype=np.float64).reshape(-1)
    error = np.asarray(predicted, dtype=np.float64).reshape(-1) - y
    if len(y) == 0:
        raise ValueError("regression_scores needs at least one value")
    total = float(((y - y.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": 1.0 - float((error**2).sum()) / total if total > 0 else float("nan"),
        "rows": int(len(y)),
    }
