"""Issue 13: with several workers, ``GET /metrics`` reports the service's totals whichever worker answers
(prometheus_client's multiprocess mode, in a private directory the service makes and removes); a worker's
counts outlive it, its model gauge does not; one worker keeps its in-process registry and makes no files;
``--workers`` takes a number or auto and names serve.workers when it takes neither."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from pipeline.lifecycle.registry import Registry
from pipeline.params import load_params
from serving.__main__ import workers_option
from serving.app import WorkersCollector
from tests.conftest import REPO, tool_env
from tests.reliability.test_service_edges import LiveServer, call
from tests.service.test_api import records

ANSWERED, REFUSED, SCRAPES = 40, 4, 8
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Prometheus text as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:  # a new connection each time
        return samples(response.read().decode())


@pytest.fixture(scope="module")
def one_record(served_workspace) -> bytes:
    params = load_params(served_workspace / "params.yaml")
    test = pd.read_parquet(served_workspace / params.paths.split / "test.parquet").head(1)
    return json.dumps(records(test, Registry(served_workspace / params.paths.registry).get("v0001").card_data())).encode()


def serve(root: Path, workspace: Path, workers: int) -> tuple[LiveServer, Path, Path]:
    """``python -m serving --workers`` from ``root``, its temporary files in ``root/tmp``, with a
    $PROMETHEUS_MULTIPROC_DIR of the user's (``root/user``) that the service must leave alone."""
    tmp, user = root / "tmp", root / "user"
    tmp.mkdir()
    user.mkdir()
    registry = workspace / load_params(workspace / "params.yaml").paths.registry
    env = {"TMPDIR": str(tmp), "PROMETHEUS_MULTIPROC_DIR": str(user)}
    server = LiveServer(root, registry, serve={"workers": workers, "access_log": False}, env=env)
    # Every worker ready (each loads the model): awaited in its startup line, not polled.
    server.wait_for_line("Application startup complete", timeout=60, count=workers)
    return server, tmp, user


def post(url: str, body: bytes, count: int) -> None:
    for _ in range(count):  # each on a new connection: the kernel hands it to either worker
        call("POST", f"{url}/predict", body, {"content-type": "application/json"})


@pytest.mark.slow
def test_two_workers_metrics_are_the_services_totals(served_workspace, one_record, tmp_path):
    server, tmp, user = serve(tmp_path, served_workspace, workers=2)
    try:
        post(server.url, one_record, ANSWERED)
        post(server.url, b"[]", REFUSED)  # 422: an empty list
        for _ in range(SCRAPES):  # whichever worker answers, the same totals
            found = scrape(server.url)
            assert value(found, "evergreen_requests_total", endpoint="/predict", status="200") == ANSWERED
            assert value(found, "evergreen_requests_total", endpoint="/predict", status="422") == REFUSED
            assert value(found, "evergreen_errors_total", endpoint="/predict", reason="invalid") == REFUSED
            assert value(found, "evergreen_records_scored_total") == ANSWERED
            assert value(found, "evergreen_request_latency_seconds_count") == ANSWERED
            assert value(found, "evergreen_request_latency_seconds_bucket", le="+Inf") == ANSWERED
            assert value(found, "evergreen_model_info", version="v0001") == 2  # both workers serve it
            assert value(found, "evergreen_model_reloads_total") == 2  # each loaded it once
        # The totals are each worker's own counts, summed: one file of counters per worker, in the one
        # directory the service made.
        pids = {int(pid) for pid in server.wait_for_line(r"serving with 2 worker processes: ").split(": ")[-1].split(", ")}
        (directory,) = tmp.glob("evergreen-metrics-*")
        assert {int(path.stem.split("_")[-1]) for path in directory.glob("counter_*.db")} == pids
        assert sum(answered_by(path) for path in directory.glob("counter_*.db")) == ANSWERED
    finally:
        server.stop()
    assert server.process.returncode == 0, server.output
    assert not list(tmp.iterdir())  # the metrics directory went with the service
    assert not list(user.iterdir())  # the user's directory was never written
    assert "$PROMETHEUS_MULTIPROC_DIR is set" in server.output and "Traceback" not in server.output


def answered_by(counters: Path) -> float:
    """The /predict answers one worker counted, read from its own file of counters."""
    return sum(
        sample.value
        for metric in MultiProcessCollector.merge([str(counters)])
        for sample in metric.samples
        if sample.name == "evergreen_requests_total" and sample.labels == {"endpoint": "/predict", "status": "200"}
    )


@pytest.mark.slow
def test_one_worker_keeps_its_registry_in_memory(served_workspace, one_record, tmp_path):
    server, tmp, user = serve(tmp_path, served_workspace, workers=1)
    try:
        post(server.url, one_record, 5)
        found = scrape(server.url)
        assert value(found, "evergreen_requests_total", endpoint="/predict", status="200") == 5
        assert value(found, "evergreen_model_info", version="v0001") == 1
        # The in-process registry's own samples, which the multiprocess collector never gives.
        assert value(found, "evergreen_records_scored_created") is not None
        assert "worker processes" not in server.output
    finally:
        server.stop()
    assert not list(tmp.iterdir()) and not list(user.iterdir())  # no metric files anywhere


@pytest.mark.slow
def test_workers_of_a_killed_service_remove_its_metrics_directory(served_workspace, tmp_path):
    """SIGKILL leaves the parent no time to clean up: its workers, told by the kernel, stop and remove it."""
    server, tmp, _ = serve(tmp_path, served_workspace, workers=2)
    pids = [int(pid) for pid in server.wait_for_line(r"serving with 2 worker processes: ").split(": ")[-1].split(", ")]
    assert len(list(tmp.glob("evergreen-metrics-*"))) == 1
    ended = [os.pidfd_open(pid) for pid in pids]  # readable once that worker has exited
    try:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)
        for pidfd in ended:
            exited = select.poll()
            exited.register(pidfd, select.POLLIN)
            assert exited.poll(60_000), f"a worker outlived its parent:\n{server.output}"
    finally:
        for pidfd in ended:
            os.close(pidfd)
    assert not list(tmp.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hang-up"])
def test_ctrl_c_or_a_hang_up_stops_every_worker_cleanly(served_workspace, tmp_path, signum):
    """Ctrl-C in a terminal, or closing it (SIGHUP), signals the whole process group at once: each worker has
    the signal before the parent can pass the stop on (as SIGTERM: a second SIGINT would make uvicorn skip the
    app's shutdown; SIGHUP would kill a worker before it closed its log)."""
    server, tmp, _ = serve(tmp_path, served_workspace, workers=2)
    pids = [int(pid) for pid in server.wait_for_line(r"serving with 2 worker processes: ").split(": ")[-1].split(", ")]
    for pid in [*pids, server.process.pid]:
        os.kill(pid, signum)
    assert server.process.wait(timeout=60) == 0, server.output
    server.wait_for_line("Application shutdown complete", count=2)  # each worker closed its log
    assert "failed" not in server.output and "Traceback" not in server.output
    assert not list(tmp.iterdir())


WORKER = """
import sys
from pathlib import Path

from serving.app import ServiceMetrics, keep_metrics_in

directory, answered, version = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
keep_metrics_in(directory)
metrics = ServiceMetrics(directory)
metrics.serving("v0001", None)
if version != "v0001":
    metrics.serving(version, "v0001")  # a promotion this worker saw
metrics.requests.labels("/predict", "200").inc(answered)
metrics.records.inc(answered)
metrics.latency.observe(0.003)
print(__import__("os").getpid())
"""


@pytest.mark.slow
def test_a_workers_counts_outlive_it_and_its_model_gauge_does_not(tmp_path):
    """Two worker processes count into one directory and end (as when a service stops, or one worker
    fails); the counts stay, a worker's gauge goes once it is marked dead, a swapped-out version shows no more."""

    def worker(answered: int, version: str) -> int:
        command = [sys.executable, "-c", WORKER, str(tmp_path), str(answered), version]
        done = subprocess.run(command, cwd=REPO, env=tool_env(), capture_output=True, text=True, check=True)
        return int(done.stdout)

    first, second = worker(3, "v0001"), worker(5, "v0002")
    registry = CollectorRegistry()
    registry.register(WorkersCollector(tmp_path))

    found = samples(generate_latest(registry).decode())
    assert value(found, "evergreen_requests_total", endpoint="/predict", status="200") == 8
    assert value(found, "evergreen_records_scored_total") == 8
    assert value(found, "evergreen_request_latency_seconds_count") == 2
    assert value(found, "evergreen_model_info", version="v0001") == 1  # the first; the second moved on
    assert value(found, "evergreen_model_info", version="v0002") == 1

    mark_process_dead(first, str(tmp_path))
    found = samples(generate_latest(registry).decode())
    assert value(found, "evergreen_requests_total", endpoint="/predict", status="200") == 8  # still counted
    assert value(found, "evergreen_model_info", version="v0001") is None  # nobody serves it any more
    assert value(found, "evergreen_model_info", version="v0002") == 1
    mark_process_dead(second, str(tmp_path))
    found = samples(generate_latest(registry).decode())
    assert not [key for key in found if key[0] == "evergreen_model_info"]
    assert value(found, "evergreen_records_scored_total") == 8


@pytest.mark.parametrize(("given", "taken"), [("auto", "auto"), ("1", 1), ("3", 3)])
def test_the_workers_option_takes_a_number_or_auto(given, taken):
    assert workers_option(given) == taken


@pytest.mark.parametrize("given", ["0", "-1", "65", "two", "1.5", ""])
def test_a_bad_workers_option_names_serve_workers(given):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        workers_option(given)
    message = str(info.value)
    assert "serve.workers" in message and repr(given) in message and "auto" in message and "\n" not in message
