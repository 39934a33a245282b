"""The service and the batch scorer on a registry in an object store (S3, the moto stand-in, tests/s3.py).

The training host registers and promotes through its own ``ObjectRegistry``; the service, as on another
host, knows only the store's URL and keeps its own cache: it loads production from the store and
switches by itself after a promotion or a rollback made elsewhere, without failing a request.
"""

from __future__ import annotations

import logging
import threading
import time

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipeline.lifecycle.registry import ObjectRegistry
from pipeline.lifecycle.registry.objectstore import CACHE_ENV
from pipeline.params import load_params
from serving.app import create_app
from serving.batch import resolve_model
from tests.service.test_api import _wait_for_version, records

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)


@pytest.fixture
def store(s3, served_workspace, tmp_path):
    """v0001 (fp32) promoted and v0002 (int8 served) registered on S3 by the training host."""
    params = load_params(served_workspace / "params.yaml")
    paths = params.paths
    trainer = ObjectRegistry(s3.bucket() + "/registry", cache_dir=tmp_path / "trainer-cache")
    files = dict(
        onnx=served_workspace / paths.onnx,
        model_card=served_workspace / paths.model_card,
        metrics=served_workspace / paths.eval_metrics,
        params=served_workspace / "params.yaml",
        dvc_lock=served_workspace / "dvc.lock",
        reference=served_workspace / paths.split / "train.parquet",
    )
    trainer.promote(trainer.register(**files).number, reason="first")
    trainer.register(**files, onnx_int8=served_workspace / paths.onnx_int8 / "model.onnx", extra={"serve": "int8"})
    return trainer


def test_a_service_on_another_host_follows_promotions_made_on_the_store(store, served_workspace, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "service-host"))
    params = load_params(served_workspace / "params.yaml")
    settings = params.serve.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'log.sqlite'}", "reload_interval_seconds": 0.2}
    )
    rows = pd.read_parquet(served_workspace / params.paths.split / "test.parquet").head(3)
    payload = records(rows, store.get(1).card_data())
    with TestClient(create_app(settings, store.root)) as client:
        assert client.get("/model").json()["version"] == "v0001"
        statuses, versions, stop = [], [], threading.Event()

        def traffic():
            while not stop.is_set():
                response = client.post("/predict", json=payload)
                statuses.append(response.status_code)
                versions.append(response.json().get("model_version"))

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            started = time.monotonic()
            store.promote("v0002", reason="promoted on the training host", expected_current="v0001")
            _wait_for_version(client, "v0002")
            delay = time.monotonic() - started
            assert client.get("/model").json()["variant"] == "int8"
            store.rollback(reason="rolled back on the training host")
            _wait_for_version(client, "v0001")
        finally:
            stop.set()
            worker.join()
    assert set(statuses) == {200} and {"v0001", "v0002"} <= set(versions)
    assert (tmp_path / "service-host" / "registry").is_dir()  # the service's own cache, not the trainer's
    log.info("promotion to serving on the other host: %.2fs (reload interval 0.2s)", delay)


def test_the_batch_scorer_takes_production_from_the_store(store, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "batch-host"))
    onnx, card, version = resolve_model("production", None, store.root)
    assert version == "v0001" and onnx.is_relative_to(tmp_path / "batch-host") and card.is_file()
