import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from pipeline.shared.metrics import all_metrics, classification_scores, expected_calibration_error, regression_scores


@pytest.fixture
def predictions():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=500)
    logits = rng.normal(size=(500, 4)) + 2 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba


def test_scores_match_scikit_learn(predictions):
    y, proba = predictions
    pred = proba.argmax(1)
    scores = classification_scores(y, pred, 4)
    assert scores["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert scores["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    metrics = all_metrics(y, proba, bins=10)
    assert metrics["log_loss"] == pytest.approx(log_loss(y, proba), rel=1e-6)
    assert metrics["roc_auc_ovr"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))


def test_class_absent_from_test_is_skipped_in_macro_averages():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 2])
    scores = classification_scores(y, pred, 3)
    assert scores["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert scores["support"] == [2, 2, 0]


def test_expected_calibration_error():
    # Confidence 0.8 everywhere, right 80% of the time: perfectly calibrated.
    y = np.array([0] * 8 + [1] * 2)
    proba = np.tile([0.8, 0.2], (10, 1))
    ece, points = expected_calibration_error(y, proba, bins=10)
    assert ece == pytest.approx(0.0, abs=1e-12)
    assert points == [{"confidence": 0.8, "accuracy": 0.8, "count": 10}]
    # Right only half the time at confidence 0.8: ECE = 0.3.
    ece, _ = expected_calibration_error(np.array([0] * 5 + [1] * 5), proba, bins=10)
    assert ece == pytest.approx(0.3)


def test_regression_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    actual = rng.normal(100, 20, size=200)
    predicted = actual + rng.normal(0, 5, size=200)
    scores = regression_scores(actual, predicted.astype(np.float32))
    assert scores["mae"] == pytest.approx(mean_absolute_error(actual, predicted), rel=1e-5)
    assert scores["rmse"] == pytest.approx(np.sqrt(mean_squared_error(actual, predicted)), rel=1e-5)
    assert scores["r2"] == pytest.approx(r2_score(actual, predicted), rel=1e-5)
    assert scores["rows"] == 200
    assert regression_scores(actual, np.full(200, actual.mean()))["r2"] == pytest.approx(0.0)
    assert np.isnan(regression_scores(np.ones(5), np.zeros(5))["r2"])  # a constant target: nothing to explain
