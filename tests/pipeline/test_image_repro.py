"""The image kind through the real ``dvc repro``: examples/digits/params.yaml copied over params.yaml in a
temporary copy of the repo (params alone switch the kind), on a 600-image slice of the digits, two epochs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from pipeline.kinds import score_test
from tests.conftest import copy_repo, edit_params
from tests.pipeline.test_dvc_repro import STAGES, ran_stages, run

SLICE = {"ingest": {"max_rows": 600, "min_rows": 100}, "train": {"epochs": 2}}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = copy_repo(tmp_path_factory.mktemp("digits"))
    shutil.copy(root / "examples/digits/params.yaml", root / "params.yaml")
    edit_params(root, **SLICE)
    return root


def test_image_repro_runs_every_stage_and_exports_a_verified_model(workspace):
    assert ran_stages(run(workspace, "dvc", "repro")) == STAGES

    parity = json.loads((workspace / "reports/export/parity.json").read_text())
    assert parity["label_mismatches"] == 0 and parity["max_abs_probability_diff"] <= 1e-4
    model = onnx.load(workspace / "models/model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert not list((workspace / "models").glob("*.onnx.data"))  # one self-contained file
    assert [i.name for i in model.graph.input] == ["image"]
    card = json.loads((workspace / "models/model_card.json").read_text())
    assert card["kind"] == "image" and card["classes"] == [str(d) for d in range(10)]

    metrics = json.loads((workspace / "reports/evaluate/metrics.json").read_text())
    assert metrics["model"]["accuracy"] > metrics["baseline_majority"]["accuracy"]
    # The gate's scoring (onnxruntime only) agrees with evaluate's PyTorch numbers.
    scores = score_test(workspace / "models/model.onnx", workspace / "models/model_card.json", workspace / "data/split")
    assert scores["accuracy"] == pytest.approx(metrics["model"]["accuracy"])
    assert {p.name for p in (workspace / "reports/evaluate/plots").glob("*/*.csv")} == {
        "confusion.csv",
        "roc.csv",
        "precision_recall.csv",
        "calibration.csv",
    }


def test_second_image_repro_is_a_noop(workspace):
    assert ran_stages(run(workspace, "dvc", "repro")) == []
