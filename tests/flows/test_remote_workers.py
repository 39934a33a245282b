"""The ``retrain-remote`` deployment on a real Prefect server and process worker: a fresh clone per run.

The project lives in a bare git repository (a copy of this checkout with the slice's params committed),
the DVC remote and the registry in folders of their own; the worker's environment names the three
(EVERGREEN_GIT_REPOSITORY, EVERGREEN_DVC_REMOTE, EVERGREEN_REGISTRY). Each run's pull steps clone the
repository into the worker's temporary directory and prepare it (``python -m flows.common
prepare-workspace``), and the flow runs there. Checked: the run never touched the checkout the
deployment came from; the remote holds the version's data and models; the shared registry has v0001;
another fresh clone reproduces v0001's exact bytes with ``git checkout`` + its dvc.lock + ``dvc pull``;
a second run with nothing changed skips every stage; a run without a shared registry refuses to start.
Every process started here is stopped at the end.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.common import DVC_REMOTE_ENV
from flows.stack import Stack, free_port
from pipeline.lifecycle.registry import Registry
from pipeline.params.paths import REGISTRY_ENV
from tests.conftest import copy_repo, tool_env
from tests.flows.test_flows import SLICE

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
TIMEOUT = 540
DEPLOYMENT = "retrain/retrain-remote"


def run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


class World:
    """The places that share nothing but storage: the bare repository, the DVC remote, the registry."""

    def __init__(self, base: Path) -> None:
        self.source = copy_repo(base / "source", **SLICE)  # the checkout the deployment is made from
        self.bare = base / "evergreen.git"
        run(["git", "clone", "-q", "--bare", str(self.source), str(self.bare)], base)
        self.remote = base / "dvc-remote"
        self.registry = base / "registry"
        self.head = run(["git", "rev-parse", "HEAD"], self.bare).strip()
        self.source_lock = (self.source / "dvc.lock").read_bytes()
        self.stack: Stack | None = None

    def worker_log(self) -> str:
        """The worker's output: a pull step's own lines go there, not to the run's logs in the API."""
        assert self.stack is not None
        return (self.stack.home / "logs" / "worker.log").read_text()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("remote-workers")
    world = World(base)
    stack = world.stack = Stack(root=world.source, home=tmp_path_factory.mktemp("prefect-home"), port=free_port())
    with pytest.MonkeyPatch.context() as patch:
        # The worker's environment, which each run's pull steps and flow inherit.
        patch.setenv("EVERGREEN_GIT_REPOSITORY", str(world.bare))
        patch.setenv(DVC_REMOTE_ENV, str(world.remote))
        patch.setenv(REGISTRY_ENV, str(world.registry))
        try:
            stack.up()
            with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
                yield world
        finally:
            stack.down()
            assert not stack.healthy(), "the Prefect server is still answering after down()"


def stage_states(flow_run_id) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {t.name.split("-", 1)[1]: t.state.name for t in tasks if t.name.startswith("dvc-")}


def run_logs(flow_run_id) -> str:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(entry.message for entry in logs)


@pytest.fixture(scope="module")
def first_run(world):
    run_ = run_deployment(DEPLOYMENT, parameters={"reason": "manual"}, timeout=TIMEOUT, poll_interval=2)
    assert run_.state.is_completed(), f"{run_.state}\n{run_logs(run_.id)[-3000:]}"
    log.info("first remote retrain: %.1fs", run_.total_run_time.total_seconds())
    return run_


def test_the_remote_run_registers_v1_in_the_shared_registry_from_a_clone_of_the_pinned_repository(world, first_run):
    production = Registry(world.registry).production()
    assert production.name == "v0001"
    assert production.meta["git_revision"] == world.head
    workspace = Path(production.meta["sources"]["model.onnx"]).parent.parent
    assert not workspace.is_relative_to(world.source)
    deadline = time.monotonic() + 60  # the worker removes its temporary directory once the run's process has exited
    while workspace.exists() and time.monotonic() < deadline:
        time.sleep(1)
    assert not workspace.exists(), "the per-run clone outlived its run"
    # The checkout the deployment came from was never used: no outputs, its dvc.lock and git status unchanged.
    assert not (world.source / "models" / "model.onnx").exists()
    assert (world.source / "dvc.lock").read_bytes() == world.source_lock
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], world.source) == ""
    stages = stage_states(first_run.id)
    assert set(stages) >= {"pull", "ingest", "train", "export", "push"}
    assert stages["pull"] == stages["push"] == "Completed"


def test_another_fresh_clone_reproduces_the_registered_version_from_the_remote(world, first_run, tmp_path):
    version = Registry(world.registry).get("v0001")
    clone = tmp_path / "elsewhere"
    run(["git", "clone", "-q", str(world.bare), str(clone)], tmp_path)
    run(["git", "checkout", "-q", version.meta["git_revision"]], clone)
    shutil.copyfile(version.dvc_lock, clone / "dvc.lock")
    run([sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "shared", str(world.remote)], clone)
    run([sys.executable, "-m", "dvc", "pull"], clone)
    assert "in sync" in run([sys.executable, "-m", "dvc", "status", "-c"], clone)
    assert (clone / "models" / "model.onnx").read_bytes() == version.onnx.read_bytes()
    assert (clone / "models" / "model_card.json").read_bytes() == version.card.read_bytes()
    assert (clone / "reports" / "evaluate" / "metrics.json").read_bytes() == version.metrics_file.read_bytes()


def test_a_second_remote_run_with_nothing_changed_skips_every_stage(world, first_run):
    again = run_deployment(DEPLOYMENT, parameters={"reason": "manual"}, timeout=TIMEOUT, poll_interval=2)
    assert again.state.is_completed(), f"{again.state}\n{run_logs(again.id)[-3000:]}"
    log.info("second remote retrain, nothing changed: %.1fs", again.total_run_time.total_seconds())
    stages = stage_states(again.id)
    assert {stages[s] for s in ("ingest", "clean", "split", "augment", "train", "evaluate", "export")} == {"Skipped"}
    assert "dvc.lock of v0001 (registered from this commit) put in place" in world.worker_log()
    history = Registry(world.registry).history()
    assert history[-1]["event"] == "unchanged" and history[-1]["version"] == "v0001"


def test_a_remote_run_without_a_shared_registry_refuses_to_start(world, first_run):
    refused = run_deployment(
        DEPLOYMENT,
        parameters={"reason": "manual"},
        job_variables={"env": {REGISTRY_ENV: "", "EVERGREEN_ROOT": ""}},
        timeout=TIMEOUT,
        poll_interval=2,
    )
    assert refused.state.is_crashed(), refused.state  # the pull step failed: the flow never started
    assert f"set ${REGISTRY_ENV}" in world.worker_log()
    assert [v.name for v in Registry(world.registry).versions()] == ["v0001"]
