"""End to end on a real Prefect server: deployments from prefect.yaml, a process worker, real data.

Starts a server on a free loopback port with a temporary PREFECT_HOME (``flows.stack.Stack``,
the same code as ``make prefect-up``), deploys ``prefect.yaml``, and then drives it as a user does, with
the ``evergreen`` command: ``evergreen retrain --watch`` runs a first retrain on the worker and prints
"promoted v0001"; a batch from the training era lands and the drift-monitor deployment does not trigger;
``evergreen land next`` lands the next real survey waves and ``evergreen monitor --watch`` prints the drift
share and the retrain it triggered, follows that run on the worker to its end and prints its outcome;
finally ``evergreen registry rollback`` rolls the promotion back and ``registry history`` shows every
decision. Every process started here is stopped at the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.stack import Stack, free_port
from pipeline.lifecycle.landing import land_frame, reference_sample
from pipeline.lifecycle.registry import Registry
from pipeline.params import load_params
from tests.conftest import copy_repo, tool_env
from tests.flows.test_flows import SLICE

pytestmark = pytest.mark.slow
TIMEOUT = 420


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("integration"), **SLICE)
    stack = Stack(root=root, home=tmp_path_factory.mktemp("prefect-home"), port=free_port())
    try:
        stack.up()
        with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
            yield stack
    finally:
        stack.down()
        assert not stack.healthy(), "the Prefect server is still answering after down()"


@pytest.fixture(scope="module")
def params(stack):
    params = load_params(stack.root / "params.yaml")
    return params.model_copy(
        update={
            "paths": params.paths.model_copy(update={k: str(stack.root / v) for k, v in params.paths.model_dump().items()})
        }
    )


def runs_of(deployment: str) -> list:
    """Runs started by hand or by the monitor; the cron schedules' future runs are left out."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))
    return [run for run in runs if not run.auto_scheduled]


def wait_final(flow_run_id, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} did not finish within {timeout}s")


def test_deployments_are_scheduled_from_prefect_yaml(stack):
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert {"retrain", "drift-monitor"} <= set(deployments)
    assert deployments["retrain"].schedules and deployments["drift-monitor"].schedules
    assert deployments["retrain"].work_pool_name == "evergreen"
    assert deployments["retrain"].global_concurrency_limit.limit == 1


def evergreen(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """The evergreen command in the workspace, pointed at this stack's server."""
    env = {**tool_env(), "PREFECT_API_URL": stack.api_url}
    return subprocess.run(
        [sys.executable, "-m", "evergreen", *args], cwd=stack.root, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


# The scenario's steps are module fixtures, each taking the one before it: any test runs alone (it brings
# the steps it needs along), and in the file's order each step runs once.


@pytest.fixture(scope="module")
def first_retrain(stack):
    """``evergreen retrain --watch``: the first retrain, on the worker."""
    return evergreen(stack, "retrain", "--watch")


@pytest.fixture(scope="module")
def no_drift_run(stack, params, first_retrain):
    """A batch from the training era lands and the drift-monitor deployment runs."""
    assert first_retrain.returncode == 0, first_retrain.stderr[-3000:]
    land_frame(reference_sample(params, 2000, seed=3, shift={}), Path(params.paths.landing), "training_era_sample")
    run = run_deployment("drift-monitor/drift-monitor", timeout=TIMEOUT, poll_interval=2)
    return run, len(runs_of("retrain"))  # counted now: later steps start retrains of their own


@pytest.fixture(scope="module")
def drift_retrain(stack, no_drift_run):
    """``evergreen land next --waves 2``, then ``evergreen monitor --watch`` (the retrain it triggers, to its end)."""
    landed = evergreen(stack, "land", "next", "--waves", "2")
    assert landed.returncode == 0, landed.stderr
    return evergreen(stack, "monitor", "--watch")


def test_first_retrain_through_the_worker_promotes_v1(params, first_retrain):
    watched = first_retrain
    assert watched.returncode == 0, watched.stderr[-3000:]
    outcome = watched.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[\w-]+: promoted v0001: accuracy 0\.\d+ \(no champion; baseline 0\.\d+\); .+", outcome), outcome
    assert "Completed" in watched.stderr  # the states it followed
    assert Registry(params.paths.registry).production().name == "v0001"


def test_no_drift_batch_does_not_trigger(no_drift_run):
    run, retrains = no_drift_run
    assert run.state.is_completed(), run.state
    assert retrains == 1  # only the first, manual one


def test_later_waves_trigger_a_retrain_that_records_its_decision(params, drift_retrain):
    watched = drift_retrain
    assert watched.returncode == 0, watched.stderr[-3000:]
    drift_line, outcome = watched.stdout.strip().splitlines()[-2:]
    match = re.fullmatch(
        r"drift: (\d+)/(\d+) columns drifted \(\d+%\) on [\d,]+ new rows; retrain triggered: ([\w-]+)", drift_line
    )
    assert match, drift_line
    triggered = [r for r in runs_of("retrain") if r.parameters.get("reason") == "drift"]
    assert [r.name for r in triggered] == [match.group(3)]
    assert outcome.startswith(f"{match.group(3)}: promoted v0002: accuracy ") and "vs v0001's" in outcome, outcome
    finished = wait_final(triggered[0].id)
    assert finished.state.is_completed(), finished.state
    history = Registry(params.paths.registry).history()
    decision = [e for e in history if e["event"] in {"promote", "rejected"}][-1]
    assert decision["decision"]["trigger"] == "drift"
    assert decision["decision"]["champion_version"] == "v0001"


def test_rollback_restores_the_previous_production_model(stack, params, drift_retrain):
    assert drift_retrain.returncode == 0, drift_retrain.stderr[-3000:]
    registry = Registry(params.paths.registry)
    assert registry.production().name == "v0002", "the drift retrain was expected to be promoted (gate tolerance 0.1)"
    result = evergreen(stack, "registry", "rollback", "--reason", "integration test")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "production: v0001 (was v0002)\n"
    assert registry.production().name == "v0001"
    assert registry.history()[-1]["event"] == "rollback"
    table = evergreen(stack, "registry", "history").stdout.splitlines()
    assert [row.split()[2] for row in table[1:]] == ["register", "promote", "register", "promote", "rollback"]
    assert "integration test (was v0002)" in table[-1]
