"""Tabular evaluate: the model on the test split beside the majority class and a HistGradientBoosting baseline.

The baseline is trained on the same encoded training rows (raw categories as categorical features), so
the comparison is with a strong, tuned-by-default model for tables, not a strawman."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from pipeline.core.io import read_table, split_file, write_json
from pipeline.kinds.tabular.encoder import Preprocessor, load_preprocessor
from pipeline.kinds.tabular.schema import read_schema
from pipeline.models import load_model
from pipeline.params import EvaluateParams, Paths
from pipeline.shared.reports import evaluate, write_classification_reports

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


# HistGradientBoosting bins categorical features into at most 255 bins.
HGB_MAX_CATEGORIES = 250


def baseline_matrix(frame: pd.DataFrame, preprocessor: Preprocessor) -> tuple[np.ndarray, list[bool]]:
    """Raw numeric values (HGB handles missing natively) plus the encoder's category codes."""
    _, x_cat = preprocessor.transform(frame)
    numeric = frame[[c.name for c in preprocessor.numeric]].to_numpy(dtype=np.float64, na_value=np.nan)
    is_categorical = [False] * numeric.shape[1] + [c.cardinality <= HGB_MAX_CATEGORIES for c in preprocessor.categorical]
    return np.hstack([numeric, x_cat.astype(np.float64)]), is_categorical


def gradient_boosting_proba(
    train: pd.DataFrame, test: pd.DataFrame, preprocessor: Preprocessor, cfg: EvaluateParams, seed: int
) -> np.ndarray:
    """A strong tabular baseline, fitted on the training split (without augmented rows) and its encoder."""
    x_train, categorical = baseline_matrix(train, preprocessor)
    x_test, _ = baseline_matrix(test, preprocessor)
    y_train = preprocessor.encode_labels(train[preprocessor.target])
    model = HistGradientBoostingClassifier(max_iter=cfg.baseline_max_iter, categorical_features=categorical, random_state=seed)
    model.fit(x_train, y_train)
    proba = np.zeros((len(test), len(preprocessor.classes)))
    proba[:, model.classes_] = model.predict_proba(x_test)  # classes absent from training get 0
    return proba


def run(cfg: EvaluateParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Score the test split with the trained model and the baselines; write metrics and plot data."""
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
        metrics["model"]["accuracy"],
        metrics["baseline_hgb"]["accuracy"],
        metrics["baseline_majority"]["accuracy"],
        metrics["model"]["macro_f1"],
        metrics["baseline_hgb"]["macro_f1"],
    )
    return metrics
