"""The real ``dvc repro`` end to end, in a temporary copy of the repo, on a slice of the default data.

One full run is made once (the ``reproduced`` fixture) and never changed: each test works on its own
copy of it, so every test runs alone and in any order. The tests: the full run, a no-op re-run,
targeted re-runs after a params change and a code change, a forced re-run that must reproduce the
same metrics, user errors that must surface as one line, and a second data set switched in by params.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

from tests.conftest import clone_workspace, copy_repo, edit_params, tool_env

STAGES = ["ingest", "clean", "split", "augment", "train", "evaluate", "export"]
SLICE = {
    "ingest": {"max_rows": 4000},
    "train": {"epochs": 4},
    "evaluate": {"baseline_max_iter": 30},
}

pytestmark = pytest.mark.slow


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=root, env=tool_env(), capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def ran_stages(result: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", result.stdout + result.stderr)


@dataclass(frozen=True)
class Reproduced:
    """A workspace after one full ``dvc repro``, and that run's output."""

    root: Path
    first_run: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Reproduced:
    """A copy of the repo's tracked and new files (no generated outputs), committed in a fresh git
    repo and reproduced once. Tests copy it (``workspace``); none changes it."""
    root = copy_repo(tmp_path_factory.mktemp("evergreen"), **SLICE)
    return Reproduced(root, run(root, "dvc", "repro"))


@pytest.fixture
def workspace(reproduced, tmp_path) -> Path:
    """This test's own copy of the reproduced workspace (outputs, dvc.lock, DVC cache and git)."""
    return clone_workspace(reproduced.root, tmp_path / "evergreen")


def test_repro_runs_every_stage_and_exports_a_verified_model(reproduced, workspace):
    assert ran_stages(reproduced.first_run) == STAGES

    parity = json.loads((workspace / "reports/export/parity.json").read_text())
    assert parity["label_mismatches"] == 0
    assert parity["max_abs_probability_diff"] <= 1e-4
    model = onnx.load(workspace / "models/model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert not list((workspace / "models").glob("*.onnx.data"))  # one self-contained file
    card = json.loads((workspace / "models/model_card.json").read_text())
    assert {i["name"] for i in card["inputs"]} == {i.name for i in model.graph.input}
    assert len(card["classes"]) == 8

    metrics = json.loads((workspace / "reports/evaluate/metrics.json").read_text())
    assert metrics["model"]["accuracy"] > metrics["baseline_majority"]["accuracy"]
    shown = run(workspace, "dvc", "metrics", "show").stdout
    assert "baseline_hgb.accuracy" in shown and "model.accuracy" in shown


def test_second_repro_is_a_noop(workspace):
    result = run(workspace, "dvc", "repro")
    assert ran_stages(result) == []
    assert "up to date" in run(workspace, "dvc", "status").stdout


def test_plots_render_offline(workspace, tmp_path):
    run(workspace, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page
    for name in ("confusion.csv", "roc.csv", "precision_recall.csv", "calibration.csv", "loss.tsv"):
        assert name in page


def test_training_knob_reruns_train_evaluate_export_only(workspace):
    edit_params(workspace, train={"lr": 0.003})
    assert ran_stages(run(workspace, "dvc", "repro")) == ["train", "evaluate", "export"]


def test_shared_code_change_reruns_its_users_only(workspace):
    # The training engine: shared by train, evaluate and export, used by no data stage.
    engine_module = workspace / "pipeline/engine/__init__.py"
    engine_module.write_text(engine_module.read_text() + "\n# touched by the pipeline test\n")
    ran = ran_stages(run(workspace, "dvc", "repro"))
    assert {"train", "evaluate"} <= set(ran)
    assert not {"ingest", "clean", "split", "augment"} & set(ran)


def test_forced_rerun_reproduces_identical_metrics(workspace):
    before = {p: (workspace / p).read_text() for p in ("reports/evaluate/metrics.json", "reports/train/live/metrics.json")}
    run(workspace, "dvc", "repro", "--force")
    after = {p: (workspace / p).read_text() for p in before}
    assert after == before
    assert "up to date" in run(workspace, "dvc", "status").stdout


def test_bad_param_stops_with_one_line_naming_the_key(workspace):
    edit_params(workspace, train={"lr": -0.1})
    result = run(workspace, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert re.search(r"train\.lr = -0\.1: .*greater than 0", result.stderr + result.stdout)


def test_missing_source_stops_with_one_line_naming_the_file(workspace):
    edit_params(workspace, ingest={"source": "data/nowhere.csv"})
    result = run(workspace, "dvc", "repro", "ingest", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert "data/nowhere.csv: no such file or folder (ingest.source)" in result.stderr


def test_own_binary_csv_by_params_alone(workspace):
    """Another real data set (scikit-learn's bundled breast-cancer table, binary) switched in by params only."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.assign(diagnosis=bunch.target.map({0: "malignant", 1: "benign"})).drop(columns="target")
    frame.loc[frame.index[::17], "mean radius"] = None  # real files have holes
    (workspace / "data/raw").mkdir(parents=True, exist_ok=True)
    frame.to_csv(workspace / "data/raw/cancer.csv", index=False)
    edit_params(
        workspace,
        ingest={
            "source": "data/raw/cancer.csv",
            "target": "diagnosis",
            "time_column": None,
            "time_cutoff": None,
            "drop_columns": [],
            "categorical": [],
            "min_rows": 100,
            "max_rows": None,
        },
        clean={"valid_ranges": {}},
        split={"method": "stratified"},
        train={"epochs": 15},
    )
    assert ran_stages(run(workspace, "dvc", "repro")) == STAGES
    card = json.loads((workspace / "models/model_card.json").read_text())
    assert card["classes"] == ["benign", "malignant"]
    assert {i["name"] for i in card["inputs"]} == set(bunch.feature_names)
    metrics = json.loads((workspace / "reports/evaluate/metrics.json").read_text())
    assert metrics["model"]["accuracy"] > 0.9
    assert json.loads((workspace / "reports/export/parity.json").read_text())["label_mismatches"] == 0
