import numpy as np
import pytest

from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.evaluate import baseline_matrix, baseline_proba, fit_baseline
from pipeline.params import EvaluateParams, TabularFeatures
from pipeline.shared.reports import curves, evaluate, majority_proba


def test_majority_baseline_predicts_the_training_majority():
    proba = majority_proba(np.array([2, 2, 2, 0, 1]), n_rows=4, n_classes=3)
    assert proba.shape == (4, 3)
    np.testing.assert_allclose(proba[0], [0.2, 0.2, 0.6])
    assert set(proba.argmax(1)) == {2}


def test_gradient_boosting_baseline_learns_and_uses_the_fitted_vocabulary(table, schema):
    train, test = table.iloc[:450], table.iloc[450:]
    pre = Preprocessor.fit(train, schema, TabularFeatures())
    x, categorical = baseline_matrix(test, pre)
    assert categorical == [False, False, True]
    assert np.isnan(x[:, 0]).any()  # HGB gets raw numbers with their missing values
    baseline = fit_baseline(train, pre, EvaluateParams(baseline_max_iter=50), seed=0, regression=False)
    proba = baseline_proba(baseline, test, pre)
    y = pre.encode_labels(test["label"])
    assert (proba.argmax(1) == y).mean() > 0.75
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_metrics_file_puts_model_and_baselines_side_by_side(table, schema):
    pre = Preprocessor.fit(table, schema, TabularFeatures())
    y = pre.encode_labels(table["label"])
    perfect = np.eye(3)[y] * 0.98 + 0.01 / 1.5
    metrics = evaluate(perfect, y, y, perfect, pre.classes, EvaluateParams())
    assert set(metrics) == {"test_rows", "model", "baseline_majority", "baseline_hgb", "model_minus_hgb"}
    assert metrics["model"]["accuracy"] == 1.0
    assert metrics["baseline_majority"]["accuracy"] == pytest.approx(np.bincount(y).max() / len(y))
    assert metrics["model_minus_hgb"]["accuracy"] == 0.0


def test_curves_are_on_a_fixed_grid():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300)
    out = curves(y, proba, points=11)
    assert list(out["roc"].columns) == ["fpr", "tpr"] and len(out["roc"]) == 11
    assert out["roc"]["tpr"].is_monotonic_increasing
    assert out["precision_recall"]["precision"].between(0, 1).all()
