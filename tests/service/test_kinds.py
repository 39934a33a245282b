"""A production model the service cannot score: the service starts, stays unready and says why (never a 500
per request). Every kind has a runtime now; what it cannot answer yet is a regressor with several outputs."""

from __future__ import annotations

import json

import numpy as np
from fastapi.testclient import TestClient

from pipeline.lifecycle.registry import Registry
from pipeline.params import ServeParams
from serving.app import create_app
from tests.unit.onnxio.fixtures import old_card_data


def test_a_model_the_service_cannot_score_leaves_it_unready_with_the_reason(tmp_path):
    card = old_card_data("tabular")
    card["task"] = "regression"
    card["classes"] = []
    card["outputs"] = [
        {"name": "forecast", "onnx_type": "float32", "shape": ["N", 1]},
        {"name": "spread", "onnx_type": "float32", "shape": ["N", 1]},
    ]
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    files = {name: tmp_path / f"{name}.json" for name in ("metrics", "params", "dvc_lock", "reference")}
    for path in files.values():
        path.write_text(json.dumps({}))
    (tmp_path / "model.onnx").write_bytes(b"never opened: the card is read first")
    registry = Registry(tmp_path / "registry")
    version = registry.register(
        onnx=tmp_path / "model.onnx", model_card=tmp_path / "model_card.json", git_revision="test", **files
    )
    registry.promote(version.number, reason="test")
    settings = ServeParams(database_url=f"sqlite:///{tmp_path / 'predictions.sqlite'}", reload_interval_seconds=0.1)

    reason = "the service scores tabular regressors with one output; this card names ['forecast', 'spread']"
    with TestClient(create_app(settings, registry.root)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "detail": reason}
        predict = client.post("/predict", json=[{}])
        assert predict.status_code == 503 and predict.json() == {"detail": reason}


def test_a_tabular_regressor_answers_its_value_in_target_units_and_logs_it_as_text_and_vector():
    from pipeline.kinds import get
    from pipeline.onnxio.card import parse_card

    data = old_card_data("tabular")
    data |= {"task": "regression", "classes": [], "outputs": [{"name": "forecast", "onnx_type": "float32", "shape": ["N", 1]}]}
    runtime = get("tabular").runtime
    schema = runtime.feed_schema(parse_card(data))
    assert schema.outputs == ("forecast",)
    answers = runtime.answer([np.array([[215000.5], [98000.0]], dtype=np.float32)], [{}, {}], schema)
    assert answers.answers == [{"value": 215000.5}, {"value": 98000.0}]
    assert answers.labels == ["215000.5", "98000.0"] and answers.vectors == [[215000.5], [98000.0]]
