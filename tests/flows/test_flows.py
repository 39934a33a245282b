"""The retrain and drift-monitor flows under ``prefect_test_harness`` on a slice of the real data.

One workspace, in order: the first retrain promotes v0001; a retrain with nothing changed skips
every stage and adds no version; a batch from the training era does not trigger; the next real
survey waves do, exactly once, through the retrain deployment; the drift retrain then gates the
challenger against the champion; a rolled-back model stays rolled back; a warm retrain fine-tunes
the production model and a cold one starts afresh; a corrupt batch is quarantined without stopping the monitor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.testing.utilities import prefect_test_harness

from flows.monitor import drift_monitor
from flows.retrain import retrain
from pipeline.lifecycle.landing import land_frame, next_periods, reference_sample
from pipeline.lifecycle.registry import Registry
from pipeline.params import load_params
from tests.conftest import copy_repo

pytestmark = pytest.mark.slow

SLICE = {
    "ingest": {"max_rows": 4000},
    "train": {"epochs": 3},
    "evaluate": {"baseline_max_iter": 30},
    "gate": {"tolerance": 0.05},
    "monitor": {"min_rows": 300, "cooldown_hours": 0},
}


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, harness):
    root = copy_repo(tmp_path_factory.mktemp("flows"), **SLICE)
    previous = os.environ.get("EVERGREEN_ROOT")
    os.environ["EVERGREEN_ROOT"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("EVERGREEN_ROOT", None)
    else:
        os.environ["EVERGREEN_ROOT"] = previous


@pytest.fixture(scope="module")
def params(workspace):
    params = load_params(workspace / "params.yaml")
    # Paths in params are relative to the workspace.
    return params.model_copy(update={"paths": params.paths.model_copy(update={
        k: str(workspace / v) for k, v in params.paths.model_dump().items()
    })})


@pytest.fixture(scope="module")
def retrain_deployment(harness):
    """A real deployment of the retrain flow (no worker: triggered runs stay scheduled for inspection)."""
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(retrain)
        client.create_deployment(flow_id=flow_id, name="retrain")
    return "retrain/retrain"


def retrain_runs() -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["retrain"])))


def test_first_retrain_runs_every_stage_and_promotes(workspace, params):
    result = retrain(reason="manual")
    assert [s["status"] for s in result["stages"]] == ["ran"] * 7
    assert [s["stage"] for s in result["stages"]] == ["ingest", "clean", "split", "augment", "train", "evaluate", "export"]
    assert result["outcome"] == {"action": "promoted", "version": "v0001"}
    assert result["champion"] is None and "majority baseline" in result["decision"]["reason"]
    registry = Registry(params.paths.registry)
    assert registry.production().name == "v0001"
    registry.production().verify()


def test_retrain_with_nothing_changed_skips_everything_and_adds_no_version(workspace, params):
    result = retrain(reason="schedule")
    assert {s["status"] for s in result["stages"]} == {"skipped"}
    assert result["outcome"] == {"action": "unchanged", "version": "v0001"}
    assert len(Registry(params.paths.registry).versions()) == 1


def test_training_era_batch_does_not_trigger(workspace, params, retrain_deployment):
    land_frame(reference_sample(params, 2000, seed=1, shift={}), Path(params.paths.landing), "sample_training_era")
    summary = drift_monitor(retrain_deployment=retrain_deployment)
    assert summary["decision"]["retrain"] is False
    assert summary["drift"]["drifted_share"] < params.monitor.drift_share
    assert Path(summary["report"]).stat().st_size > 0
    assert retrain_runs() == []


def test_next_real_survey_waves_trigger_a_retrain_once(workspace, params, retrain_deployment):
    for period, frame in next_periods(params, 2):
        land_frame(frame, Path(params.paths.landing), f"year_{period}")
    summary = drift_monitor(retrain_deployment=retrain_deployment)
    assert summary["decision"]["retrain"] is True, summary["decision"]
    assert summary["drift"]["drifted_share"] >= params.monitor.drift_share
    runs = retrain_runs()
    assert len(runs) == 1
    assert runs[0].parameters["reason"] == "drift" and summary["report"] in runs[0].parameters["note"]
    summary_file = Path(summary["report"]).with_name("summary.json")
    assert json.loads(summary_file.read_text())["key"] == summary["key"]

    again = drift_monitor(retrain_deployment=retrain_deployment)
    assert again == {"checked": False}  # nothing new: the same data never triggers twice
    assert len(retrain_runs()) == 1


def test_drift_retrain_gates_the_challenger_against_the_champion(workspace, params):
    result = retrain(reason="drift", note="test")
    ran = [s["stage"] for s in result["stages"] if s["status"] == "ran"]
    assert ran[:2] == ["ingest", "clean"]  # the landed waves changed the data
    assert result["champion_version"] == "v0001" and result["champion"] is not None
    registry = Registry(params.paths.registry)
    last = registry.history()[-1]
    assert last["event"] in {"promote", "rejected"}
    assert last["decision"]["challenger"]["accuracy"] == result["challenger"]["accuracy"]


def test_a_rolled_back_model_is_not_promoted_again_by_the_next_retrain(workspace, params):
    registry = Registry(params.paths.registry)
    assert registry.production().name == "v0002"  # the drift retrain was promoted (gate tolerance 0.05)
    registry.rollback(reason="operator")
    result = retrain(reason="schedule")  # nothing changed: it reproduces the rolled-back v0002 exactly
    assert result["outcome"] == {"action": "rejected", "version": "v0002"}
    assert registry.production().name == "v0001"
    assert "rolled back" in registry.history()[-1]["reason"]


def test_a_warm_retrain_fine_tunes_the_production_model_and_a_cold_one_starts_afresh(workspace, params):
    registry = Registry(params.paths.registry)
    production = registry.production()
    init = Path(params.paths.init_model) / "model.pt"
    warm = retrain(reason="manual", start="warm")
    assert warm["start"] == {"start": "warm", "from": production.name}
    assert init.read_bytes() == production.torch_model.read_bytes()
    ran = [s["stage"] for s in warm["stages"] if s["status"] == "ran"]
    assert ran[:1] == ["train"]  # the initial weights are a dependency of train, nothing upstream changed
    assert registry.get(warm["outcome"]["version"]).torch_model is not None

    cold = retrain(reason="manual", start="cold")
    assert cold["start"] == {"start": "cold", "from": None} and not init.exists()
    assert "train" in [s["stage"] for s in cold["stages"] if s["status"] == "ran"]


def test_corrupt_batch_is_quarantined_and_the_monitor_goes_on(workspace, params, retrain_deployment):
    landing = Path(params.paths.landing)
    (landing / "broken.csv").write_text("year,age\n2012,\"unterminated\n")
    summary = drift_monitor(retrain_deployment=retrain_deployment)
    assert summary == {"checked": False}
    reason = Path(params.paths.quarantine) / "broken.csv.reason.txt"
    assert reason.exists() and reason.read_text().strip()
