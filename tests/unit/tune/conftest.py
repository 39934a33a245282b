"""pipeline.tune's test helpers: quick train and tune params, a small tabular split, and an example's
params (digits, elecdemand) on a small slice run through the kind's data stages in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline import kinds
from pipeline.core.io import SCHEMA_FILE, split_file, write_json, write_table
from pipeline.params import TUNE_STORAGE_ENV, Params, tune_storage_url
from tests.conftest import REPO, make_params, make_table

# Tiny and quick: one small hidden layer, 3 epochs, one thread.
TRAIN = {
    "model": {"hidden": [16]},
    "epochs": 3,
    "batch_size": 64,
    "lr": 0.01,
    "warmup_epochs": 0,
    "num_threads": 1,
    "device": "cpu",
    "early_stopping": {"metric": "val_loss", "patience": 3, "min_delta": 0.0},
}
TUNE = {
    "trials": 4,
    "epochs": 3,
    "study": "test",
    "pruner": {"method": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    "space": {
        "lr": {"low": 0.001, "high": 0.1, "log": True},
        "batch_size": {"choices": [32, 128]},
        "model.hidden": {"choices": [[16], [32, 16]]},
    },
}


def write_splits(params: Params, schema) -> None:
    """What the split and augment stages would have written: train/val Parquet, schema, augmented train."""
    table = make_table(600)
    write_table(split_file(params.paths.split, "train"), table.iloc[:480])
    write_table(split_file(params.paths.split, "val"), table.iloc[480:])
    write_json(Path(params.paths.split) / SCHEMA_FILE, schema.to_dict())
    write_table(split_file(params.paths.augmented, "train"), table.iloc[:480])


@pytest.fixture(autouse=True)
def no_storage_variable(monkeypatch):
    """Every study in the test's own SQLite file, whatever the environment says."""
    monkeypatch.delenv(TUNE_STORAGE_ENV, raising=False)


@pytest.fixture
def params(raw_params, tmp_path, schema) -> Params:
    """The committed (tabular, MLP) params with a quick train section and a small space, on a small split."""
    params = make_params(raw_params, tmp_path, train=TRAIN, tune=TUNE)
    write_splits(params, schema)
    return params


def storage_of(params: Params) -> str:
    return tune_storage_url(params.tune, params.paths)


def example_raw(name: str) -> dict:
    """examples/<name>/params.yaml as a plain dict."""
    return yaml.safe_load((REPO / "examples" / name / "params.yaml").read_text())


def example_workspace(name: str, tmp_path: Path, **sections) -> Params:
    """An example's params under ``tmp_path`` with some sections overridden, its data through ingest,
    clean, split and augment (what ``dvc repro`` runs before train)."""
    params = make_params(example_raw(name), tmp_path, **sections)
    stages = kinds.get(params.ingest.kind).stages()
    stages.ingest(params.ingest, params.paths, params.seed)
    stages.clean(params.clean, params.paths)
    stages.split(params.split, params.paths, params.seed)
    stages.augment(params.augment, params.paths, params.seed)
    return params
