"""Two tuning workers (two ``python -m pipeline.tune search`` processes) on one Optuna study in a real
PostgreSQL database, its URL given as $EVERGREEN_TUNE_STORAGE: the study holds both workers' trials."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pipeline.params import TUNE_STORAGE_ENV
from tests.conftest import REPO, make_params, tool_env
from tests.unit.tune.conftest import TRAIN, TUNE, write_splits

pytestmark = pytest.mark.slow  # a database server and two training processes


def test_two_tuning_workers_share_one_study_in_postgresql(postgres, raw_params, schema, tmp_path):
    params = make_params(raw_params, tmp_path, train=TRAIN, tune=TUNE)
    write_splits(params, schema)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    storage = postgres.database("tune")
    env = {**tool_env(), "PYTHONPATH": str(REPO), TUNE_STORAGE_ENV: storage}
    command = [sys.executable, "-m", "pipeline.tune", "--params", str(params_file), "search", "--trials", "2"]

    workers = [
        subprocess.Popen(
            [*command, "--study", "shared", "--worker", str(k)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (0, 1)
    ]
    try:
        results = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()

    for worker, (out, err) in zip(workers, results):
        assert worker.returncode == 0, err
        assert "study 'shared': best val_loss" in out
        assert "postgresql+psycopg://postgres@127.0.0.1" in err  # the search said where its study lives
    study = optuna.load_study(study_name="shared", storage=storage)
    # Each worker ran its two trials to the end (exit 0): four in the one study, numbered once each.
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert study.user_attrs == {"metric": "val_loss", "task": "classification", "architecture": "mlp"}
    assert not (tmp_path / "reports/tune/optuna.db").exists()  # nothing in the default SQLite file
    listing = subprocess.run(
        [sys.executable, "-m", "pipeline.tune", "--params", str(params_file), "show", "--study", "shared"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert "4 trials" in listing.stdout.splitlines()[0]
