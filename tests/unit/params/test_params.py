"""pipeline.params: the committed params and both examples load as their kind's params; a key of another
kind or architecture, a combination that does not fit, a non-finite number or broken YAML fails with one
line naming the key."""

from __future__ import annotations

import copy
import os
import re

import pytest
import yaml
from pydantic import ValidationError

from pipeline.core.errors import ParamsError
from pipeline.params import (
    ARCHITECTURES,
    AUTO_WORKERS_MAX,
    DEFAULT_SPACES,
    KINDS,
    ImageParams,
    SearchDimension,
    SequenceParams,
    ServeParams,
    TabularParams,
    TextParams,
    TuneParams,
    load_params,
    parse_params,
    prediction_log_url,
    serve_workers,
    usable_cpus,
)
from tests.conftest import REPO

FILES = {
    "tabular": REPO / "params.yaml",
    "image": REPO / "examples/digits/params.yaml",
    "sequence": REPO / "examples/elecdemand/params.yaml",
    "text": REPO / "examples/tweets/params.yaml",
}
CLASSES = {"tabular": TabularParams, "image": ImageParams, "sequence": SequenceParams, "text": TextParams}
RAW = {kind: yaml.safe_load(path.read_text()) for kind, path in FILES.items()}
PARAMS_FILE = FILES["tabular"]


def raw_params(kind: str = "tabular") -> dict:
    """A deep copy of a committed params file as a plain dict, safe to modify."""
    return copy.deepcopy(RAW[kind])


def parse_error(raw: dict, key: str | None = None) -> str:
    """The error of invalid params: one line, saying where, naming ``key`` when given."""
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("params.yaml: ")
    if key is not None:
        assert key in message
    return message


def allowed(message: str) -> list[str]:
    """The keys an unknown-key message lists as allowed."""
    return message.split("allowed: ")[1].split("; ")[0].split(", ")


def with_model(kind: str, **model) -> dict:
    raw = raw_params(kind)
    raw["train"]["model"] = model
    return raw


# ---------------------------------------------------------------- the committed files


def test_committed_params_load():
    params = load_params(PARAMS_FILE)
    raw = RAW["tabular"]

    assert isinstance(params, TabularParams)
    assert params.seed == raw["seed"]
    assert params.ingest.kind == "tabular"
    assert params.ingest.target == raw["ingest"]["target"]
    assert params.ingest.drop_columns == tuple(raw["ingest"]["drop_columns"])
    assert params.train.model.architecture == "mlp"
    assert params.train.model.hidden == tuple(raw["train"]["model"]["hidden"])
    assert params.split.train + params.split.val + params.split.test == pytest.approx(1.0)
    assert params.clean.valid_ranges["realrinc"] == (0.0, None)


def test_the_examples_load_as_their_kind():
    image, raw = load_params(FILES["image"]), RAW["image"]
    assert isinstance(image, ImageParams)
    assert image.ingest.kind == "image" and image.ingest.mode == raw["ingest"]["mode"]
    assert image.train.model.architecture == "cnn"
    assert image.train.model.channels == tuple(raw["train"]["model"]["channels"])
    assert image.augment.copies == raw["augment"]["copies"]
    assert image.augment.rotation.enabled == raw["augment"]["rotation"]["enabled"]

    sequence, raw = load_params(FILES["sequence"]), RAW["sequence"]
    assert isinstance(sequence, SequenceParams)
    assert sequence.ingest.kind == "sequence" and sequence.ingest.time_column == raw["ingest"]["time_column"]
    assert sequence.ingest.lookback == raw["ingest"]["lookback"] and sequence.ingest.stride == raw["ingest"]["stride"]
    assert sequence.train.model.architecture == raw["train"]["model"]["architecture"]
    assert sequence.train.model.hidden == raw["train"]["model"]["hidden"]
    assert sequence.clean.impute == raw["clean"]["impute"] and sequence.features.scale == raw["features"]["scale"]


@pytest.mark.parametrize("kind", ["image", "sequence"])
def test_each_example_is_a_complete_file_with_the_committed_paths(kind):
    """``cp examples/<name>/params.yaml params.yaml`` is the whole switch: every section is there and the
    files and folders are the committed ones (dvc.yaml templates them)."""
    assert RAW[kind].keys() == RAW["tabular"].keys()
    assert load_params(FILES[kind]).paths == load_params(PARAMS_FILE).paths


@pytest.mark.parametrize("kind", KINDS)
def test_parse_params_matches_load_params(kind):
    params = parse_params(raw_params(kind))

    assert type(params) is CLASSES[kind]
    assert params == load_params(FILES[kind])


def test_params_are_frozen():
    params = parse_params(raw_params())

    with pytest.raises(ValidationError):
        params.train.lr = 1.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        params.train.model.dropout = 0.5  # type: ignore[misc]
    assert params.train.lr == RAW["tabular"]["train"]["lr"]


# ---------------------------------------------------------------- keys: unknown, wrong type, impossible


def test_unknown_top_level_key_names_key_and_allowed_keys():
    raw = raw_params()
    raw["trian"] = {"lr": 0.1}

    message = parse_error(raw, "trian: unknown key")

    for section in ("augment", "clean", "features", "ingest", "paths", "seed", "split", "train", "tune"):
        assert section in allowed(message)


def test_unknown_nested_key_names_dotted_key_and_section_keys():
    raw = raw_params()
    raw["train"]["lrr"] = 0.01

    message = parse_error(raw, "train.lrr: unknown key")

    for key in ("lr", "epochs", "optimizer", "warmup_epochs", "early_stopping", "model"):
        assert key in allowed(message)
    # The allowed keys are the train section's, not the top level's.
    assert "paths" not in allowed(message)


def test_unknown_deeply_nested_key_lists_that_sections_keys():
    raw = raw_params()
    raw["train"]["early_stopping"]["metrc"] = "val_loss"

    message = parse_error(raw, "train.early_stopping.metrc: unknown key")

    assert allowed(message) == ["metric", "min_delta", "patience"]


def test_wrong_type_names_key_and_value():
    raw = raw_params()
    raw["train"]["epochs"] = "ten"

    message = parse_error(raw, "train.epochs")

    assert "'ten'" in message
    assert "integer" in message


def test_negative_learning_rate_names_key_and_value():
    raw = raw_params()
    raw["train"]["lr"] = -0.01

    message = parse_error(raw, "train.lr")

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

    message = parse_error(raw, "train.optimizer")

    assert "'adamm'" in message
    for choice in ("sgd", "adam", "adamw", "rmsprop"):
        assert f"'{choice}'" in message


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


def test_missing_required_section_is_named():
    raw = raw_params()
    del raw["ingest"]

    parse_error(raw, "ingest: required key is missing")


def test_column_in_both_kind_overrides_is_refused():
    raw = raw_params()
    raw["ingest"].update(categorical=["occ10", "age"], numeric=["age"])

    message = parse_error(raw, "['age']")

    assert "ingest.categorical" in message and "ingest.numeric" in message


def test_valid_range_with_min_above_max_is_refused():
    raw = raw_params()
    raw["clean"]["valid_ranges"]["age"] = [89, 18]

    message = parse_error(raw, "clean.valid_ranges")

    assert "'age'" in message
    assert "min 89" in message and "max 18" in message


# ---------------------------------------------------------------- the data kind selects every data section


def test_an_unknown_kind_lists_the_kinds():
    raw = raw_params()
    raw["ingest"]["kind"] = "video"

    message = parse_error(raw, "ingest.kind = 'video'")

    assert "unknown data kind" in message
    assert "tabular, image, sequence, text" in message


@pytest.mark.parametrize(
    ("kind", "section", "key", "value", "own_key"),
    [
        ("tabular", "clean", "impute", "ffill", "valid_ranges"),  # a sequence key
        ("tabular", "ingest", "lookback", 24, "time_column"),  # a sequence key
        ("tabular", "ingest", "mode", "rgb", "categorical"),  # an image key
        ("tabular", "augment", "rotation", {"enabled": True}, "mixup"),  # an image key
        ("tabular", "features", "rare_min", 3, "rare_min_count"),  # a typo
        ("image", "ingest", "time_column", "year", "mode"),  # images have no time column
        ("image", "ingest", "categorical", ["occ10"], "size"),  # a tabular key
        ("image", "clean", "valid_ranges", {"x": [0, 1]}, "labels"),  # no valid ranges for pixels
        ("image", "augment", "mixup", {"enabled": True}, "rotation"),  # a tabular key
        ("sequence", "ingest", "window_periods", 3, "lookback"),  # tabular only
        ("sequence", "ingest", "id_columns", ["id"], "series_column"),  # tabular only
        ("sequence", "clean", "drop_duplicates", True, "impute"),  # tabular and image only
        ("sequence", "augment", "gaussian_noise", {"enabled": True}, "jitter"),  # a tabular key
        ("sequence", "features", "rare_min_count", 3, "scale"),  # a tabular key
    ],
)
def test_each_data_section_holds_only_the_active_kinds_keys(kind, section, key, value, own_key):
    raw = raw_params(kind)
    raw[section][key] = value

    message = parse_error(raw, f"{section}.{key}: unknown key; allowed: ")

    assert own_key in allowed(message) and key not in allowed(message)


def test_the_image_features_section_takes_no_keys():
    raw = raw_params("image")
    raw["features"] = {"scale": True}

    parse_error(raw, "features.scale: unknown key")


@pytest.mark.parametrize(
    ("kind", "section", "key"),
    [
        ("image", "ingest", "image"),
        ("image", "augment", "image"),
        ("sequence", "ingest", "sequence"),
        ("sequence", "clean", "sequence"),
    ],
)
def test_the_old_nested_kind_sections_are_refused(kind, section, key):
    """``ingest.image.mode`` is now ``ingest.mode`` in an image file: the old nesting is an unknown key."""
    raw = raw_params(kind)
    raw[section][key] = {}

    parse_error(raw, f"{section}.{key}: unknown key")


# ---------------------------------------------------------------- train.model: the architecture selects the keys


@pytest.mark.parametrize(
    ("kind", "architecture"),
    [("tabular", "cnn"), ("tabular", "lstm"), ("image", "mlp"), ("sequence", "mlp"), ("sequence", "cnn")],
)
def test_an_architecture_that_does_not_fit_the_kind_names_both(kind, architecture):
    message = parse_error(with_model(kind, architecture=architecture), f"train.model.architecture = {architecture!r}")

    assert f"does not fit ingest.kind {kind!r}" in message
    assert message.endswith("choose " + " or ".join(ARCHITECTURES[kind]))


def test_an_unknown_architecture_names_the_choices():
    message = parse_error(with_model("tabular", architecture="resnet"), "train.model.architecture = 'resnet'")

    assert "choose mlp or ft_transformer" in message


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_architecture_is_named_with_the_choices(kind):
    raw = raw_params(kind)
    del raw["train"]["model"]["architecture"]

    message = parse_error(raw, "train.model.architecture: required key is missing")

    assert "choose " + " or ".join(ARCHITECTURES[kind]) in message


@pytest.mark.parametrize("kind", KINDS)
def test_without_a_model_section_the_kind_trains_its_first_architecture(kind):
    raw = raw_params(kind)
    del raw["train"]["model"]

    model = parse_params(raw).train.model

    assert model.architecture == ARCHITECTURES[kind][0]
    assert model == type(model)(architecture=model.architecture)  # with that architecture's defaults


@pytest.mark.parametrize(
    ("kind", "model", "key", "own_key"),
    [
        ("tabular", {"architecture": "mlp", "channels": [8]}, "channels", "hidden"),
        ("tabular", {"architecture": "mlp", "d_token": 16}, "d_token", "embedding_dim"),
        ("tabular", {"architecture": "ft_transformer", "hidden": [8]}, "hidden", "d_token"),
        ("image", {"architecture": "cnn", "hidden": [8]}, "hidden", "channels"),
        ("sequence", {"architecture": "lstm", "d_model": 32}, "d_model", "bidirectional"),
        ("sequence", {"architecture": "seq_transformer", "bidirectional": True}, "bidirectional", "pooling"),
    ],
)
def test_keys_of_another_architecture_are_unknown_keys(kind, model, key, own_key):
    message = parse_error(with_model(kind, **model), f"train.model.{key}: unknown key; allowed: ")

    assert own_key in allowed(message) and key not in allowed(message)
    assert "architecture" in allowed(message)


@pytest.mark.parametrize(
    "key", ["hidden", "dropout", "batch_norm", "architecture", "transformer", "cnn", "channels_last", "rnn"]
)
def test_the_old_flat_train_keys_are_refused(key):
    raw = raw_params()
    raw["train"][key] = raw["train"]["model"].get(key, {})

    message = parse_error(raw, f"train.{key}: unknown key")

    assert "model" in allowed(message)


@pytest.mark.parametrize("architecture", ["lstm", "gru"])
def test_lstm_and_gru_share_their_keys(architecture):
    model = parse_params(
        with_model("sequence", architecture=architecture, hidden=32, layers=2, bidirectional=True)
    ).train.model

    assert (model.architecture, model.hidden, model.layers, model.bidirectional) == (architecture, 32, 2, True)


def test_an_architectures_own_checks_name_the_key():
    message = parse_error(with_model("tabular", architecture="ft_transformer", d_token=30, heads=8), "train.model")

    assert "train.model.d_token (30) must be a multiple of heads (8)" in message


# ---------------------------------------------------------------- split methods per kind


@pytest.mark.parametrize(
    ("kind", "method", "choices"),
    [("image", "time", "stratified"), ("image", "group", "stratified"), ("sequence", "stratified", "time or group")],
)
def test_a_split_method_the_kind_cannot_use_is_refused(kind, method, choices):
    raw = raw_params(kind)
    raw["split"].update(method=method, group_column="series" if method == "group" else None)

    message = parse_error(raw, f"split.method {method!r}")

    assert f"does not apply to ingest.kind {kind!r}; choose {choices}" in message


@pytest.mark.parametrize(("kind", "method"), [("tabular", "stratified"), ("tabular", "group"), ("sequence", "group")])
def test_the_split_methods_a_kind_allows_load(kind, method):
    raw = raw_params(kind)
    raw["split"].update(method=method, group_column="series" if method == "group" else None)

    assert parse_params(raw).split.method == method


# ---------------------------------------------------------------- tune.space: keys of the active architecture


def with_space(kind: str = "tabular", network: dict | None = None, /, **space) -> dict:
    """A params file whose ``tune.space`` is ``space`` (``model__hidden`` for ``model.hidden``), with
    ``network`` as ``train.model`` when given."""
    raw = raw_params(kind) if network is None else with_model(kind, **network)
    raw["tune"]["space"] = {key.replace("__", "."): value for key, value in space.items()}
    return raw


@pytest.mark.parametrize(
    ("kind", "architecture"), [(kind, architecture) for kind, names in ARCHITECTURES.items() for architecture in names]
)
def test_without_a_space_each_architecture_searches_its_default(kind, architecture):
    """``tune.space: null`` (as committed): the architecture's default space, valid for it."""
    params = parse_params(with_model(kind, architecture=architecture))

    assert params.tune.space is None
    assert params.tune.space_for(architecture) == DEFAULT_SPACES[architecture]
    assert any(key.startswith("model.") for key in DEFAULT_SPACES[architecture])  # the network's own keys too


def test_a_given_space_is_the_one_in_force():
    params = parse_params(with_space(lr={"low": 1e-4, "high": 1e-2, "log": True}, model__hidden={"choices": [[16], [32, 16]]}))

    space = params.tune.space_for("mlp")
    assert space == {
        "lr": SearchDimension(low=1e-4, high=1e-2, log=True),
        "model.hidden": SearchDimension(choices=((16,), (32, 16))),
    }
    assert TuneParams().space_for("cnn") == DEFAULT_SPACES["cnn"]


@pytest.mark.parametrize(
    ("kind", "model", "key", "choices"),
    [
        ("tabular", {"architecture": "mlp"}, "model.embedding_dim", (4, 8)),
        ("tabular", {"architecture": "ft_transformer", "d_token": 16, "heads": 2}, "model.d_token", (16, 32)),
        ("image", {"architecture": "cnn"}, "model.channels", ((16, 32), (32, 64))),
        ("sequence", {"architecture": "seq_transformer"}, "model.pooling", ("last", "mean")),
        ("sequence", {"architecture": "gru"}, "model.bidirectional", (False, True)),
    ],
)
def test_a_key_of_the_active_network_can_be_searched(kind, model, key, choices):
    params = parse_params(with_space(kind, model, **{key.replace(".", "__"): {"choices": choices}}))

    assert params.tune.space_for(model["architecture"])[key] == SearchDimension(choices=choices)


@pytest.mark.parametrize(
    ("kind", "model", "key"),
    [
        ("tabular", {"architecture": "mlp"}, "model.channels"),  # the CNN's
        ("tabular", {"architecture": "ft_transformer"}, "model.hidden"),  # the MLP's
        ("image", {"architecture": "cnn"}, "model.hidden"),
        ("sequence", {"architecture": "lstm"}, "model.d_model"),  # the sequence transformer's
    ],
)
def test_a_key_of_another_architecture_is_refused(kind, model, key):
    network = parse_params(with_model(kind, **model)).train.model
    own_keys = {f"model.{name}" for name in type(network).model_fields if name != "architecture"}

    message = parse_error(
        with_space(kind, model, **{key.replace(".", "__"): {"choices": [[8], [16]]}}), f"tune.space: {key!r}"
    )

    assert f"is not a key of train.model ({model['architecture']})" in message
    searchable = message.split("searchable: ")[1].split(", ")
    assert "lr" in searchable and key not in searchable
    assert {name for name in searchable if name.startswith("model.")} == own_keys


def test_an_unknown_or_old_flat_key_is_refused():
    message = parse_error(with_space(hidden={"choices": [[8], [16]]}), "tune.space: unknown train key 'hidden'")

    assert "model.hidden" in message.split("searchable: ")[1].split(", ")
    parse_error(with_space(ddp={"choices": [1, 2]}), "tune.space: unknown train key 'ddp'")  # a sub-section


@pytest.mark.parametrize("key", ["epochs", "early_stopping", "model", "model.architecture"])
def test_unsearchable_keys_are_refused(key):
    message = parse_error(
        with_space(**{key.replace(".", "__"): {"choices": [1, 2]}}), f"tune.space: train.{key} cannot be searched"
    )

    assert "tune.epochs" in message


def test_a_range_needs_a_numeric_key_and_an_integer_key_integer_bounds():
    parse_error(with_space(optimizer={"low": 1, "high": 2}), "tune.space: optimizer: a low/high range needs a numeric key")
    parse_error(with_space(batch_size={"low": 64.5, "high": 512}), "tune.space: batch_size is an integer")
    parse_error(
        with_space("tabular", {"architecture": "ft_transformer"}, model__layers={"low": 1.5, "high": 4}),
        "tune.space: model.layers is an integer, so low and high must be integers",
    )
    params = parse_params(with_space(batch_size={"low": 64, "high": 512}, model__dropout={"low": 0.0, "high": 0.5}))
    assert set(params.tune.space_for("mlp")) == {"batch_size", "model.dropout"}


def test_a_search_dimension_is_a_range_or_choices():
    parse_error(with_space(lr={"low": 0.1, "high": 0.01}), "tune.space.lr: low (0.1) must be below high (0.01)")
    parse_error(
        with_space(lr={"low": 0.001, "high": 0.1, "choices": [0.01]}), "tune.space.lr: give either choices or low/high"
    )


# ---------------------------------------------------------------- non-finite numbers, YAML, files


@pytest.mark.parametrize("spelling", [".inf", ".nan", "-.inf", ".NaN"])
def test_non_finite_numbers_in_yaml_are_refused_naming_the_key(tmp_path, spelling):
    text, found = re.subn(r"(?m)^  lr: 0\.002\b", f"  lr: {spelling}", PARAMS_FILE.read_text())
    assert found == 1
    path = tmp_path / "params.yaml"
    path.write_text(text)

    with pytest.raises(ParamsError) as info:
        load_params(path)

    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: train.lr = ")
    assert "must be a finite number" in message


@pytest.mark.parametrize(
    ("kind", "section", "key", "expected"),
    [
        ("tabular", "split", "train", "split.train = nan"),
        ("tabular", "model", "dropout", "train.model.dropout = nan"),
        ("tabular", "features", "numeric_fill_value", "features.numeric_fill_value = nan"),
        ("image", "ingest", "max_unreadable_share", "ingest.max_unreadable_share = nan"),
        ("sequence", "clean", "max_missing_share", "clean.max_missing_share = nan"),
    ],
)
def test_nan_anywhere_is_refused_naming_the_key(kind, section, key, expected):
    raw = raw_params(kind)
    (raw["train"]["model"] if section == "model" else raw[section])[key] = float("nan")

    message = parse_error(raw, expected)

    assert "must be a finite number" in message


def test_non_finite_search_bounds_are_refused():
    parse_error(with_space(lr={"low": float("nan"), "high": 0.1}), "tune.space.lr.low = nan: must be a finite number")


def test_a_yaml_syntax_error_names_the_line_and_column(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\ntrain:\n  lr: 0.1\n   epochs: 3\n")

    with pytest.raises(ParamsError) as info:
        load_params(path)

    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML at line 4, column 10")
    assert "mapping values are not allowed here" in message
    assert "\n" not in message


def test_invalid_yaml_names_the_path(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\ntrain: {lr: [0.1\n")

    with pytest.raises(ParamsError) as info:
        load_params(path)

    assert str(path) in str(info.value)
    assert "not valid YAML at line 3, column 1" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_params_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "params.yaml"

    with pytest.raises(ParamsError) as info:
        load_params(path)

    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- seed\n- 42\n")

    with pytest.raises(ParamsError) as info:
        load_params(path)

    assert str(path) in str(info.value)
    assert "expected a mapping" in str(info.value)


def test_prediction_log_url_prefers_the_environment(monkeypatch):
    serve = ServeParams()
    monkeypatch.delenv("EVERGREEN_DATABASE_URL", raising=False)
    assert prediction_log_url(serve) == "sqlite:///data/predictions.sqlite"
    monkeypatch.setenv("EVERGREEN_DATABASE_URL", "postgresql+psycopg://evergreen:secret@127.0.0.1/log")
    assert prediction_log_url(serve).startswith("postgresql+psycopg://")


def test_serve_workers_defaults_to_auto_in_the_committed_params():
    assert ServeParams().workers == "auto"
    assert load_params(PARAMS_FILE).serve.workers == "auto"


@pytest.mark.parametrize("workers", [1, 2, 8, "auto"])
def test_serve_workers_takes_a_number_or_auto(workers):
    raw = raw_params()
    raw["serve"]["workers"] = workers

    assert parse_params(raw).serve.workers == workers


@pytest.mark.parametrize("workers", [0, -2, 65, "many", "2", 2.0, True, None])
def test_a_bad_serve_workers_is_refused_naming_the_key_and_the_choices(workers):
    raw = raw_params()
    raw["serve"]["workers"] = workers

    message = parse_error(raw, "serve.workers")

    assert repr(workers) in message and "auto" in message


@pytest.mark.parametrize(
    ("workers", "cpus", "count"), [(3, 64, 3), ("auto", 1, 1), ("auto", 2, 2), ("auto", 64, AUTO_WORKERS_MAX)]
)
def test_serve_workers_auto_is_the_usable_cpus_capped(workers, cpus, count):
    assert serve_workers(workers, cpus=cpus) == count


def test_serve_workers_auto_counts_this_process_cpus():
    assert serve_workers("auto") == min(usable_cpus(), AUTO_WORKERS_MAX)


@pytest.mark.parametrize(
    ("cpu_max", "cpus"), [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1), ("garbled", None)]
)
def test_usable_cpus_honours_a_cgroup_cpu_quota(tmp_path, cpu_max, cpus):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text(cpu_max)

    assert usable_cpus(tmp_path / "cpu.max") == min(affinity, cpus or affinity)
    assert usable_cpus(tmp_path / "absent") == affinity
