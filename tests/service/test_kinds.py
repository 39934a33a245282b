"""A production model of a kind the service cannot score yet: the service starts, stays unready and says why."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from pipeline.lifecycle.registry import Registry
from pipeline.params import ServeParams
from serving.app import create_app
from tests.unit.onnxio.fixtures import old_card_path


@pytest.mark.parametrize("kind", ["image", "sequence"])
def test_a_model_the_service_cannot_score_leaves_it_unready_with_the_reason(kind, tmp_path):
    files = {name: tmp_path / f"{name}.json" for name in ("metrics", "params", "dvc_lock", "reference")}
    for path in files.values():
        path.write_text(json.dumps({}))
    (tmp_path / "model.onnx").write_bytes(b"never opened: the card is read first")
    registry = Registry(tmp_path / "registry")
    version = registry.register(onnx=tmp_path / "model.onnx", model_card=old_card_path(kind), git_revision="test", **files)
    registry.promote(version.number, reason="test")
    settings = ServeParams(database_url=f"sqlite:///{tmp_path / 'predictions.sqlite'}", reload_interval_seconds=0.1)

    reason = f"the service cannot score {kind} models yet: it takes tabular models only"
    with TestClient(create_app(settings, registry.root)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "detail": reason}
        predict = client.post("/predict", json=[{}])
        assert predict.status_code == 503 and predict.json() == {"detail": reason}
