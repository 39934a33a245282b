"""The real ``dvc repro`` of the sequence kind (elecdemand, LSTM) on a slice, in a temporary copy of the repo.

The params are the documented example (``examples/elecdemand/params.yaml``) with a slice: the first
25 days, a small LSTM, two epochs. Ends in a verified ONNX forecaster that the gate can score.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import copy_repo, edit_params
from tests.pipeline.test_dvc_repro import STAGES, ran_stages, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = copy_repo(tmp_path_factory.mktemp("evergreen-sequence"))
    shutil.copy(root / "examples/elecdemand/params.yaml", root / "params.yaml")
    edit_params(
        root,
        ingest={"max_rows": 1200, "min_rows": 100},
        train={
            "epochs": 2,
            "model": {"architecture": "lstm", "hidden": 16, "layers": 1, "dropout": 0.0, "bidirectional": False},
        },
    )
    return root


def test_sequence_repro_exports_a_verified_forecaster(workspace):
    assert ran_stages(run(workspace, "dvc", "repro")) == STAGES

    parity = json.loads((workspace / "reports/export/parity.json").read_text())
    assert parity["label_mismatches"] == 0 and parity["max_scaled_diff"] <= 1e-4
    model = onnx.load(workspace / "models/model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["window"] and [o.name for o in model.graph.output] == ["forecast"]
    card = json.loads((workspace / "models/model_card.json").read_text())
    assert card["kind"] == "sequence" and card["target"] == "Demand" and card["inputs"][0]["shape"] == ["N", 96, 3]

    metrics = json.loads((workspace / "reports/evaluate/metrics.json").read_text())
    assert metrics["task"] == "forecast" and metrics["test_windows"] == 180  # 15% of 1,200 steps, one window each
    assert {"mae", "rmse"} <= set(metrics["baseline_seasonal_naive"]) and {"mae", "rmse"} <= set(
        metrics["baseline_persistence"]
    )
    shown = run(workspace, "dvc", "metrics", "show").stdout
    assert "baseline_seasonal_naive.mae" in shown and "model.mae" in shown


def test_sequence_plots_render_offline(workspace, tmp_path):
    run(workspace, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page
    for name in (
        "One-step-ahead forecast vs actual",
        "MAE per horizon step",
        "dvc_inferred_y_value",
        "loss.tsv",
        "val/mae.tsv",
    ):
        assert name in page
    assert "confusion.csv" not in page  # a forecast writes no classification plots


def test_the_gate_scores_the_forecaster_with_onnxruntime_on_mae(workspace):
    from pipeline.kinds import score_test
    from pipeline.lifecycle.gate import baseline_key, decide, parity_passed
    from pipeline.params import load_params

    params = load_params(workspace / "params.yaml")
    paths = params.paths
    scores = score_test(workspace / paths.onnx, workspace / paths.model_card, workspace / paths.split)
    metrics = json.loads((workspace / paths.eval_metrics).read_text())
    assert np.isclose(scores["mae"], metrics["model"]["mae"], rtol=1e-4) and scores["rows"] == metrics["test_windows"]
    baseline = metrics[baseline_key(params.gate.metric)][params.gate.metric]
    parity = json.loads((workspace / paths.export_report).read_text())
    decision = decide(scores["mae"], None, baseline, parity_passed(parity, params.export.tolerance), params.gate)
    assert decision.metric == "mae" and "seasonal-naive baseline" in decision.reason
