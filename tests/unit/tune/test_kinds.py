"""A short real search on each non-tabular kind, from its example's params: an LSTM forecaster
(elecdemand) and a CNN classifier (digits). The objective reads the task's own metrics, the space is
the architecture's default, and the best values are applied into the example's params file."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from pipeline import tune
from pipeline.core.errors import ParamsError
from pipeline.params import DEFAULT_SPACES, SearchDimension, load_params
from tests.conftest import REPO
from tests.unit.tune.conftest import example_workspace, storage_of

QUICK = {"epochs": 2, "num_threads": 1, "device": "cpu"}
SHORT = {"trials": 3, "epochs": 2, "pruner": {"method": "none"}, "space": None}  # space null: the architecture's default


@pytest.fixture(scope="module")
def forecast(tmp_path_factory):
    """elecdemand's first 600 half-hours, windows of 24 steps every 4th step (about 100 training windows)."""
    return example_workspace(
        "elecdemand",
        tmp_path_factory.mktemp("elecdemand"),
        ingest={"max_rows": 600, "min_rows": 100, "lookback": 24, "stride": 4},
        train=QUICK,
        tune=SHORT,
    )


def assert_in_space(values: dict, space: dict[str, SearchDimension]) -> None:
    """Exactly the space's keys, each value one of its choices or inside its range."""
    assert set(values) == set(space)
    for key, value in values.items():
        dimension = space[key]
        if dimension.choices is not None:
            assert (tuple(value) if isinstance(value, list) else value) in dimension.choices, key
        else:
            assert dimension.low <= value <= dimension.high, key


def own_values(train, space: dict[str, SearchDimension]) -> dict:
    """The params' own value of each key of the space (``model.<key>`` from the network's section)."""
    return {
        key: getattr(train.model, key[len("model.") :]) if key.startswith("model.") else getattr(train, key) for key in space
    }


def test_a_forecaster_is_tuned_on_its_own_metrics_and_space(forecast, tmp_path):
    params = forecast
    assert (params.train.model.architecture, params.train.early_stopping.metric) == ("lstm", "val_mae")

    summary = tune.search(params, storage=storage_of(params), study_name="forecast", trials=3)

    assert (summary["architecture"], summary["task"], summary["metric"], summary["direction"]) == (
        "lstm",
        "regression",
        "val_mae",
        "minimize",
    )
    assert summary["metrics"] == ["val_loss", "val_mae", "val_rmse"] and set(summary["best_metrics"]) == set(
        summary["metrics"]
    )
    assert summary["best_value"] == summary["best_metrics"]["val_mae"]
    assert (summary["complete"], summary["failed"]) == (3, 0)
    space = DEFAULT_SPACES["lstm"]
    assert "model.hidden" in space and "model.dropout" not in space  # an LSTM's own keys, not the MLP's
    assert_in_space(summary["best_train"], space)
    trials = optuna.load_study(study_name="forecast", storage=storage_of(params)).trials
    for trial in trials:
        assert_in_space(trial.user_attrs["train"], space)
    # The first trial is the example's own values (all in the default space): the best is never worse.
    own = own_values(params.train, space)
    assert_in_space(own, space)
    assert trials[0].user_attrs["train"] == own
    assert summary["best_value"] <= trials[0].value
    best_file = Path(params.paths.tune) / tune.BEST_PARAMS_FILE
    best = yaml.safe_load(best_file.read_text())
    assert (best["architecture"], best["task"], best["metric"]) == ("lstm", "regression", "val_mae")
    assert best["train"] == summary["best_train"] and best["metrics"] == summary["best_metrics"]

    # apply writes the network's keys into train.model of the (nested) example params file.
    params_file = tmp_path / "params.yaml"
    original = (REPO / "examples/elecdemand/params.yaml").read_text()
    params_file.write_text(original)
    changes = tune.apply(params_file, best_file)
    applied = load_params(params_file)
    assert (
        applied.train.model.hidden == best["train"]["model.hidden"]
        and applied.train.model.layers == best["train"]["model.layers"]
    )
    assert (applied.train.lr, applied.train.batch_size) == (best["train"]["lr"], best["train"]["batch_size"])
    assert set(changes) == set(space)
    raw = yaml.safe_load(params_file.read_text())
    assert "hidden" not in raw["train"] and raw["train"]["model"]["hidden"] == best["train"]["model.hidden"]


def test_a_metric_the_task_does_not_report_is_refused_before_a_study(forecast):
    train = forecast.train.model_copy(
        update={"early_stopping": forecast.train.early_stopping.model_copy(update={"metric": "val_accuracy"})}
    )
    params = forecast.model_copy(
        update={"train": train, "paths": forecast.paths.model_copy(update={"tune": f"{forecast.paths.tune}-refused"})}
    )

    with pytest.raises(ParamsError) as info:
        tune.search(params, storage=storage_of(params), study_name="refused", trials=1)

    assert "train.early_stopping.metric = 'val_accuracy' does not apply to regression" in str(info.value)
    assert not Path(params.paths.tune).exists()  # failed before a study was opened


def test_an_image_classifier_is_tuned_on_its_own_metrics_and_space(tmp_path):
    params = example_workspace(
        "digits",
        tmp_path,
        ingest={"max_rows": 300, "min_rows": 100},
        train={**QUICK, "model": {"channels": [8, 16]}, "early_stopping": {"metric": "val_accuracy"}},
        tune=SHORT,
    )

    summary = tune.search(params, storage=storage_of(params), study_name="digits", trials=3)

    assert (summary["architecture"], summary["task"], summary["metric"], summary["direction"]) == (
        "cnn",
        "classification",
        "val_accuracy",
        "maximize",
    )
    assert summary["metrics"] == ["val_loss", "val_accuracy", "val_macro_f1"] and set(summary["best_metrics"]) == set(
        summary["metrics"]
    )
    trials = optuna.load_study(study_name="digits", storage=storage_of(params)).trials
    assert summary["best_value"] == summary["best_metrics"]["val_accuracy"] == max(t.value for t in trials)
    assert_in_space(summary["best_train"], DEFAULT_SPACES["cnn"])
    assert set(summary["best_train"]) == {"lr", "batch_size", "weight_decay", "model.dropout"}
    assert trials[0].user_attrs["train"] == own_values(params.train, DEFAULT_SPACES["cnn"])
    assert summary["best_value"] >= trials[0].value
