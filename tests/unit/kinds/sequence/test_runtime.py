"""The sequence runtime (pipeline/kinds/sequence/runtime.py): no torch, and the gate's onnxruntime scores agree
with evaluate after the real stages (a forecaster on elecdemand, a classifier on a synthetic long table)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline.kinds import score_test
from pipeline.kinds.sequence import stages
from pipeline.lifecycle.gate import parity_passed
from pipeline.stages import train
from tests.conftest import REPO
from tests.unit.kinds.sequence.conftest import QUICK, sequence_params, stage_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_runtime_imports_no_torch_and_no_stages():
    code = (
        "import sys, pipeline.kinds.sequence.runtime; "
        "loaded = [m for m in sys.modules if m == 'torch' or m.startswith(('pipeline.engine', 'pipeline.models', "
        "'pipeline.onnxio.build', 'pipeline.onnxio.verify', 'pipeline.kinds.sequence.stages', 'pipeline.stages'))]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_forecast_stages_end_to_end_score_like_the_gate(tmp_path):
    """evaluate and export on a quick LSTM, then the gate's own scoring (onnxruntime only) agrees with evaluate."""
    params = stage_data(tmp_path, rows=500, train={**QUICK, "model": {"architecture": "lstm", "hidden": 8}})
    p = params.paths
    train.run(params.features, params.train, p, params.seed)
    metrics = stages.evaluate(params.evaluate, p, params.seed)
    assert {"model", "baseline_seasonal_naive", "baseline_persistence"} <= set(metrics) and "mape" in metrics["model"]
    report = stages.export(params.export, p)
    assert parity_passed(report, params.export.tolerance) and report["label_mismatches"] == 0
    card = json.loads((tmp_path / "models/model_card.json").read_text())
    assert card["kind"] == "sequence" and card["lookback"] == 24 and card["horizon"] == 2 and card["int8"] is None
    assert list((tmp_path / "models/int8").iterdir()) == []
    scores = score_test(p.onnx, p.model_card, p.split)
    assert scores["mae"] == pytest.approx(metrics["model"]["mae"], rel=1e-4) and scores["rows"] == metrics["test_windows"]
    assert (tmp_path / "reports/evaluate/plots/forecast.csv").exists() and (
        tmp_path / "reports/evaluate/plots/horizon_errors.csv"
    ).exists()


def test_sequence_classification_on_a_synthetic_long_table(tmp_path):
    """Nine series, a wave or noise about another level, whole series per split (group): classified from their windows."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(9):
        kind = "sine" if k % 2 else "noise"
        t = np.arange(60)
        value = 1 + np.sin(t / 2 + k) if kind == "sine" else rng.normal(-1, 0.5, size=60)
        frames.append(pd.DataFrame({"sensor": f"s{k}", "step": t, "value": value, "kind": kind}))
    source = tmp_path / "data/raw/sensors.parquet"
    source.parent.mkdir(parents=True)
    pd.concat(frames).to_parquet(source)
    params = sequence_params(
        tmp_path,
        ingest={
            "source": str(source),
            "target": "kind",
            "time_column": "step",
            "series_column": "sensor",
            "task": "classify",
            "lookback": 12,
            "stride": 2,
        },
        split={"method": "group", "group_column": "sensor", "train": 0.6, "val": 0.2, "test": 0.2},
        train={
            **QUICK,
            "epochs": 6,
            "batch_size": 16,
            "model": {"architecture": "gru", "hidden": 16},
            "early_stopping": {"metric": "val_accuracy"},
        },
    )
    p = params.paths
    stages.ingest(params.ingest, p, params.seed)
    stages.clean(params.clean, p)
    split_report = stages.split(params.split, p, params.seed)
    assert split_report["series"] == {"train": 5, "val": 2, "test": 2}
    stages.augment(params.augment, p, params.seed)
    assert stages.prepare(params.features, params.train, p).task == "classification"
    train.run(params.features, params.train, p, params.seed)
    metrics = stages.evaluate(params.evaluate, p, params.seed)
    assert metrics["model"]["accuracy"] > 0.7 and "baseline_majority" in metrics
    assert (tmp_path / "reports/evaluate/plots/confusion.csv").exists()
    report = stages.export(params.export, p)
    assert report["label_mismatches"] == 0 and report["max_abs_probability_diff"] <= 1e-4
    scores = score_test(p.onnx, p.model_card, p.split)
    assert scores["accuracy"] == pytest.approx(metrics["model"]["accuracy"]) and scores["rows"] == metrics["test_rows"]
