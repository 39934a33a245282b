"""Three hosts that share nothing but storage and a database: a worker, a monitor and a service.

The project lives in a bare git repository (a copy of this checkout with the slice's params committed). The
Prefect server keeps its state in a real PostgreSQL server; the model registry and the shared landing area
are in an S3 bucket (moto in server mode, the stand-in for S3: tests/s3.py); the DVC remote is a folder.
The worker's environment names them (EVERGREEN_GIT_REPOSITORY, EVERGREEN_DVC_REMOTE, EVERGREEN_REGISTRY,
EVERGREEN_LANDING) and each host has its own download cache (EVERGREEN_CACHE).

The ``retrain-remote`` deployment's pull steps clone the repository into the worker's temporary directory
and prepare it (``python -m flows.common prepare-workspace``), and the flow runs there. Checked: the run never
touched the checkout the deployment came from; the remote holds the version's data and models; the store has
v0001; another fresh clone reproduces v0001's exact bytes with ``git checkout`` + its dvc.lock + ``dvc pull``;
a second run with nothing changed skips every stage; a run without a shared registry refuses to start. Then
the whole loop across hosts: survey waves land in the bucket from a monitor host (its own clone), its drift
check triggers ``retrain-remote``, the worker's fresh clone pulls the batches, retrains and promotes v0002,
and a service started from a third clone, reading only the bucket, answers with v0002 by itself.
Every process started here is stopped at the end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.common import DVC_REMOTE_ENV
from flows.stack import Stack, free_port
from pipeline.lifecycle.registry import ObjectRegistry
from pipeline.lifecycle.registry.objectstore import CACHE_ENV
from pipeline.params.paths import LANDING_ENV, REGISTRY_ENV
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
    """The places that share nothing but storage: the bare repository, the DVC remote, the S3 bucket."""

    def __init__(self, base: Path, bucket: str) -> None:
        self.base = base
        self.source = copy_repo(base / "source", **SLICE)  # the checkout the deployment is made from
        self.bare = base / "evergreen.git"
        run(["git", "clone", "-q", "--bare", str(self.source), str(self.bare)], base)
        self.remote = base / "dvc-remote"
        self.registry = f"{bucket}/registry"
        self.landing = f"{bucket}/landing"
        self.head = run(["git", "rev-parse", "HEAD"], self.bare).strip()
        self.source_lock = (self.source / "dvc.lock").read_bytes()
        self.stack: Stack | None = None

    def store(self) -> ObjectRegistry:
        """The registry as this test's checks see it (their own cache, like any other host)."""
        return ObjectRegistry(self.registry, cache_dir=self.base / "checks-cache")

    def host(self, name: str) -> Path:
        """Another host's checkout: its own clone of the repository, nothing else of the others'."""
        clone = self.base / name
        run(["git", "clone", "-q", str(self.bare), str(clone)], self.base)
        return clone

    def worker_log(self) -> str:
        """The worker's output: a pull step's own lines go there, not to the run's logs in the API."""
        assert self.stack is not None
        return (self.stack.home / "logs" / "worker.log").read_text()


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres, s3_server):
    base = tmp_path_factory.mktemp("remote-workers")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env().items():  # every host reaches the bucket; nothing else is shared
            patch.setenv(name, value)
        world = World(base, s3_server.bucket())
        stack = world.stack = Stack(
            root=world.source,
            home=tmp_path_factory.mktemp("prefect-home"),
            port=free_port(),
            database_url=postgres.database("prefect", driver="asyncpg"),
        )
        # The worker's environment, which each run's pull steps and flow inherit.
        patch.setenv("EVERGREEN_GIT_REPOSITORY", str(world.bare))
        patch.setenv(DVC_REMOTE_ENV, str(world.remote))
        patch.setenv(REGISTRY_ENV, world.registry)
        patch.setenv(LANDING_ENV, world.landing)
        patch.setenv(CACHE_ENV, str(base / "worker-cache"))
        try:
            stack.up()
            patch.setenv(CACHE_ENV, str(base / "test-cache"))  # the worker has its environment; this process is another host
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
    production = world.store().production()
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
    version = world.store().get("v0001")
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
    history = world.store().history()
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
    assert [v.name for v in world.store().versions()] == ["v0001"]


def wait_for_run(flow_run_id, timeout: float = TIMEOUT):
    """The flow run once it reached a final state (the worker on the other "host" runs it)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            assert time.monotonic() < deadline, f"flow run {flow_run_id} still {flow_run.state} after {timeout}s"
            time.sleep(2)


def served_version(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/model", timeout=5).json().get("version")
    except (httpx.HTTPError, ValueError):
        return None


def test_drift_landed_in_the_bucket_is_retrained_on_the_worker_and_served_on_a_third_host(world, first_run, postgres):
    """Monitor host -> Prefect server on PostgreSQL -> worker's fresh clone -> S3 registry -> service host."""
    assert world.store().production().name == "v0001"
    service_host, monitor_host = world.host("service-host"), world.host("monitor-host")
    port = free_port()
    service_env = {**tool_env(), CACHE_ENV: str(world.base / "service-cache"), REGISTRY_ENV: world.registry}
    service = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--database-url", f"sqlite:///{service_host / 'log.sqlite'}"],
        cwd=service_host,
        env=service_env,
        stdout=subprocess.DEVNULL,
        stderr=(world.base / "service.log").open("w"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while served_version(port) != "v0001":
            assert service.poll() is None, f"the service exited: {(world.base / 'service.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the service on the third host never served v0001"
            time.sleep(0.5)

        # The monitor's host: later survey waves land in the bucket, and its drift check triggers the worker.
        landed = subprocess.run(
            [sys.executable, "-m", "pipeline.lifecycle.landing", "next", "--waves", "2"],
            cwd=monitor_host,
            env={**tool_env(), CACHE_ENV: str(world.base / "monitor-cache")},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert landed.returncode == 0, landed.stderr
        # The monitor host's own process (as a scheduled check there would run), not this one: nothing of its
        # Prefect client (log and event workers bound to this stack) outlives the stack in the test process.
        checked = subprocess.run(
            [sys.executable, "-m", "evergreen", "monitor", "--deployment", DEPLOYMENT, "--cooldown-hours", "0", "--json"],
            cwd=monitor_host,
            env={
                **tool_env(),
                CACHE_ENV: str(world.base / "monitor-cache"),
                "PREFECT_API_URL": world.stack.api_url,
                "EVERGREEN_ROOT": "",  # the monitor host's checkout is its working directory
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert checked.returncode == 0, checked.stderr[-3000:]
        summary = json.loads(checked.stdout.strip().splitlines()[-1])
        assert summary["decision"]["retrain"] is True, summary["decision"]
        assert summary["retrain_flow_run"], summary

        retrained = wait_for_run(summary["retrain_flow_run"])
        assert retrained.state.is_completed(), f"{retrained.state}\n{run_logs(retrained.id)[-3000:]}"
        log.info("drift retrain on the worker: %.1fs", retrained.total_run_time.total_seconds())
        store = world.store()
        production = store.production()
        assert production.name == "v0002", [e["event"] for e in store.history()]
        first = store.get("v0001")
        assert production.data_sha256 != first.data_sha256  # trained on other rows: the waves pulled from the bucket
        promoted_at = datetime.fromisoformat(next(e for e in reversed(store.history()) if e["event"] == "promote")["time"])

        deadline = time.monotonic() + 60
        while served_version(port) != "v0002":
            assert time.monotonic() < deadline, "the service on the third host did not switch to v0002"
            time.sleep(0.2)
        delay = (datetime.now(promoted_at.tzinfo) - promoted_at).total_seconds()
        log.info("promotion on the worker to serving on the third host: %.2fs", delay)

        # No two hosts shared a working directory.
        worker_clone = Path(production.meta["sources"]["model.onnx"]).parent.parent
        places = {world.source, service_host, monitor_host, worker_clone}
        assert len(places) == 4 and not any(a != b and a.is_relative_to(b) for a in places for b in places)
        assert not (monitor_host / "models" / "model.onnx").exists() and not (service_host / "models" / "model.onnx").exists()
        # The Prefect server kept its state in PostgreSQL: the drift check and both retrains are there.
        database = world.stack.database_url.rsplit("/", 1)[1]
        runs = postgres.psql(
            database, "SELECT f.name FROM flow_run r JOIN flow f ON f.id = r.flow_id WHERE r.state_type = 'COMPLETED'"
        )
        assert "drift-monitor" in runs and runs.count("retrain") >= 2
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
