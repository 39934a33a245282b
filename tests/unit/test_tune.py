"""pipeline.tune: a real Optuna search on a small learnable table (SQLite study, pruning, several
workers on one study), the best params written and applied to params.yaml with its comments kept,
and params errors that name the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pipeline import tune
from pipeline.core.errors import ParamsError
from pipeline.core.io import SCHEMA_FILE, split_file, write_json, write_table
from pipeline.engine import fit
from pipeline.params import TUNE_STORAGE_ENV, Params, parse_params, tune_storage_url
from pipeline.stages.train import prepare
from tests.conftest import REPO, make_params, make_table, tool_env

# Tiny and quick: 480 training rows, one small hidden layer, 3 epochs, one thread.
TRAIN = {
    "hidden": [16], "epochs": 3, "batch_size": 64, "lr": 0.01, "warmup_epochs": 0, "num_threads": 1, "device": "cpu",
    "early_stopping": {"metric": "val_loss", "patience": 3, "min_delta": 0.0},
}
TUNE = {
    "trials": 4, "epochs": 3, "study": "test",
    "pruner": {"method": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    "space": {
        "lr": {"low": 0.001, "high": 0.1, "log": True},
        "batch_size": {"choices": [32, 128]},
        "hidden": {"choices": [[16], [32, 16]]},
    },
}


def write_splits(params: Params, schema) -> None:
    """What the split and augment stages would have written: train/val Parquet, schema, augmented train."""
    table = make_table(600)
    write_table(split_file(params.paths.split, "train"), table.iloc[:480])
    write_table(split_file(params.paths.split, "val"), table.iloc[480:])
    write_json(Path(params.paths.split) / SCHEMA_FILE, schema.to_dict())
    write_table(split_file(params.paths.augmented, "train"), table.iloc[:480])


@pytest.fixture
def params(raw_params, tmp_path, schema, monkeypatch) -> Params:
    monkeypatch.delenv(TUNE_STORAGE_ENV, raising=False)
    params = make_params(raw_params, tmp_path, train=TRAIN, tune=TUNE)
    write_splits(params, schema)
    return params


def storage_of(params: Params) -> str:
    return tune_storage_url(params.tune, params.paths)


def parse_error(raw: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- the search


def test_search_stores_every_trial_in_sqlite_and_writes_the_best(params, tmp_path):
    storage = storage_of(params)
    assert storage == f"sqlite:///{tmp_path / 'reports/tune/optuna.db'}"

    summary = tune.search(params, storage=storage, study_name="test", trials=4)

    study = optuna.load_study(study_name="test", storage=storage)
    assert len(study.trials) == 4 == summary["trials"]
    assert summary["complete"] + summary["pruned"] == 4 and summary["failed"] == 0
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert study.trials[0].state == TrialState.COMPLETE  # n_startup_trials=1: the first is never pruned
    # The first trial is the params file's own values where they lie in the space (64 is not a choice).
    assert study.trials[0].user_attrs["train"]["lr"] == 0.01 and study.trials[0].user_attrs["train"]["hidden"] == [16]

    best = yaml.safe_load((tmp_path / "reports/tune/best_params.yaml").read_text())
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert best["value"] == study.best_value == min(t.value for t in complete) == summary["best_value"]
    assert best["trial"] == study.best_trial.number == summary["best_trial"]
    assert (best["study"], best["metric"], best["direction"], best["trial_epochs"]) == ("test", "val_loss", "minimize", 3)
    # The values come from the space.
    assert set(best["train"]) == {"lr", "batch_size", "hidden"}
    assert 0.001 <= best["train"]["lr"] <= 0.1
    assert best["train"]["batch_size"] in (32, 128)
    assert best["train"]["hidden"] in ([16], [32, 16])
    # The objective is the early-stopping metric at the best epoch: training again with the best
    # values (same data, seed and loop) gives the same number.
    cfg = tune.trial_params(params.train, best["train"], 3)
    data = prepare(params.features, cfg, params.paths)
    _, _, history = fit(data.train, data.val, data.config_for(cfg), cfg, params.seed, task=data.task)
    assert history.best_value == pytest.approx(best["value"], rel=1e-6)
    assert history.epochs[history.best_epoch]["val_loss"] == history.best_value

    report = yaml.safe_load((tmp_path / "reports/tune/summary.json").read_text())
    assert {key: report[key] for key in ("trials", "complete", "pruned", "best_value", "best_trial")} == {
        key: summary[key] for key in ("trials", "complete", "pruned", "best_value", "best_trial")
    }
    # A second search joins the same study and adds its trials.
    tune.search(params, storage=storage, study_name="test", trials=1, worker=1)
    assert len(optuna.load_study(study_name="test", storage=storage).trials) == 5


def test_the_pruner_stops_a_clearly_worse_trial(params, raw_params, tmp_path, schema):
    params = make_params(raw_params, tmp_path, train=TRAIN, tune={**TUNE, "space": {"lr": {"low": 1e-7, "high": 0.1, "log": True}}})
    storage = storage_of(params)
    Path(params.paths.tune).mkdir(parents=True)
    # The first trials are fixed: a good learning rate, then one far too small to learn in 3 epochs.
    study = optuna.create_study(storage=storage, study_name="test", direction="minimize")
    study.enqueue_trial({"lr": 0.05})
    study.enqueue_trial({"lr": 1e-7})

    summary = tune.search(params, storage=storage, study_name="test", trials=3)

    trials = optuna.load_study(study_name="test", storage=storage).trials
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert list(trials[1].intermediate_values) == [0]  # stopped after its first epoch
    assert trials[1].intermediate_values[0] > trials[0].intermediate_values[0]
    assert summary["pruned"] >= 1 and summary["best_train"] != {"lr": 1e-7}
    listing = tune.show(storage, "test")
    assert "3 trials" in listing and "PRUNED" in listing and "at epoch 0" in listing


def test_a_study_made_for_another_metric_is_refused():
    storage = optuna.storages.InMemoryStorage()
    tune.open_study(storage, "s", "val_loss")

    with pytest.raises(ParamsError) as info:
        tune.open_study(storage, "s", "val_accuracy")

    assert "'s'" in str(info.value) and "val_accuracy" in str(info.value) and "--study" in str(info.value)


def test_two_workers_share_one_study(params, tmp_path):
    """Two command-line searches started together on one SQLite study: four trials in one study."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    env = {**tool_env(), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pipeline.tune", "--params", str(params_file), "search", "--trials", "2", "--study", "shared"]
    workers = [
        subprocess.Popen([*command, "--worker", str(k)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in (0, 1)
    ]
    results = [worker.communicate(timeout=120) for worker in workers]

    for worker, (out, err) in zip(workers, results):
        assert worker.returncode == 0, err
        assert "study 'shared': best val_loss" in out
    study = optuna.load_study(study_name="shared", storage=storage_of(params))
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert (tmp_path / "reports/tune/best_params.yaml").exists()


def test_command_line_missing_split_is_one_error_line(raw_params, tmp_path):
    params = make_params(raw_params, tmp_path, train=TRAIN, tune=TUNE)  # no data written
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))

    result = subprocess.run(
        [sys.executable, "-m", "pipeline.tune", "--params", str(params_file), "search", "--trials", "1"],
        cwd=tmp_path, env={**tool_env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stderr
    assert "schema.json: file not found" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reports/tune/optuna.db").exists()  # failed before opening a study


# ---------------------------------------------------------------- apply


BEST = {"lr": 0.0031234, "batch_size": 256, "hidden": [128, 64], "dropout": 0.25, "weight_decay": 1.5e-05}


def test_apply_rewrites_train_values_and_keeps_everything_else(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    params_file.write_text(original)
    best_file = tmp_path / "best_params.yaml"
    best_file.write_text(yaml.safe_dump({"study": "s", "trial": 3, "metric": "val_loss", "value": 0.8, "train": BEST}))

    tune.main(["--params", str(params_file), "apply", "--best", str(best_file)])

    rewritten = params_file.read_text()
    before, after = original.splitlines(), rewritten.splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(changed) == len(BEST)
    for old_line, new_line in changed:
        key = old_line.split(":")[0].strip()
        assert key in BEST and new_line.startswith(f"  {key}: ")
        if "#" in old_line:  # the comment is kept, in its column when the value fits
            assert new_line[new_line.index("#"):] == old_line[old_line.index("#"):]
    assert "  weight_decay: 1.5e-05    # L2" in after  # the comment stays in its column
    raw = yaml.safe_load(rewritten)
    assert {key: raw["train"][key] for key in BEST} == BEST
    expected = yaml.safe_load(original)
    expected["train"].update(BEST)
    assert raw == expected  # nothing else moved
    params = parse_params(raw)
    assert params.train.hidden == (128, 64) and params.train.lr == 0.0031234
    assert "train.batch_size: 512 -> 256" in capsys.readouterr().out


def test_apply_refuses_a_key_it_cannot_find_on_its_own_line():
    text = "seed: 1\ntrain:\n  lr: 0.1   # rate\n  hidden: [8]\nevaluate:\n  batch_size: 3\n"

    with pytest.raises(ParamsError) as info:
        tune.rewrite_train_values(text, {"batch_size": 64})

    message = str(info.value)
    assert "'  batch_size: <value>'" in message and "train.batch_size: 64" in message and "\n" not in message
    # Another section's key of the same name is left alone; a float keeps its YAML float form.
    rewritten = tune.rewrite_train_values(text, {"lr": 1e-05})
    assert "  lr: 1.0e-05 # rate\n" in rewritten and rewritten.endswith("evaluate:\n  batch_size: 3\n")
    assert yaml.safe_load(rewritten)["train"]["lr"] == 1e-05


def test_apply_rewrites_the_block_lists_dvc_exp_writes():
    """``dvc exp run -S`` / ``dvc exp apply`` rewrite params.yaml with lists one item a line and
    null as an empty value: apply turns those into one-line values and keeps the rest."""
    text = (
        "train:\n  hidden:\n  - 256\n  - 128\n  dropout: 0.2\n  embedding_dim:           # null: automatic\n"
        "  early_stopping:\n    metric: val_loss\nevaluate:\n  bins: 3\n"
    )

    rewritten = tune.rewrite_train_values(text, {"hidden": [64], "embedding_dim": 8})

    assert rewritten == (
        "train:\n  hidden: [64]\n  dropout: 0.2\n  embedding_dim: 8         # null: automatic\n"
        "  early_stopping:\n    metric: val_loss\nevaluate:\n  bins: 3\n"
    )


def test_apply_without_a_search_names_the_missing_file(tmp_path):
    from pipeline.core.errors import DataError

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    with pytest.raises(DataError) as info:
        tune.apply(tmp_path / "params.yaml", tmp_path / "reports/tune/best_params.yaml")
    assert "best_params.yaml: file not found" in str(info.value)


# ---------------------------------------------------------------- params


def test_unknown_space_key_is_one_line_naming_it(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["tune"]["space"]["lrr"] = {"low": 0.001, "high": 0.1}

    message = parse_error(raw)

    assert "tune.space" in message and "unknown train key 'lrr'" in message
    assert "lr" in message.split("searchable:")[1]


@pytest.mark.parametrize(
    ("key", "dimension", "expected"),
    [
        ("lr", {"low": 0.1, "high": 0.01}, "tune.space.lr: low (0.1) must be below high (0.01)"),
        ("lr", {"low": 0.0, "high": 0.01, "log": True}, "tune.space.lr: a log range needs low > 0"),
        ("lr", {"low": 0.001}, "tune.space.lr: give low and high, or choices"),
        ("optimizer", {"low": 1, "high": 2}, "optimizer: a low/high range needs a numeric train key"),
        ("batch_size", {"low": 16.5, "high": 64}, "train.batch_size is an integer"),
        ("epochs", {"low": 1, "high": 9}, "train.epochs cannot be searched"),
        ("early_stopping", {"choices": [1]}, "train.early_stopping cannot be searched"),
    ],
)
def test_impossible_space_is_refused_naming_the_key(raw_params, key, dimension, expected):
    raw = copy.deepcopy(raw_params)
    raw["tune"]["space"][key] = dimension

    assert expected in parse_error(raw)


def test_space_values_are_checked_against_the_train_params(params):
    with pytest.raises(ParamsError) as info:
        tune.check_space(params.train, params.tune.model_copy(update={"space": {"batch_size": _choices(64, 0)}}))
    assert "tune.space.batch_size: 0 is not a valid train value" in str(info.value)

    train = tune.trial_params(params.train, {"warmup_epochs": 2}, 5)
    with pytest.raises(ParamsError) as info:
        tune.check_space(train, params.tune.model_copy(update={"epochs": 2}))
    assert "tune.epochs = 2" in str(info.value) and "warmup_epochs" in str(info.value)


def _choices(*values):
    from pipeline.params import SearchDimension

    return SearchDimension(choices=values)


def test_trial_params_are_a_validated_copy(params):
    base = params.train
    cfg = tune.trial_params(base, {"lr": 0.02, "hidden": [8, 4]}, 2)

    assert (cfg.lr, cfg.hidden, cfg.epochs) == (0.02, (8, 4), 2)
    assert (base.lr, base.hidden, base.epochs) == (0.01, (16,), 3)  # never mutated
    with pytest.raises(ParamsError) as info:
        tune.trial_params(base, {"dropout": 1.5}, 2)
    assert "train.dropout" in str(info.value)


def test_storage_comes_from_the_environment_then_params_then_sqlite(params, monkeypatch, tmp_path):
    assert storage_of(params) == f"sqlite:///{tmp_path / 'reports/tune/optuna.db'}"
    custom = params.tune.model_copy(update={"storage": "sqlite:///elsewhere.db"})
    assert tune_storage_url(custom, params.paths) == "sqlite:///elsewhere.db"
    monkeypatch.setenv(TUNE_STORAGE_ENV, "postgresql+psycopg://tuner:secret@db/optuna")
    assert tune_storage_url(custom, params.paths) == "postgresql+psycopg://tuner:secret@db/optuna"
    assert "secret" not in tune.redact("postgresql+psycopg://tuner:secret@db/optuna")
