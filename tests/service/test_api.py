"""The prediction service against a real model from the pipeline: good and bad requests, metrics, hot reload."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipeline.kinds.base import LOGGED_LABEL
from pipeline.kinds.tabular.runtime import OnnxModel
from pipeline.lifecycle.registry import Registry
from pipeline.params import load_params
from serving.app import create_app
from serving.predlog import make_engine, read_log

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def params(served_workspace):
    return load_params(served_workspace / "params.yaml")


@pytest.fixture(scope="module")
def registry(served_workspace, params):
    return Registry(served_workspace / params.paths.registry)


@pytest.fixture(scope="module")
def test_rows(served_workspace, params):
    return pd.read_parquet(served_workspace / params.paths.split / "test.parquet")


@pytest.fixture(scope="module")
def client(tmp_path_factory, params, registry):
    database = tmp_path_factory.mktemp("log") / "predictions.sqlite"
    settings = params.serve.model_copy(
        update={
            "database_url": f"sqlite:///{database}",
            "reload_interval_seconds": 0.2,
            "max_body_bytes": 64 * 1024,
            "max_records": 50,
        }
    )
    with TestClient(create_app(settings, registry.root)) as client:
        yield client


def records(frame: pd.DataFrame, card: dict) -> list[dict]:
    """Raw rows as a client would send them: JSON values, null for missing."""
    out = []
    for _, row in frame.iterrows():
        record = {}
        for spec in card["inputs"]:
            value = row[spec["name"]]
            record[spec["name"]] = None if pd.isna(value) else (float(value) if spec["kind"] == "numeric" else str(value))
        out.append(record)
    return out


def test_health_ready_and_model(client, registry):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True, "model_version": "v0001"}
    info = client.get("/model").json()
    assert info["version"] == "v0001" and info["variant"] == "fp32"
    assert info["card"]["classes"] and "model" in info["metrics"]
    assert info["card"]["int8"]["label_agreement"] > 0.95  # export measured the int8 model against fp32


def test_predictions_match_the_onnx_model_and_are_logged(client, registry, test_rows):
    card = registry.get("v0001").card_data()
    rows = test_rows.head(40)
    response = client.post("/predict", json=records(rows, card))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v0001" and len(body["request_id"]) == 32
    model = OnnxModel.load(registry.get("v0001").onnx, registry.get("v0001").card)
    expected, labels = model.predict_proba(rows)
    got = np.array([[p["probabilities"][c] for c in card["classes"]] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert [p["label"] for p in body["predictions"]] == list(labels)

    engine = make_engine(client.app.state.service.settings.database_url)
    logged, _ = read_log(engine)
    engine.dispose()
    assert len(logged) >= 40
    # Nothing outside the schema, beside the class the service answered (a drift frame's prediction).
    assert set(logged.columns) == {spec["name"] for spec in card["inputs"]} | {LOGGED_LABEL}
    assert set(logged[LOGGED_LABEL]) <= set(card["classes"])


def test_single_record_with_nulls(client, registry, test_rows):
    card = registry.get("v0001").card_data()
    record = {spec["name"]: None for spec in card["inputs"]}
    response = client.post("/predict", json=[record])
    assert response.status_code == 200
    assert sum(response.json()["predictions"][0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "mutate, status, message",
    [
        (lambda r: [{**r, "shoe_size": 42}], 422, "unknown field 'shoe_size'"),
        (lambda r: [{k: v for k, v in r.items() if k != "age"}], 422, "missing field 'age'"),
        (lambda r: [{**r, "age": "forty"}], 422, "field 'age' must be a number"),
        (lambda r: [{**r, "gender": ["Male"]}], 422, "field 'gender' must be a string"),
        (lambda r: [], 422, "empty list"),
        (lambda r: r, 422, "must be a JSON list"),
        (lambda r: [r] * 51, 413, "over the batch limit of 50"),
        (lambda r: [dict(r, occ10="x" * 70_000)], 413, "over the limit of 65536 bytes"),
    ],
)
def test_bad_requests_name_the_problem(client, registry, test_rows, mutate, status, message):
    card = registry.get("v0001").card_data()
    good = records(test_rows.head(1), card)[0]
    response = client.post("/predict", content=json.dumps(mutate(good)), headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_invalid_json_is_refused(client):
    response = client.post("/predict", content=b"[{", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]


def test_metrics_endpoint(client, registry, test_rows):
    client.post("/predict", json=records(test_rows.head(2), registry.get("v0001").card_data()))
    text = client.get("/metrics").text
    assert 'evergreen_requests_total{endpoint="/predict",status="200"}' in text
    assert 'evergreen_requests_total{endpoint="/predict",status="422"}' in text
    assert "evergreen_request_latency_seconds_bucket" in text
    assert 'evergreen_model_info{version="v0001"} 1.0' in text
    assert "evergreen_records_scored_total" in text


def test_late_labels_join_the_log_by_request_id(client, registry, test_rows):
    card = registry.get("v0001").card_data()
    response = client.post("/predict", json=records(test_rows.head(3), card)).json()
    stored = client.post("/labels", json=[{"request_id": response["request_id"], "index": 1, "label": "Retired"}])
    assert stored.json() == {"stored": 1}
    engine = make_engine(client.app.state.service.settings.database_url)
    logged, _ = read_log(engine, target=card["target"])
    engine.dispose()
    assert (logged[card["target"]] == "Retired").sum() == 1
    bad = client.post("/labels", json=[{"request_id": "x", "label": "Retired"}])
    assert bad.status_code == 422


def _wait_for_version(client, version: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ready").json().get("model_version") != version:
        assert time.monotonic() < deadline, f"service did not switch to {version}"
        time.sleep(0.05)


def test_hot_reload_after_promotion_and_rollback_without_failing_requests(client, registry, test_rows):
    payload = records(test_rows.head(5), registry.get("v0001").card_data())
    statuses, versions, stop = [], [], threading.Event()

    def traffic():
        while not stop.is_set():
            response = client.post("/predict", json=payload)
            statuses.append(response.status_code)
            versions.append(response.json().get("model_version"))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        registry.promote("v0002", reason="reload test")
        _wait_for_version(client, "v0002")
        assert client.get("/model").json()["variant"] == "int8"  # the version chose its int8 model
        time.sleep(0.3)
        registry.rollback(reason="reload test")
        _wait_for_version(client, "v0001")
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    assert set(statuses) == {200}
    assert {"v0001", "v0002"} <= set(versions)
    assert 'evergreen_model_info{version="v0001"} 1.0' in client.get("/metrics").text
