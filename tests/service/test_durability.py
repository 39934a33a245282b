"""Killing the server with SIGKILL under load loses no acknowledged record: counted in the database. The server
runs as shipped (serve.workers: auto) and every process of it is killed at once, its workers mid-commit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest
import sqlalchemy as sa

from flows.stack import free_port
from pipeline.params import load_params
from serving.predlog import make_engine, predictions
from tests.conftest import tool_env
from tests.service.test_api import records

pytestmark = pytest.mark.slow


def _post(url: str, payload: list[dict]) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_sigkill_under_load_loses_no_acknowledged_record(served_workspace, tmp_path):
    params = load_params(served_workspace / "params.yaml")
    card = json.loads((served_workspace / params.paths.model_card).read_text())
    test = pd.read_parquet(served_workspace / params.paths.split / "test.parquet").head(60)
    payloads = [records(test.iloc[i : i + 3], card) for i in range(0, 60, 3)]  # 20 requests of 3 records
    port, database = free_port(), tmp_path / "log.sqlite"
    log_file = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--database-url", f"sqlite:///{database}"],
        cwd=served_workspace,
        # A service killed whole leaves its metrics directory behind: here, in the test's own folder.
        env={**tool_env(), "TMPDIR": str(tmp_path)},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the parent and its workers killed together
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)

        acknowledged: list[tuple[str, int]] = []
        stop = threading.Event()

        def client(seed: int) -> None:
            i = seed
            while not stop.is_set():
                payload = payloads[i % len(payloads)]
                i += 1
                try:
                    body = _post(f"{base}/predict", payload)
                except (urllib.error.URLError, ConnectionError, OSError):
                    continue  # the server is gone: only answered requests count
                acknowledged.append((body["request_id"], len(payload)))

        clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(3.0)
        os.killpg(server.pid, signal.SIGKILL)  # a lone parent's workers would stop gracefully instead
        server.wait(timeout=10)
        stop.set()
        for thread in clients:
            thread.join(timeout=15)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log_file.close()

    assert len(acknowledged) > 20, "the load did not get going before the kill"
    engine = make_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        counts = dict(
            connection.execute(sa.select(predictions.c.request_id, sa.func.count()).group_by(predictions.c.request_id)).all()
        )
    engine.dispose()
    lost = [(rid, n) for rid, n in acknowledged if counts.get(rid) != n]
    assert lost == [], f"{len(lost)} acknowledged requests missing or incomplete in the log"
