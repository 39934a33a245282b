"""The floor of bench/service_load.py: the least a FastAPI + onnxruntime service does per request.

The same int8 model as the others; one JSON list of records in, a label and probabilities per record out.
No prediction log, no validation beyond what building the feed needs, no metrics: what Evergreen's /predict
costs above this is what its log, checks and bookkeeping cost.

    python bench/peers/floor_app.py MODEL.onnx MODEL_CARD.json PORT
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response


def create_app(model: str, card_path: str) -> FastAPI:
    card = json.loads(open(card_path).read())
    inputs = [(spec["name"], spec["kind"] == "numeric") for spec in card["inputs"]]
    classes = card["classes"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        records = orjson.loads(await request.body())
        feed = {
            name: (
                np.array([np.nan if r[name] is None else r[name] for r in records], dtype=np.float32)
                if numeric
                else np.array(["" if r[name] is None else str(r[name]) for r in records], dtype=object)
            ).reshape(-1, 1)
            for name, numeric in inputs
        }
        probabilities, labels = session.run(["probabilities", "label"], feed)
        predictions = [
            {"label": str(label), "probabilities": dict(zip(classes, row))}
            for label, row in zip(labels, probabilities.tolist())
        ]
        return Response(orjson.dumps({"predictions": predictions}), media_type="application/json")

    return app


if __name__ == "__main__":
    model, card, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uvicorn.run(create_app(model, card), host="127.0.0.1", port=port, log_level="warning", access_log=False)
