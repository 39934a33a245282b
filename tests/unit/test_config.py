"""pipeline.config: the committed params load; bad params fail with a message naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipeline.core.errors import ParamsError
from pipeline.params import Params, load_params, parse_params

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "params.yaml"
RAW = yaml.safe_load(PARAMS_FILE.read_text())


def raw_params() -> dict:
    """A deep copy of the committed params.yaml as a plain dict, safe to modify."""
    return copy.deepcopy(RAW)


def parse_error(raw: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_committed_params_load():
    params = load_params(PARAMS_FILE)

    assert isinstance(params, Params)
    assert params.seed == RAW["seed"]
    assert params.ingest.target == RAW["ingest"]["target"]
    assert params.ingest.drop_columns == tuple(RAW["ingest"]["drop_columns"])
    assert params.train.hidden == tuple(RAW["train"]["hidden"])
    assert params.split.train + params.split.val + params.split.test == pytest.approx(1.0)
    assert params.clean.valid_ranges["realrinc"] == (0.0, None)


def test_parse_params_matches_load_params():
    assert parse_params(raw_params()) == load_params(PARAMS_FILE)


def test_params_are_frozen():
    params = parse_params(raw_params())

    with pytest.raises(ValidationError):
        params.train.lr = 1.0  # type: ignore[misc]
    assert params.train.lr == RAW["train"]["lr"]


def test_unknown_top_level_key_names_key_and_allowed_keys():
    raw = raw_params()
    raw["trian"] = {"lr": 0.1}

    message = parse_error(raw)

    assert "trian: unknown key" in message
    assert "allowed:" in message
    for section in ("augment", "clean", "ingest", "paths", "seed", "split", "train"):
        assert section in message.split("allowed:")[1]


def test_unknown_nested_key_names_dotted_key_and_section_keys():
    raw = raw_params()
    raw["train"]["lrr"] = 0.01

    message = parse_error(raw)

    assert "train.lrr: unknown key" in message
    allowed = message.split("allowed:")[1]
    for key in ("lr", "epochs", "optimizer", "warmup_epochs", "early_stopping"):
        assert key in allowed
    # The allowed keys are the train section's, not the top level's.
    assert "paths" not in allowed


def test_unknown_deeply_nested_key_lists_that_sections_keys():
    raw = raw_params()
    raw["train"]["early_stopping"]["metrc"] = "val_loss"

    message = parse_error(raw)

    assert "train.early_stopping.metrc: unknown key" in message
    assert message.split("allowed:")[1].strip() == "metric, min_delta, patience"


def test_wrong_type_names_key_and_value():
    raw = raw_params()
    raw["train"]["epochs"] = "ten"

    message = parse_error(raw)

    assert "train.epochs" in message
    assert "'ten'" in message
    assert "integer" in message


def test_negative_learning_rate_names_key_and_value():
    raw = raw_params()
    raw["train"]["lr"] = -0.01

    message = parse_error(raw)

    assert "train.lr" in message
    assert "-0.01" in message
    assert "greater than 0" in message


def test_split_fractions_must_sum_to_one():
    raw = raw_params()
    raw["split"].update(train=0.7, val=0.2, test=0.15)

    message = parse_error(raw)

    for key in ("split.train", "split.val", "split.test"):
        assert key in message
    assert "sum to 1" in message
    assert "1.05" in message


def test_unknown_optimizer_names_key_value_and_choices():
    raw = raw_params()
    raw["train"]["optimizer"] = "adamm"

    message = parse_error(raw)

    assert "train.optimizer" in message
    assert "'adamm'" in message
    for allowed in ("sgd", "adam", "adamw", "rmsprop"):
        assert f"'{allowed}'" in message


@pytest.mark.parametrize("warmup", [30, 31])
def test_warmup_must_be_shorter_than_training(warmup):
    raw = raw_params()
    raw["train"].update(epochs=30, warmup_epochs=warmup)

    message = parse_error(raw)

    assert f"train.warmup_epochs ({warmup})" in message
    assert "train.epochs (30)" in message


def test_warmup_one_less_than_epochs_is_accepted():
    raw = raw_params()
    raw["train"].update(epochs=30, warmup_epochs=29)

    assert parse_params(raw).train.warmup_epochs == 29


def test_every_problem_is_reported_on_one_line():
    raw = raw_params()
    raw["train"]["lr"] = -1.0
    raw["train"]["optimizer"] = "adamm"

    message = parse_error(raw)

    assert "train.lr" in message and "train.optimizer" in message


def test_missing_params_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "params.yaml"

    with pytest.raises(ParamsError) as info:
        load_params(path)

    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_invalid_yaml_names_the_path(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\ntrain: {lr: [0.1\n")

    with pytest.raises(ParamsError) as info:
        load_params(path)

    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- seed\n- 42\n")

    with pytest.raises(ParamsError) as info:
        load_params(path)

    assert str(path) in str(info.value)
    assert "expected a mapping" in str(info.value)


def test_missing_required_section_is_named():
    raw = raw_params()
    del raw["ingest"]

    message = parse_error(raw)

    assert "ingest: required key is missing" in message


def test_column_in_both_kind_overrides_is_refused():
    raw = raw_params()
    raw["ingest"].update(categorical=["occ10", "age"], numeric=["age"])

    message = parse_error(raw)

    assert "['age']" in message
    assert "ingest.categorical" in message and "ingest.numeric" in message


def test_valid_range_with_min_above_max_is_refused():
    raw = raw_params()
    raw["clean"]["valid_ranges"]["age"] = [89, 18]

    message = parse_error(raw)

    assert "clean.valid_ranges" in message
    assert "'age'" in message
    assert "min 89" in message and "max 18" in message


def test_prediction_log_url_prefers_the_environment(monkeypatch):
    from pipeline.params import ServeParams, prediction_log_url

    serve = ServeParams()
    monkeypatch.delenv("EVERGREEN_DATABASE_URL", raising=False)
    assert prediction_log_url(serve) == "sqlite:///data/predictions.sqlite"
    monkeypatch.setenv("EVERGREEN_DATABASE_URL", "postgresql+psycopg://evergreen:secret@127.0.0.1/log")
    assert prediction_log_url(serve).startswith("postgresql+psycopg://")
