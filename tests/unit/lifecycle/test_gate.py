import pytest

from pipeline.lifecycle.gate import baseline_key, decide, parity_passed, trained_baseline
from pipeline.params import GateParams

CFG = GateParams(metric="accuracy", tolerance=0.01)


def test_first_model_must_beat_the_majority_baseline():
    assert decide(0.60, None, 0.50, True, CFG).promote
    rejected = decide(0.50, None, 0.50, True, CFG)
    assert not rejected.promote and "majority baseline" in rejected.reason


@pytest.mark.parametrize("challenger, promote", [(0.70, True), (0.695, True), (0.69, True), (0.6899, False), (0.60, False)])
def test_challenger_needs_at_least_champion_minus_tolerance(challenger, promote):
    decision = decide(challenger, 0.70, 0.5, True, CFG)
    assert decision.promote is promote
    assert decision.champion == 0.70 and decision.challenger == challenger and decision.metric == "accuracy"
    assert ("<" in decision.reason) is (not promote)


def test_failed_parity_is_never_promoted_even_when_better():
    decision = decide(0.99, 0.70, 0.5, False, CFG)
    assert not decision.promote and "parity" in decision.reason


def test_parity_report_check():
    assert parity_passed({"label_mismatches": 0, "max_abs_probability_diff": 1e-6}, 1e-4)
    assert not parity_passed({"label_mismatches": 1, "max_abs_probability_diff": 1e-6}, 1e-4)
    assert not parity_passed({"label_mismatches": 0, "max_abs_probability_diff": 1e-3}, 1e-4)
    assert not parity_passed({}, 1e-4)


def test_forecast_parity_is_checked_in_target_stds():
    forecast = {"label_mismatches": 0, "max_abs_diff": 5e-4, "max_scaled_diff": 5e-5}  # a target with std 10
    assert parity_passed(forecast, 1e-4)
    assert not parity_passed({**forecast, "max_scaled_diff": 2e-4}, 1e-4)


@pytest.mark.parametrize("challenger, promote", [(0.30, True), (0.31, True), (0.3101, False)])
def test_errors_are_lower_better_within_the_tolerance(challenger, promote):
    decision = decide(challenger, 0.30, 0.50, True, GateParams(metric="mae", tolerance=0.01))
    assert decision.promote is promote


def test_a_first_regression_model_must_beat_the_seasonal_naive_baseline():
    cfg = GateParams(metric="mae", tolerance=0.01)
    assert decide(0.20, None, 0.25, True, cfg).promote
    rejected = decide(0.26, None, 0.25, True, cfg)
    assert not rejected.promote and "seasonal-naive baseline" in rejected.reason


def test_the_trained_baseline_is_the_strongest_other_baseline_for_the_metric():
    forecast = {
        "model": {"mae": 0.06},
        "baseline_seasonal_naive": {"mae": 0.33, "rmse": 0.48},
        "baseline_persistence": {"mae": 0.09, "rmse": 0.12},
    }
    assert trained_baseline(forecast, "mae") is None  # both naive forecasts are floors: the stronger is beaten outright
    assert trained_baseline({"baseline_majority": {"accuracy": 0.5}}, "accuracy") is None  # sequence classification
    images = {"baseline_majority": {"accuracy": 0.1}, "baseline_logreg": {"accuracy": 0.9, "macro_f1": 0.89}}
    assert trained_baseline(images, "macro_f1") == ("baseline_logreg", 0.89)


@pytest.mark.parametrize(
    "metrics, floor",
    [
        ({"baseline_seasonal_naive": {"mae": 0.33}, "baseline_persistence": {"mae": 0.09}}, "baseline_persistence"),
        ({"baseline_seasonal_naive": {"mae": 0.30}, "baseline_persistence": {"mae": 0.64}}, "baseline_seasonal_naive"),
    ],
)
def test_a_first_forecaster_must_beat_the_stronger_naive_forecast_outright(metrics, floor):
    cfg = GateParams(metric="mae", tolerance=0.05)  # the tolerance never loosens a first model's floor
    assert baseline_key("mae", metrics) == floor and trained_baseline(metrics, "mae") is None
    best = metrics[floor]["mae"]
    worse = decide(best + 0.001, None, best, True, cfg, None, floor)
    name = floor.removeprefix("baseline_").replace("_", "-")
    assert not worse.promote and f"does not beat the {name} baseline {best:.4f}" in worse.reason
    assert decide(best - 0.001, None, best, True, cfg, None, floor).promote


TABLE_REGRESSION = {
    "model": {"mae": 16985.0, "rmse": 35097.0},
    "baseline_mean": {"mae": 57964.0, "rmse": 78550.0},
    "baseline_hgb": {"mae": 16621.0, "rmse": 29274.0},
}


def test_a_table_regressors_floor_is_the_training_mean_and_its_trained_baseline_hgb():
    assert baseline_key("mae", TABLE_REGRESSION) == "baseline_mean"
    assert baseline_key("rmse", TABLE_REGRESSION) == "baseline_mean"
    assert trained_baseline(TABLE_REGRESSION, "mae") == ("baseline_hgb", 16621.0)
    forecast = {"baseline_seasonal_naive": {"mae": 0.3}, "baseline_persistence": {"mae": 0.1}}
    assert baseline_key("mae", forecast) == "baseline_persistence"  # the stronger naive forecast
    assert baseline_key("mae") == "baseline_seasonal_naive"  # callers without metrics keep the old answer
    assert baseline_key("accuracy", TABLE_REGRESSION) == "baseline_majority"


def test_a_first_table_regressor_is_gated_on_mae_in_target_units():
    cfg = GateParams(metric="mae", tolerance=500.0)  # dollars: errors take a tolerance in the target's units
    floor = baseline_key("mae", TABLE_REGRESSION)
    trained = trained_baseline(TABLE_REGRESSION, "mae")
    passed = decide(16985.0, None, 57964.0, True, cfg, trained, floor)
    assert passed.promote and "beats the mean baseline 57964.0000" in passed.reason
    assert "<= the hgb baseline 16621.0000 + tolerance 500.0" in passed.reason
    rejected = decide(17200.0, None, 57964.0, True, cfg, trained, floor)
    assert not rejected.promote and "> the hgb baseline" in rejected.reason
    worse_than_mean = decide(60000.0, None, 57964.0, True, cfg, trained, floor)
    assert not worse_than_mean.promote and "does not beat the mean baseline" in worse_than_mean.reason


def test_a_share_metric_still_refuses_a_tolerance_of_one_or_more():
    with pytest.raises(ValueError, match=r"gate.tolerance = 2.0 must be below 1 for gate.metric accuracy"):
        GateParams(metric="accuracy", tolerance=2.0)
