"""The model card: what every exported model carries beside it (inputs, classes, metrics, hashes, versions)."""

from __future__ import annotations

import json
from typing import Any

import onnx
import torch

from pipeline.onnxio.build import LABEL, PROBABILITIES


def card_fields(
    classes, checkpoint: dict[str, Any], metrics: dict[str, Any], hashes: dict[str, str], parity: dict[str, Any], int8: dict[str, Any] | None
) -> dict[str, Any]:
    """The model card's fields shared by every data kind (each kind adds its ``inputs`` and ``target``)."""
    train_params = json.dumps({"train": checkpoint["train_params"], "seed": checkpoint["seed"]}, sort_keys=True)
    return {
        "task": "classification",
        "classes": list(classes),
        "outputs": [
            {"name": PROBABILITIES, "onnx_type": "float32", "shape": ["N", len(classes)]},
            {"name": LABEL, "onnx_type": "string", "shape": ["N"]},
        ],
        "model": {"config": checkpoint["model_config"], "best_epoch": checkpoint["best_epoch"], "best_metric": checkpoint["best_metric"]},
        # The model's test metrics and every baseline evaluate reported beside it.
        "metrics": {"test": metrics["model"], **{k: v for k, v in metrics.items() if k.startswith("baseline_")}},
        # Timings vary run to run; the card stays a pure function of the model and its data.
        "parity": {k: v for k, v in parity.items() if k != "single_record_latency_us"},
        "int8": int8,
        "hashes": {**hashes, "train_params_sha256": _sha256_text(train_params)},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": _ort_version()},
    }


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _ort_version() -> str:
    import onnxruntime as ort  # already imported by ort_session, telemetry off

    return ort.__version__
