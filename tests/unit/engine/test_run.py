"""The engine's whole run, through the train stage: prepare -> train -> save."""

import ctypes
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.io import SCHEMA_FILE, split_file, write_json, write_table
from pipeline.engine import configure_torch, fit, keeps_encoder
from pipeline.engine.run import keep_freed_memory
from pipeline.kinds.tabular.encoder import load_preprocessor
from pipeline.kinds.tabular.evaluate import predict_proba
from pipeline.models import load_model
from pipeline.stages import train as train_stage
from tests.conftest import make_params, make_table
from tests.unit.engine.conftest import config_for, quick


def _write_splits(paths, frames, schema):
    for name, frame in frames.items():
        write_table(split_file(paths.split, name), frame)
    write_json(f"{paths.split}/{SCHEMA_FILE}", schema.to_dict())
    write_table(split_file(paths.augmented, "train"), frames["train"])


def test_stage_writes_self_describing_checkpoints_that_reload(tmp_path, raw_params, table, schema):
    params = make_params(raw_params, tmp_path, train={"epochs": 3, "model": {"hidden": [16]}, "warmup_epochs": 0})
    frames = {"train": table.iloc[:400], "val": table.iloc[400:500], "test": table.iloc[500:]}
    _write_splits(params.paths, frames, schema)
    summary = train_stage.run(params.features, params.train, params.paths, params.seed)
    assert summary["epochs_run"] == 3

    # The best model: self-describing weights; the optimizer state lives in the last checkpoint only.
    checkpoint = torch.load(params.paths.model, weights_only=True)
    assert {"model_config", "model_state", "epoch", "best_metric", "train_params", "seed"} <= set(checkpoint)
    assert "optimizer_state" not in checkpoint
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in checkpoint["model_state"])
    last = torch.load(f"{params.paths.checkpoints}/last.pt", weights_only=True)
    assert last["epoch"] == 2 and "optimizer_state" in last
    model, pre = load_model(params.paths.model), load_preprocessor(params.paths.preprocessor)
    proba = predict_proba(model, pre, frames["test"])
    assert proba.shape == (len(frames["test"]), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert (tmp_path / params.paths.train_live).joinpath("metrics.json").exists()
    assert any((tmp_path / params.paths.tensorboard).iterdir())


def test_leakage_held_out_rows_never_move_the_fitted_encoder(tmp_path, raw_params, schema):
    """Changing validation and test feature values leaves the saved imputation/scaling statistics unchanged."""
    table = make_table(600)
    frames = {"train": table.iloc[:400], "val": table.iloc[400:500], "test": table.iloc[500:]}
    params = make_params(raw_params, tmp_path, train={"epochs": 1, "model": {"hidden": [8]}, "warmup_epochs": 0})
    _write_splits(params.paths, frames, schema)
    train_stage.run(params.features, params.train, params.paths, params.seed)
    before = (tmp_path / params.paths.preprocessor).read_text()

    def wild(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(x=frame["x"].fillna(0) * 1000 + 1e6, noise=-frame["noise"], colour="never-seen")

    frames = {"train": frames["train"], "val": wild(frames["val"]), "test": wild(frames["test"])}
    _write_splits(params.paths, frames, schema)
    train_stage.run(params.features, params.train, params.paths, params.seed)
    assert (tmp_path / params.paths.preprocessor).read_text() == before

    # Guard against a test that cannot fail: changing the training rows does move the statistics.
    frames["train"] = wild(frames["train"])
    _write_splits(params.paths, frames, schema)
    train_stage.run(params.features, params.train, params.paths, params.seed)
    assert (tmp_path / params.paths.preprocessor).read_text() != before


def test_the_stage_fine_tunes_the_model_in_init_model_keeping_its_encoder(tmp_path, raw_params, table, schema, caplog):
    first = make_params(raw_params, tmp_path / "first", train={"epochs": 2, "model": {"hidden": [16]}, "warmup_epochs": 0})
    frames = {"train": table.iloc[:400], "val": table.iloc[400:500], "test": table.iloc[500:]}
    _write_splits(first.paths, frames, schema)
    train_stage.run(first.features, first.train, first.paths, first.seed)

    # New training rows (a different encoder would be fitted), and the first model placed in init_model.
    second = make_params(raw_params, tmp_path / "second", train={"epochs": 2, "model": {"hidden": [16]}, "warmup_epochs": 0})
    _write_splits(second.paths, {**frames, "train": table.iloc[100:450]}, schema)
    init = Path(second.paths.init_model)
    init.mkdir(parents=True)
    (init / "model.pt").write_bytes(Path(first.paths.model).read_bytes())
    (init / "preprocessor.json").write_text(Path(first.paths.preprocessor).read_text())
    with caplog.at_level("INFO", logger="pipeline"):
        train_stage.run(second.features, second.train, second.paths, second.seed)
    assert "keeping the initial model's encoder" in caplog.text and "warm start: 9 tensors loaded, 0 fresh []" in caplog.text
    assert Path(second.paths.preprocessor).read_text() == Path(first.paths.preprocessor).read_text()

    encoder = json.loads(Path(first.paths.preprocessor).read_text())
    assert keeps_encoder(encoder["classes"], list(encoder["classes"]), None, None)
    assert not keeps_encoder(encoder["classes"], [*encoder["classes"], "new class"], None, None)  # new classes: fit afresh


def test_configure_torch_keeps_deterministic_kernels_without_the_nan_fill_and_keeps_freed_memory(monkeypatch, data):
    """The train stage's process settings: deterministic kernels, no NaN fill of new tensors, glibc keeping
    freed memory; none changes a result: an MLP trains to the same bits with PyTorch's defaults."""
    pre, train, val = data
    cfg = quick(epochs=2)
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)  # PyTorch's default, restored after
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        before, _, _ = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
        configure_torch(cfg)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.utils.deterministic.fill_uninitialized_memory
        after, _, _ = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    assert all(torch.equal(value, after.state_dict()[key]) for key, value in before.state_dict().items())
    glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    assert keep_freed_memory() is glibc


@pytest.mark.parametrize(("num_threads", "usable", "expected"), [(None, 1, 1), (None, 64, 2), (3, 1, 3)])
def test_configure_torch_threads_default_to_pytorch_s_lowered_to_the_usable_cpus(monkeypatch, num_threads, usable, expected):
    """null: PyTorch's own count (2 here, made so) unless a CPU quota allows fewer; a number is taken as is."""
    from pipeline.engine import run

    threads = torch.get_num_threads()
    monkeypatch.setattr(run, "usable_cpus", lambda: usable)
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)  # restored after
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(2)
        configure_torch(quick(num_threads=num_threads))
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)
