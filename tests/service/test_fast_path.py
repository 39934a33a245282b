"""Issue 13: POST /predict is answered ahead of FastAPI's stack. What it answers, good or bad, is what the
documented FastAPI route answers (status, body, content type, headers), and /openapi.json still documents it;
``--workers 2`` serves from two processes into one log and stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flows.stack import free_port
from pipeline.lifecycle.registry import Registry
from pipeline.params import load_params
from serving.app import PREDICT_BODY, create_app
from serving.predlog import make_engine, predictions
from tests.conftest import tool_env
from tests.service.test_api import records

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def clients(tmp_path_factory, served_workspace):
    """The app as served (the shortcut first) and the same app entered through FastAPI's stack alone."""
    params = load_params(served_workspace / "params.yaml")
    registry = Registry(served_workspace / params.paths.registry)
    database = tmp_path_factory.mktemp("fast") / "log.sqlite"
    settings = params.serve.model_copy(
        update={"database_url": f"sqlite:///{database}", "max_body_bytes": 64 * 1024, "max_records": 50}
    )
    app = create_app(settings, registry.root, api_token=TOKEN)

    async def through_fastapi(scope, receive, send):  # what the documented route alone answers
        await FastAPI.__call__(app, scope, receive, send)

    test = pd.read_parquet(served_workspace / params.paths.split / "test.parquet").head(3)
    good = records(test, registry.get("v0001").card_data())
    with TestClient(app) as served:  # the lifespan (model, log) runs once, for both
        yield served, TestClient(through_fastapi), good


def bad_bodies(good: list[dict]) -> list[tuple[bytes, dict[str, str]]]:
    json_type = {"content-type": "application/json"}
    return [
        (b"[{", json_type),
        (b'{"a": 1}', json_type),
        (b"[]", json_type),
        (json.dumps([good[0]] * 51).encode(), json_type),
        (json.dumps([{**good[0], "shoe_size": 42}]).encode(), json_type),
        (json.dumps([{**good[0], "age": "forty"}]).encode(), json_type),
        (json.dumps([dict(good[0], occ10="x" * 70_000)]).encode(), json_type),
        (b"--x\r\n", {"content-type": "multipart/form-data; boundary=x"}),
    ]


def answer(response) -> tuple[int, str, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "content-length")}
    return response.status_code, response.text, headers


def test_refusals_are_the_documented_routes_own(clients):
    served, fastapi_only, good = clients
    auth = {"authorization": f"Bearer {TOKEN}"}
    cases = [(body, {**headers, **auth}) for body, headers in bad_bodies(good)]
    cases += [(json.dumps(good).encode(), {}), (json.dumps(good).encode(), {"authorization": "Bearer wrong"})]
    for body, headers in cases:
        fast, slow = (
            served.post("/predict", content=body, headers=headers),
            fastapi_only.post("/predict", content=body, headers=headers),
        )
        assert fast.status_code >= 400 and answer(fast) == answer(slow), body[:60]


def test_answers_have_the_documented_routes_shape(clients):
    served, fastapi_only, good = clients
    auth = {"authorization": f"Bearer {TOKEN}"}
    fast, slow = served.post("/predict", json=good, headers=auth), fastapi_only.post("/predict", json=good, headers=auth)
    assert fast.status_code == slow.status_code == 200
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    one, other = fast.json(), slow.json()
    assert one["request_id"] != other["request_id"] and one["model_version"] == other["model_version"] == "v0001"
    assert one["predictions"] == other["predictions"]
    metrics = served.get("/metrics", headers=auth).text  # both answers counted, as answers of /predict
    assert 'evergreen_requests_total{endpoint="/predict",status="200"} 2.0' in metrics


def test_the_openapi_spec_still_documents_predict(clients):
    served, _, _ = clients
    operation = served.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert operation["requestBody"] == PREDICT_BODY
    assert operation["security"] == [{"HTTPBearer": []}]


def test_two_workers_serve_into_one_log_and_stop_cleanly(served_workspace, tmp_path):
    params = load_params(served_workspace / "params.yaml")
    registry = Registry(served_workspace / params.paths.registry)
    test = pd.read_parquet(served_workspace / params.paths.split / "test.parquet").head(40)
    card = registry.get("v0001").card_data()
    port, database = free_port(), tmp_path / "log.sqlite"
    command = [sys.executable, "-m", "serving", "--port", str(port), "--workers", "2", "--registry", str(registry.root)]
    command += ["--database-url", f"sqlite:///{database}"]
    with (tmp_path / "server.log").open("w") as output:
        server = subprocess.Popen(command, cwd=served_workspace, env=tool_env(), stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)  # the server is starting: nothing to await but its port
        answered = []
        for i in range(40):
            body = json.dumps(records(test.iloc[i : i + 1], card)).encode()
            request = urllib.request.Request(f"{url}/predict", body, {"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                answered.append(json.loads(response.read())["request_id"])
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=60)
    output = (tmp_path / "server.log").read_text()
    assert status == 0, output
    assert "serving with 2 worker processes" in output and "Traceback" not in output
    assert output.count("Application shutdown complete") == 2  # each worker closed its log
    engine = make_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        logged = set(connection.execute(sa.select(predictions.c.request_id)).scalars())
    engine.dispose()
    assert set(answered) <= logged
