"""BentoML's peer in bench/service_load.py: a service wrapping onnxruntime, run with ``bentoml serve``.

Runs in BentoML's own environment (bench/.peers/bentoml). The model and its card come from
$EVERGREEN_BENCH_MODEL and $EVERGREEN_BENCH_CARD. The body is BentoML's: ``{"records": [...]}``, the same
records Evergreen takes; the answer a label and probabilities per record. No log, no checks beyond BentoML's.
"""

from __future__ import annotations

import json
import os
from typing import Any

import bentoml
import numpy as np
import onnxruntime as ort


@bentoml.service
class OnnxService:
    def __init__(self) -> None:
        with open(os.environ["EVERGREEN_BENCH_CARD"]) as file:
            card = json.load(file)
        self.inputs = [(spec["name"], spec["kind"] == "numeric") for spec in card["inputs"]]
        self.classes = card["classes"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(os.environ["EVERGREEN_BENCH_MODEL"], options, providers=["CPUExecutionProvider"])

    @bentoml.api
    def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        feed = {
            name: (
                np.array([np.nan if r[name] is None else r[name] for r in records], dtype=np.float32)
                if numeric
                else np.array(["" if r[name] is None else str(r[name]) for r in records], dtype=object)
            ).reshape(-1, 1)
            for name, numeric in self.inputs
        }
        probabilities, labels = self.session.run(["probabilities", "label"], feed)
        return {
            "predictions": [
                {"label": str(label), "probabilities": dict(zip(self.classes, row))}
                for label, row in zip(labels, probabilities.tolist())
            ]
        }
