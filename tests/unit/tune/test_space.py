"""The search space: the architecture's own keys (``model.<key>`` in the network's section), checked
before any trial runs (alone and in pairs: d_model with heads), and each trial's params a validated copy."""

from __future__ import annotations

import copy

import optuna
import pytest

from pipeline import tune
from pipeline.core.errors import ParamsError
from pipeline.params import (
    DEFAULT_SPACES,
    TUNE_STORAGE_ENV,
    SearchDimension,
    TrainParams,
    TuneParams,
    parse_params,
    tune_storage_url,
)
from tests.conftest import make_params
from tests.unit.tune.conftest import example_raw, storage_of


def parse_error(raw: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_space_key_is_one_line_naming_it(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["tune"]["space"] = {"lrr": {"low": 0.001, "high": 0.1}}

    message = parse_error(raw)

    assert "tune.space" in message and "unknown train key 'lrr'" in message
    searchable = message.split("searchable:")[1]
    assert "lr" in searchable and "model.hidden" in searchable and "model.channels" not in searchable


@pytest.mark.parametrize(
    ("key", "dimension", "expected"),
    [
        ("lr", {"low": 0.1, "high": 0.01}, "tune.space.lr: low (0.1) must be below high (0.01)"),
        ("lr", {"low": 0.0, "high": 0.01, "log": True}, "tune.space.lr: a log range needs low > 0"),
        ("lr", {"low": 0.001}, "tune.space.lr: give low and high, or choices"),
        ("optimizer", {"low": 1, "high": 2}, "optimizer: a low/high range needs a numeric key"),
        ("batch_size", {"low": 16.5, "high": 64}, "batch_size is an integer, so low and high must be integers"),
        ("epochs", {"low": 1, "high": 9}, "train.epochs cannot be searched"),
        ("early_stopping", {"choices": [1]}, "train.early_stopping cannot be searched"),
        ("model.architecture", {"choices": ["mlp"]}, "train.model.architecture cannot be searched"),
        ("model.hidden", {"low": 8, "high": 64}, "model.hidden: a low/high range needs a numeric key"),
        ("model.channels", {"choices": [[8]]}, "'model.channels' is not a key of train.model (mlp)"),
    ],
)
def test_impossible_space_is_refused_naming_the_key(raw_params, key, dimension, expected):
    raw = copy.deepcopy(raw_params)
    raw["tune"]["space"] = {key: dimension}

    assert expected in parse_error(raw)


def test_space_values_are_checked_against_the_train_params(params):
    def check(space: dict, **tune_keys) -> str:
        with pytest.raises(ParamsError) as info:
            tune.check_space(params.train, params.tune.model_copy(update={"space": space, **tune_keys}))
        return str(info.value)

    assert "tune.space.batch_size: 0 is not a valid train value" in check({"batch_size": SearchDimension(choices=(64, 0))})
    assert "tune.space.model.dropout: 1.5 is not a valid train value: train.model.dropout" in check(
        {"model.dropout": SearchDimension(choices=(0.1, 1.5))}
    )
    train = tune.trial_params(params.train, {"warmup_epochs": 2}, 5)
    with pytest.raises(ParamsError) as info:
        tune.check_space(train, params.tune.model_copy(update={"epochs": 2}))
    assert "tune.epochs = 2" in str(info.value) and "warmup_epochs" in str(info.value)


def test_keys_that_do_not_fit_together_fail_before_any_trial(tmp_path):
    """seq_transformer: d_model must be a multiple of heads. Each value fits the other key's params
    value, but 40 with 16 heads does not; the search fails before reading data or opening a study."""
    params = make_params(
        example_raw("elecdemand"),
        tmp_path,
        train={"model": {"architecture": "seq_transformer"}},
        tune={"space": {"model.d_model": {"choices": [32, 40]}, "model.heads": {"choices": [4, 16]}}},
    )

    with pytest.raises(ParamsError) as info:
        tune.search(params, storage=storage_of(params), study_name="s", trials=1)

    assert str(info.value) == (
        "tune.space: model.d_model = 40 with model.heads = 16 is not a valid train value: "
        "train.model.d_model (40) must be a multiple of heads (16); list only values that fit together"
    )
    assert not (tmp_path / "reports/tune").exists()
    # A short integer range is checked value by value: 33 is not a multiple of the params' 4 heads.
    ranged = params.tune.model_copy(update={"space": {"model.d_model": SearchDimension(low=32, high=64)}})
    with pytest.raises(ParamsError) as info:
        tune.check_space(params.train, ranged)
    assert str(info.value).startswith("tune.space.model.d_model: 33 is not a valid train value")


@pytest.mark.parametrize("architecture", sorted(DEFAULT_SPACES))
def test_each_architecture_searches_its_own_default_space(architecture):
    base = TrainParams.model_validate({"model": {"architecture": architecture}, "epochs": 3})
    space = TuneParams().space_for(architecture)
    assert space == DEFAULT_SPACES[architecture]
    tune.check_space(base, TuneParams())
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=optuna.samplers.TPESampler(seed=0))

    values = tune.suggest(study.ask(), base, space)

    assert set(values) == set(space)
    network = {key.removeprefix("model.") for key in values if key.startswith("model.")}
    assert network and network <= set(type(base.model).model_fields)
    cfg = tune.trial_params(base, values, 2)
    assert cfg.model.architecture == architecture
    assert all(
        getattr(cfg.model, name) == getattr(base.model, name) or f"model.{name}" in values
        for name in type(base.model).model_fields
    )


def test_trial_params_are_a_validated_copy(params):
    base = params.train
    cfg = tune.trial_params(base, {"lr": 0.02, "model.hidden": [8, 4]}, 2)

    assert (cfg.lr, cfg.model.hidden, cfg.epochs) == (0.02, (8, 4), 2)
    assert (base.lr, base.model.hidden, base.epochs) == (0.01, (16,), 3)  # never mutated
    with pytest.raises(ParamsError) as info:
        tune.trial_params(base, {"model.dropout": 1.5}, 2)
    assert str(info.value) == "train.model.dropout: Input should be less than 1"


def test_the_first_trial_is_the_params_own_values_inside_the_space(params):
    space = {
        "lr": SearchDimension(low=0.001, high=0.1, log=True),
        "batch_size": SearchDimension(choices=(32, 128)),  # params: 64, not a choice
        "model.hidden": SearchDimension(choices=((16,), (32, 16))),
        "model.dropout": SearchDimension(low=0.3, high=0.5),  # params: 0.2, outside
    }

    assert tune.current_values(params.train, space) == {"lr": 0.01, "model.hidden": "[16]"}


def test_storage_comes_from_the_environment_then_params_then_sqlite(params, monkeypatch, tmp_path):
    assert storage_of(params) == f"sqlite:///{tmp_path / 'reports/tune/optuna.db'}"
    custom = params.tune.model_copy(update={"storage": "sqlite:///elsewhere.db"})
    assert tune_storage_url(custom, params.paths) == "sqlite:///elsewhere.db"
    monkeypatch.setenv(TUNE_STORAGE_ENV, "postgresql+psycopg://tuner:secret@db/optuna")
    assert tune_storage_url(custom, params.paths) == "postgresql+psycopg://tuner:secret@db/optuna"
    assert "secret" not in tune.redact("postgresql+psycopg://tuner:secret@db/optuna")
