"""Image evaluate: score the test images with the CNN, the majority class and a pixel baseline.

Inputs:  ``paths.split``/train.npz (the baselines' training data, not augmented) and test.npz,
         ``paths.model``, ``paths.preprocessor`` (the normaliser).
Outputs: ``paths.eval_metrics``, ``paths.eval_per_class``, ``paths.eval_plots`` (the tabular kind's reports).
Params:  ``evaluate``, ``seed``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from pipeline.core.io import write_json
from pipeline.kinds.image.data import SCORING_BATCH, read_images, split_path
from pipeline.kinds.image.encoder import ImageNormaliser, label_codes, load_normaliser
from pipeline.models import load_model
from pipeline.params import EvaluateParams, Paths
from pipeline.shared.reports import evaluate as metrics_of
from pipeline.shared.reports import write_classification_reports

log = logging.getLogger(__name__)


def predict_images(
    model: torch.nn.Module, encoder: ImageNormaliser, x: np.ndarray, batch_size: int = SCORING_BATCH
) -> np.ndarray:
    """Class probabilities [N, K] for raw images: normalised with the saved encoder, then the network, then softmax."""
    model.eval()
    with torch.no_grad():
        batches = (torch.from_numpy(encoder.transform(x[i : i + batch_size])) for i in range(0, len(x), batch_size))
        out = [torch.softmax(model(images), dim=1) for images in batches]
    return torch.cat(out).numpy() if out else np.zeros((0, len(encoder.classes)), np.float32)


def logistic_proba(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    n_classes: int,
    value_range: tuple[float, float],
    cfg: EvaluateParams,
    seed: int,
) -> np.ndarray:
    """A pixel baseline: multinomial logistic regression on the flattened images scaled to 0..1.
    (Gradient boosting on 64 pixels took minutes here, against a second for this.)"""
    low, high = value_range
    scale = (high - low) or 1.0
    flat = lambda x: ((x - low) / scale).reshape(len(x), -1)  # noqa: E731
    model = LogisticRegression(max_iter=cfg.baseline_max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # capped on purpose by evaluate.baseline_max_iter
        model.fit(flat(train_x), train_y)
    proba = np.zeros((len(test_x), n_classes))
    proba[:, model.classes_] = model.predict_proba(flat(test_x))  # classes absent from training get 0
    return proba


def run(cfg: EvaluateParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Score the test images with the CNN, the majority class and the pixel baseline; write metrics and plot data."""
    encoder = load_normaliser(paths.preprocessor)
    classes = encoder.classes
    model = load_model(paths.model)
    train_x, train_y = read_images(split_path(paths.split, "train"))  # real images: the baselines see no augmentation
    test_x, test_y = read_images(split_path(paths.split, "test"))
    train_codes, test_codes = label_codes(train_y, classes), label_codes(test_y, classes)
    proba = predict_images(model, encoder, test_x)
    baseline = logistic_proba(train_x, train_codes, test_x, len(classes), encoder.value_range, cfg, seed)
    metrics = metrics_of(proba, test_codes, train_codes, baseline, classes, cfg, baseline="logreg")
    write_json(paths.eval_metrics, metrics)
    write_classification_reports(test_codes, proba, classes, cfg, paths)
    log.info(
        "test accuracy %.4f (pixel logistic regression %.4f, majority %.4f), macro F1 %.4f",
        metrics["model"]["accuracy"],
        metrics["baseline_logreg"]["accuracy"],
        metrics["baseline_majority"]["accuracy"],
        metrics["model"]["macro_f1"],
    )
    return metrics
