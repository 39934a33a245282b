"""The train stage as real processes: killed with SIGKILL mid-run and resumed; two DDP ranks under torchrun."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from pipeline.core.io import SCHEMA_FILE, split_file, write_json, write_table
from pipeline.engine import Tensors, make_loss, validate
from pipeline.kinds.tabular.encoder import load_preprocessor
from pipeline.models import load_model
from pipeline.params import load_params
from tests.conftest import REPO, make_table, merge_section, tool_env

# Real training processes: one killed mid-run, two DDP ranks under torchrun.
pytestmark = pytest.mark.slow


def workspace(root: Path, schema, rows: int, **train) -> Path:
    """A directory with params.yaml (relative paths) and written splits, ready for ``python -m pipeline.stages.train``."""
    root.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    quick = {"model": {"hidden": [64]}, "batch_size": 64, "warmup_epochs": 0, "num_threads": 1}
    raw["train"] = merge_section(raw["train"], {**quick, **train})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    paths = load_params(root / "params.yaml").paths
    table = make_table(rows, seed=1)
    cut = [int(rows * 0.7), int(rows * 0.85)]
    frames = {"train": table.iloc[: cut[0]], "val": table.iloc[cut[0] : cut[1]], "test": table.iloc[cut[1] :]}
    for name, frame in frames.items():
        write_table(root / split_file(paths.split, name), frame)
    write_json(root / paths.split / SCHEMA_FILE, schema.to_dict())
    write_table(root / split_file(paths.augmented, "train"), frames["train"])
    return root


def train_process(root: Path) -> subprocess.Popen:
    env = {**tool_env(), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.stages.train"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def test_a_training_killed_mid_run_resumes_to_the_same_model(tmp_path, schema):
    epochs = 8
    straight = workspace((tmp_path / "straight").resolve(), schema, 12000, epochs=epochs, early_stopping={"patience": 50})
    killed = workspace((tmp_path / "killed").resolve(), schema, 12000, epochs=epochs, early_stopping={"patience": 50})
    finish(train_process(straight))

    last = killed / "models" / "checkpoints" / "last.pt"
    process = train_process(killed)
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # no cleanup, no exception handler: like a preempted machine
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    interrupted_at = torch.load(last, weights_only=True)["epoch"]
    assert interrupted_at < epochs - 1, "the kill came after training had finished"

    output = finish(train_process(killed))
    assert f"resuming after epoch {interrupted_at}" in output
    expected = torch.load(straight / "models" / "model.pt", weights_only=True)
    resumed = torch.load(killed / "models" / "model.pt", weights_only=True)
    assert resumed["epoch"] == expected["epoch"]
    for key, value in expected["model_state"].items():
        assert torch.equal(resumed["model_state"][key], value), key


def test_two_ddp_ranks_train_one_model_with_metrics_reduced_over_the_whole_validation_split(tmp_path, schema):
    # 301 validation rows: the two ranks' shards differ in size, so a wrong reduction shows.
    root = workspace(tmp_path.resolve(), schema, 2007, epochs=3, ddp={"nproc_per_node": 2, "backend": "gloo"})
    output = finish(train_process(root))
    assert "torch.distributed.run" in output

    paths = load_params(root / "params.yaml").paths
    checkpoint = torch.load(root / paths.model, weights_only=True)
    assert not any(key.startswith(("module.", "_orig_mod.")) for key in checkpoint["model_state"])
    # One writer: a single DVCLive history with one row per epoch, not one per rank.
    history = (root / paths.train_live / "plots" / "metrics" / "val" / "loss.tsv").read_text().strip().splitlines()
    assert len(history) == 1 + 3

    # The recorded best-epoch validation metrics are those of the saved model on the whole split.
    model, pre = load_model(root / paths.model), load_preprocessor(root / paths.preprocessor)
    val = Tensors.encode(pd.read_parquet(root / split_file(paths.split, "val")), pre)
    scores = validate(model, val, "classification", make_loss("classification", load_params(root / "params.yaml").train), 4096)
    best = json.loads((root / paths.train_live / "metrics.json").read_text())["best"]
    assert scores["loss"] == pytest.approx(best["val_loss"], abs=1e-5)
    assert scores["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-9)
    assert scores["macro_f1"] == pytest.approx(best["val_macro_f1"], abs=1e-9)
