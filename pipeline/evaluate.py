"""Stage evaluate: score the model and two baselines on the test split.

Metrics (``paths.eval_metrics``, read by ``dvc metrics show/diff``): accuracy, balanced accuracy,
macro F1, one-vs-rest ROC AUC, log loss and expected calibration error for the model, the
majority-class baseline and scikit-learn's HistGradientBoostingClassifier (fitted on the same
training rows, with the same fitted category vocabulary). Per-class precision/recall go to
``paths.eval_per_class``; confusion, ROC, precision-recall and calibration data to
``paths.eval_plots`` for ``dvc plots``. Other data kinds reuse ``evaluate`` (with their own trained
baseline) and ``write_classification_reports``, so every kind writes the same files.

Inputs:  ``paths.split`` (train, test, schema), ``paths.preprocessor``, ``paths.model``
Outputs: ``paths.eval_metrics``, ``paths.eval_per_class``, ``paths.eval_plots``
Params:  ``evaluate``, ``seed``
Command: ``python -m pipeline.evaluate``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import precision_recall_curve, roc_curve

from pipeline.common import read_schema, read_table, split_file, stage_main, write_json
from pipeline.kinds import TABULAR, data_kind, kind_module
from pipeline.config import EvaluateParams, Paths
from pipeline.features import Preprocessor
from pipeline.inference import load_model, load_preprocessor, predict_proba
from pipeline.metrics import all_metrics, classification_scores, expected_calibration_error

log = logging.getLogger(__name__)

# HistGradientBoosting bins categorical features into at most 255 bins.
HGB_MAX_CATEGORIES = 250


def majority_proba(y_train: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """The majority-class baseline: always the training prior (its argmax is the majority class)."""
    prior = np.bincount(y_train, minlength=n_classes).astype(float) / len(y_train)
    return np.tile(prior, (n_rows, 1))


def baseline_matrix(frame: pd.DataFrame, preprocessor: Preprocessor) -> tuple[np.ndarray, list[bool]]:
    """Raw numeric values (HGB handles missing natively) plus the encoder's category codes."""
    _, x_cat = preprocessor.transform(frame)
    numeric = frame[[c.name for c in preprocessor.numeric]].to_numpy(dtype=np.float64, na_value=np.nan)
    is_categorical = [False] * numeric.shape[1] + [
        c.cardinality <= HGB_MAX_CATEGORIES for c in preprocessor.categorical
    ]
    return np.hstack([numeric, x_cat.astype(np.float64)]), is_categorical


def gradient_boosting_proba(
    train: pd.DataFrame, test: pd.DataFrame, preprocessor: Preprocessor, cfg: EvaluateParams, seed: int
) -> np.ndarray:
    """A strong tabular baseline, fitted on the training split (without augmented rows) and its encoder."""
    x_train, categorical = baseline_matrix(train, preprocessor)
    x_test, _ = baseline_matrix(test, preprocessor)
    y_train = preprocessor.encode_labels(train[preprocessor.target])
    model = HistGradientBoostingClassifier(
        max_iter=cfg.baseline_max_iter, categorical_features=categorical, random_state=seed
    )
    model.fit(x_train, y_train)
    proba = np.zeros((len(test), len(preprocessor.classes)))
    proba[:, model.classes_] = model.predict_proba(x_test)  # classes absent from training get 0
    return proba


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


def write_classification_reports(test_y: np.ndarray, proba: np.ndarray, classes: tuple[str, ...], cfg: EvaluateParams, paths: Paths) -> None:
    """Per-class precision/recall/F1 (``paths.eval_per_class``) and the plot data in ``paths.eval_plots``:
    confusion pairs, ROC, precision-recall and the reliability diagram. Any classifier's, of any data kind."""
    scores = classification_scores(test_y, proba.argmax(1), len(classes))
    per_class = {cls: {k: scores[k][i] for k in ("precision", "recall", "f1", "support")} for i, cls in enumerate(classes)}
    write_json(paths.eval_per_class, per_class)

    plots = Path(paths.eval_plots)
    plots.mkdir(parents=True, exist_ok=True)
    names = np.array(classes, dtype=object)
    pd.DataFrame({"actual": names[test_y], "predicted": names[proba.argmax(1)]}).to_csv(plots / "confusion.csv", index=False)
    for name, frame in curves(test_y, proba, cfg.curve_points).items():
        frame.to_csv(plots / f"{name}.csv", index=False)
    _, reliability = expected_calibration_error(test_y, proba, cfg.calibration_bins)
    pd.DataFrame(reliability).to_csv(plots / "calibration.csv", index=False)


def run(cfg: EvaluateParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Score the test split with the trained model and the baselines; write metrics and plot data."""
    if (kind := data_kind(paths.split)) != TABULAR:
        return kind_module(kind).evaluate(cfg, paths, seed)
    schema = read_schema(paths.split)
    train = read_table(split_file(paths.split, "train"))
    test = read_table(split_file(paths.split, "test"))
    preprocessor = load_preprocessor(paths.preprocessor)
    model = load_model(paths.model)

    test_y = preprocessor.encode_labels(test[schema.target])
    train_y = preprocessor.encode_labels(train[schema.target])
    proba = predict_proba(model, preprocessor, test)
    hgb_proba = gradient_boosting_proba(train, test, preprocessor, cfg, seed)
    metrics = evaluate(proba, test_y, train_y, hgb_proba, preprocessor.classes, cfg)
    write_json(paths.eval_metrics, metrics)
    write_classification_reports(test_y, proba, preprocessor.classes, cfg, paths)
    log.info(
        "test accuracy %.4f (HGB %.4f, majority %.4f), macro F1 %.4f (HGB %.4f)",
        metrics["model"]["accuracy"], metrics["baseline_hgb"]["accuracy"], metrics["baseline_majority"]["accuracy"],
        metrics["model"]["macro_f1"], metrics["baseline_hgb"]["macro_f1"],
    )
    return metrics


def main() -> None:
    stage_main(lambda p: run(p.evaluate, p.paths, p.seed))


if __name__ == "__main__":
    main()
