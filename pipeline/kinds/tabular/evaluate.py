"""Tabular evaluate: the model on the test split beside a naive and a HistGradientBoosting baseline.

Classification: beside the majority class; regression: MAE, RMSE and R^2 in the target's units beside
the training mean (``baseline_mean``) and ``HistGradientBoostingRegressor``, with predicted-vs-actual and
residual plot data and the errors per decile of the actual value (``paths.eval_per_class``).
The HGB baseline is trained on the same encoded training rows (raw categories as categorical features),
so the comparison is with a strong, tuned-by-default model for tables, not a strawman.

Inputs:  ``paths.split``, ``paths.preprocessor``, ``paths.model``
Outputs: ``paths.eval_metrics``, ``paths.eval_per_class``, ``paths.eval_plots``
Params:  ``evaluate``, ``seed``
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from pipeline.core.errors import DataError
from pipeline.core.io import iter_table, read_column, read_table_sample, split_file, write_json
from pipeline.kinds.tabular.encoder import Preprocessor, load_preprocessor
from pipeline.kinds.tabular.schema import read_schema
from pipeline.kinds.tabular.split import target_bins
from pipeline.models import load_model
from pipeline.params import EvaluateParams, Paths
from pipeline.shared.metrics import regression_scores
from pipeline.shared.reports import evaluate, write_classification_reports, write_plot

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module, preprocessor: Preprocessor, frame: pd.DataFrame, batch_size: int = 8192
) -> np.ndarray:
    """Class probabilities [N, K] for raw rows: the saved encoder, then the network, then softmax."""
    x_num, x_cat = preprocessor.transform(frame)
    model.eval()
    out = [
        torch.softmax(model(torch.from_numpy(x_num[i : i + batch_size]), torch.from_numpy(x_cat[i : i + batch_size])), dim=1)
        for i in range(0, len(frame), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, len(preprocessor.classes)), np.float32)


@torch.no_grad()
def predict_values(
    model: torch.nn.Module, preprocessor: Preprocessor, frame: pd.DataFrame, batch_size: int = 8192
) -> np.ndarray:
    """A regressor's predictions [N] float32 in the target's units: the saved encoder, the network, the
    target scaling undone (as the exported graph does it)."""
    x_num, x_cat = preprocessor.transform(frame)
    model.eval()
    out = [
        model(torch.from_numpy(x_num[i : i + batch_size]), torch.from_numpy(x_cat[i : i + batch_size]))
        for i in range(0, len(frame), batch_size)
    ]
    scaled = torch.cat(out).numpy() if out else np.zeros((0, 1), np.float32)
    return preprocessor.decode_target(scaled)


# HistGradientBoosting bins categorical features into at most 255 bins.
HGB_MAX_CATEGORIES = 250


def baseline_matrix(frame: pd.DataFrame, preprocessor: Preprocessor) -> tuple[np.ndarray, list[bool]]:
    """Raw numeric values (HGB handles missing natively) plus the encoder's category codes."""
    _, x_cat = preprocessor.transform(frame)
    numeric = frame[[c.name for c in preprocessor.numeric]].to_numpy(dtype=np.float64, na_value=np.nan)
    is_categorical = [False] * numeric.shape[1] + [c.cardinality <= HGB_MAX_CATEGORIES for c in preprocessor.categorical]
    return np.hstack([numeric, x_cat.astype(np.float64)]), is_categorical


# Test rows scored at a time: memory holds one chunk of raw rows, whatever the test split's size.
SCORE_CHUNK_ROWS = 65_536


def fit_baseline(
    train: pd.DataFrame, preprocessor: Preprocessor, cfg: EvaluateParams, seed: int, regression: bool
) -> HistGradientBoostingClassifier | HistGradientBoostingRegressor:
    """A strong tabular baseline, fitted on training rows (without augmented rows) and the model's encoder:
    HGB on the class codes, or on the raw target for a regressor."""
    x_train, categorical = baseline_matrix(train, preprocessor)
    if regression:
        model = HistGradientBoostingRegressor(
            max_iter=cfg.baseline_max_iter, categorical_features=categorical, random_state=seed
        )
        return model.fit(x_train, train[preprocessor.target].to_numpy(dtype=np.float64))
    model = HistGradientBoostingClassifier(max_iter=cfg.baseline_max_iter, categorical_features=categorical, random_state=seed)
    return model.fit(x_train, preprocessor.encode_labels(train[preprocessor.target]))


def baseline_proba(baseline: HistGradientBoostingClassifier, rows: pd.DataFrame, preprocessor: Preprocessor) -> np.ndarray:
    proba = np.zeros((len(rows), len(preprocessor.classes)))
    proba[:, baseline.classes_] = baseline.predict_proba(
        baseline_matrix(rows, preprocessor)[0]
    )  # classes absent from training get 0
    return proba


def baseline_training_rows(paths: Paths, cfg: EvaluateParams, seed: int) -> tuple[pd.DataFrame, int]:
    """The training rows the baseline fits on: all of them up to ``evaluate.baseline_max_rows``, else a seeded
    sample of that many (the report says how many of how many), read without loading the whole split."""
    train, total = read_table_sample(split_file(paths.split, "train"), cfg.baseline_max_rows, seed)
    if len(train) < total:
        log.info("HGB baseline fitted on %d of %d training rows (evaluate.baseline_max_rows)", len(train), total)
    return train, total


def score_test(
    paths: Paths, model: torch.nn.Module, preprocessor: Preprocessor, baseline: Any, regression: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(actual, model, baseline) over the test split, chunk by chunk: labels (class codes) or target values;
    class probabilities [N, K] or values [N] in the target's units, for the model and the HGB baseline."""
    actual, ours, theirs = [], [], []
    for rows in iter_table(split_file(paths.split, "test"), SCORE_CHUNK_ROWS):
        if regression:
            actual.append(rows[preprocessor.target].to_numpy(dtype=np.float64))
            ours.append(predict_values(model, preprocessor, rows).astype(np.float64))
            theirs.append(baseline.predict(baseline_matrix(rows, preprocessor)[0]))
        else:
            actual.append(preprocessor.encode_labels(rows[preprocessor.target]))
            ours.append(predict_proba(model, preprocessor, rows))
            theirs.append(baseline_proba(baseline, rows, preprocessor))
    if not actual:
        raise DataError(f"{split_file(paths.split, 'test')}: the test split has no rows")
    return np.concatenate(actual), np.concatenate(ours), np.concatenate(theirs)


def regression_report(
    actual: np.ndarray, predicted: np.ndarray, train_mean: float, hgb: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any], dict[str, pd.DataFrame]]:
    """Metrics beside the training mean and HGB, the errors per decile of the actual value, and the plot tables."""
    model = regression_scores(actual, predicted)
    rows = model.pop("rows")
    baselines = {"mean": np.full(len(actual), train_mean), "hgb": hgb}
    scores = {name: regression_scores(actual, values) for name, values in baselines.items()}
    for values in scores.values():
        values.pop("rows")
    metrics: dict[str, Any] = {
        "task": "regression",
        "test_rows": rows,
        "model": model,
        "baseline_mean": scores["mean"],
        "baseline_hgb": scores["hgb"],
        "model_minus_hgb": {k: model[k] - scores["hgb"][k] for k in ("mae", "rmse", "r2")},
    }
    deciles = target_bins(pd.Series(actual)).to_numpy()
    per_decile = []
    for d in range(int(deciles.max()) + 1):
        mask = deciles == d
        per_decile.append(
            {
                "decile": d + 1,
                "actual_min": float(actual[mask].min()),
                "actual_max": float(actual[mask].max()),
                "model_mae": float(np.abs(predicted[mask] - actual[mask]).mean()),
                "hgb_mae": float(np.abs(hgb[mask] - actual[mask]).mean()),
                "mean_bias": float((predicted[mask] - actual[mask]).mean()),
            }
        )
    plots = {
        "predicted_vs_actual": pd.DataFrame({"actual": actual, "predicted": predicted, "hgb": hgb}),
        "residuals": pd.DataFrame({"predicted": predicted, "residual": actual - predicted}),
    }
    return metrics, {"per_actual_decile": per_decile}, plots


def run_regression(cfg: EvaluateParams, paths: Paths, seed: int) -> dict[str, Any]:
    """A regressor on the test split beside the training mean and HGB; metrics, breakdown and plot data."""
    schema = read_schema(paths.split)
    preprocessor = load_preprocessor(paths.preprocessor)
    model = load_model(paths.model)
    sample, total = baseline_training_rows(paths, cfg, seed)
    baseline = fit_baseline(sample, preprocessor, cfg, seed, regression=True)
    del sample
    actual, predicted, hgb = score_test(paths, model, preprocessor, baseline, regression=True)
    train_mean = float(read_column(split_file(paths.split, "train"), schema.target).astype("float64").mean())
    metrics, breakdown, plots = regression_report(actual, predicted, train_mean, hgb)
    if total > cfg.baseline_max_rows:  # said in the report only when it differs from the whole split
        metrics["baseline_hgb"]["train_rows"] = cfg.baseline_max_rows
    write_json(paths.eval_metrics, metrics)
    write_json(paths.eval_per_class, breakdown)  # no classes: the errors per decile of the actual value
    for name, table in plots.items():
        write_plot(paths.eval_plots, name, table)
    log.info(
        "test MAE %.4g (HGB %.4g, mean %.4g), RMSE %.4g (HGB %.4g), R2 %.4f (HGB %.4f) on %d rows",
        metrics["model"]["mae"],
        metrics["baseline_hgb"]["mae"],
        metrics["baseline_mean"]["mae"],
        metrics["model"]["rmse"],
        metrics["baseline_hgb"]["rmse"],
        metrics["model"]["r2"],
        metrics["baseline_hgb"]["r2"],
        metrics["test_rows"],
    )
    return metrics


def run(cfg: EvaluateParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Score the test split with the trained model and the baselines; write metrics and plot data."""
    schema = read_schema(paths.split)
    if schema.regression:
        return run_regression(cfg, paths, seed)
    preprocessor = load_preprocessor(paths.preprocessor)
    model = load_model(paths.model)
    sample, total = baseline_training_rows(paths, cfg, seed)
    baseline = fit_baseline(sample, preprocessor, cfg, seed, regression=False)
    del sample
    test_y, proba, hgb_proba = score_test(paths, model, preprocessor, baseline, regression=False)
    train_y = preprocessor.encode_labels(read_column(split_file(paths.split, "train"), schema.target))
    metrics = evaluate(proba, test_y, train_y, hgb_proba, preprocessor.classes, cfg)
    if total > cfg.baseline_max_rows:  # said in the report only when it differs from the whole split
        metrics["baseline_hgb"]["train_rows"] = cfg.baseline_max_rows
    write_json(paths.eval_metrics, metrics)
    write_classification_reports(test_y, proba, preprocessor.classes, cfg, paths)
    log.info(
        "test accuracy %.4f (HGB %.4f, majority %.4f), macro F1 %.4f (HGB %.4f)",
        metrics["model"]["accuracy"],
        metrics["baseline_hgb"]["accuracy"],
        metrics["baseline_majority"]["accuracy"],
        metrics["model"]["macro_f1"],
        metrics["baseline_hgb"]["macro_f1"],
    )
    return metrics
