"""pipeline.tune search and show on a small learnable table: a real Optuna search in SQLite, pruning,
several workers on one study, a study refused for another metric, task or architecture, and errors
that are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pipeline import tune
from pipeline.core.errors import ParamsError
from pipeline.engine import fit
from pipeline.stages.train import prepare
from tests.conftest import REPO, make_params, tool_env
from tests.unit.tune.conftest import TRAIN, TUNE, storage_of


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
    first = study.trials[0].user_attrs["train"]
    assert (first["lr"], first["model.hidden"]) == (0.01, [16]) and first["batch_size"] in (32, 128)
    assert (summary["architecture"], summary["task"], summary["metrics"]) == (
        "mlp",
        "classification",
        ["val_loss", "val_accuracy", "val_macro_f1"],
    )

    best = yaml.safe_load((tmp_path / "reports/tune/best_params.yaml").read_text())
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert best["value"] == study.best_value == min(t.value for t in complete) == summary["best_value"]
    assert best["trial"] == study.best_trial.number == summary["best_trial"]
    assert (best["study"], best["metric"], best["direction"], best["trial_epochs"]) == ("test", "val_loss", "minimize", 3)
    assert best["metrics"]["val_loss"] == best["value"] and set(best["metrics"]) == set(summary["metrics"])
    # The values come from the space.
    assert set(best["train"]) == {"lr", "batch_size", "model.hidden"}
    assert 0.001 <= best["train"]["lr"] <= 0.1
    assert best["train"]["batch_size"] in (32, 128)
    assert best["train"]["model.hidden"] in ([16], [32, 16])
    # The objective is the early-stopping metric at the best epoch: training again with the best
    # values (same data, seed and loop) gives the same number.
    cfg = tune.trial_params(params.train, best["train"], 3)
    data = prepare(params.features, cfg, params.paths)
    _, _, history = fit(data.train, data.val, data.config_for(cfg), cfg, params.seed, task=data.task)
    assert history.best_value == pytest.approx(best["value"], rel=1e-6)
    assert history.epochs[history.best_epoch]["val_loss"] == history.best_value

    report = yaml.safe_load((tmp_path / "reports/tune/summary.json").read_text())
    assert {key: report[key] for key in ("trials", "complete", "pruned", "best_value", "best_trial", "metrics")} == {
        key: summary[key] for key in ("trials", "complete", "pruned", "best_value", "best_trial", "metrics")
    }
    # A second search joins the same study and adds its trials.
    tune.search(params, storage=storage, study_name="test", trials=1, worker=1)
    assert len(optuna.load_study(study_name="test", storage=storage).trials) == 5


def test_the_pruner_stops_a_clearly_worse_trial(params, raw_params, tmp_path):
    params = make_params(
        raw_params, tmp_path, train=TRAIN, tune={**TUNE, "space": {"lr": {"low": 1e-7, "high": 0.1, "log": True}}}
    )
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
    assert "mlp, classification; minimize val_loss" in listing.splitlines()[0]


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ({"metric": "val_accuracy"}, "started for metric 'val_loss', but train.early_stopping.metric is 'val_accuracy'"),
        ({"task": "regression"}, "started for task 'classification', but the task of the data in paths.split is 'regression'"),
        (
            {"architecture": "ft_transformer"},
            "started for architecture 'mlp', but train.model.architecture is 'ft_transformer'",
        ),
    ],
)
def test_a_study_made_for_another_metric_task_or_architecture_is_refused(second, expected):
    storage = optuna.storages.InMemoryStorage()
    first = {"metric": "val_loss", "task": "classification", "architecture": "mlp"}
    tune.open_study(storage, "s", **first)
    tune.open_study(storage, "s", **first)  # a second worker joins

    with pytest.raises(ParamsError) as info:
        tune.open_study(storage, "s", **{**first, **second})

    message = str(info.value)
    assert "study 's'" in message and expected in message and "--study" in message


def test_a_study_made_elsewhere_for_the_other_direction_is_refused():
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="s", direction="maximize")  # no metric recorded

    with pytest.raises(ParamsError) as info:
        tune.open_study(storage, "s", "val_loss", task="classification", architecture="mlp")

    assert "study 's' was started to maximize, but train.early_stopping.metric 'val_loss' is to minimize" in str(info.value)


@pytest.mark.slow  # two worker processes
def test_two_workers_share_one_study(params, tmp_path):
    """Two command-line searches started together on one SQLite study: four trials in one study."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    env = {**tool_env(), "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "pipeline.tune",
        "--params",
        str(params_file),
        "search",
        "--trials",
        "2",
        "--study",
        "shared",
    ]
    workers = [
        subprocess.Popen(
            [*command, "--worker", str(k)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for k in (0, 1)
    ]
    results = [worker.communicate(timeout=120) for worker in workers]

    for worker, (out, err) in zip(workers, results):
        assert worker.returncode == 0, err
        assert "study 'shared': best val_loss" in out and "val_accuracy" in out
    study = optuna.load_study(study_name="shared", storage=storage_of(params))
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert (tmp_path / "reports/tune/best_params.yaml").exists()


@pytest.mark.slow  # the command in a subprocess
def test_command_line_missing_split_is_one_error_line(raw_params, tmp_path):
    params = make_params(raw_params, tmp_path, train=TRAIN, tune=TUNE)  # no data written
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))

    result = subprocess.run(
        [sys.executable, "-m", "pipeline.tune", "--params", str(params_file), "search", "--trials", "1"],
        cwd=tmp_path,
        env={**tool_env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stderr
    assert "schema.json: file not found" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reports/tune/optuna.db").exists()  # failed before opening a study


def test_progress_draws_bars_on_a_terminal_and_nothing_elsewhere():
    import io

    from pipeline.tune.search import Progress

    screen = io.StringIO()
    progress = Progress(2, 3, "val_accuracy", enabled=True, file=screen)
    progress.start_trial(0)
    progress.epoch(0.61)
    progress.epoch(0.64)
    progress.end_trial(0.64)
    progress.close()
    drawn = screen.getvalue()
    assert "trials" in drawn and "trial 0" in drawn and "2/3" in drawn and "best val_accuracy=0.6400" in drawn

    quiet = io.StringIO()
    silent = Progress(2, 3, "val_accuracy", file=quiet)  # not a terminal: decides by itself to stay quiet
    silent.start_trial(0)
    silent.epoch(0.5)
    silent.end_trial(None)
    silent.close()
    assert quiet.getvalue() == ""
