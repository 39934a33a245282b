"""What every exporter writes on its model card beside the kind's own fields: the outputs of a classifier,
how the network was trained, its metrics and parity, the int8 twin, hashes and library versions.

Apart from ``card.py`` because it imports torch (for its version); the card itself stays torch-free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, TypedDict

import onnx
import torch

from pipeline.onnxio.build import LABEL, PROBABILITIES
from pipeline.onnxio.card import BestMetric, Int8Report, Output, Parity, Task, TrainedModel, Versions


class CardFields(TypedDict):
    """The ``ModelCard`` fields shared by every kind (each kind adds ``target``, ``inputs`` and its own)."""

    task: Task  # a forecaster's card replaces it, and the outputs
    classes: tuple[str, ...]
    outputs: tuple[Output, ...]
    model: TrainedModel
    metrics: dict[str, dict[str, Any]]
    parity: Parity
    int8: Int8Report | None
    hashes: dict[str, str]
    versions: Versions


def card_fields(
    classes: Sequence[str],
    checkpoint: dict[str, Any],
    metrics: dict[str, Any],
    hashes: dict[str, str],
    parity: dict[str, Any],
    int8: dict[str, Any] | None,
) -> CardFields:
    """The card fields shared by every data kind, from the checkpoint, evaluate's metrics, the export's
    hashes, parity report and int8 comparison."""
    train_params = json.dumps({"train": checkpoint["train_params"], "seed": checkpoint["seed"]}, sort_keys=True)
    return CardFields(
        task="classification",
        classes=tuple(classes),
        outputs=(
            Output(name=PROBABILITIES, onnx_type="float32", shape=("N", len(classes))),
            Output(name=LABEL, onnx_type="string", shape=("N",)),
        ),
        model=TrainedModel(
            config=checkpoint["model_config"],
            best_epoch=checkpoint["best_epoch"],
            best_metric=BestMetric(**checkpoint["best_metric"]),
        ),
        # The model's test metrics and every baseline evaluate reported beside it.
        metrics={"test": metrics["model"], **{k: v for k, v in metrics.items() if k.startswith("baseline_")}},
        # Timings vary run to run; the card stays a pure function of the model and its data.
        parity=Parity(**{k: v for k, v in parity.items() if k != "single_record_latency_us"}),
        int8=None if int8 is None else Int8Report(**int8),
        hashes={**hashes, "train_params_sha256": hashlib.sha256(train_params.encode()).hexdigest()},
        versions=Versions(torch=torch.__version__, onnx=onnx.__version__, onnxruntime=_ort_version()),
    )


def _ort_version() -> str:
    import onnxruntime as ort  # already imported by ort_session, telemetry off

    return str(ort.__version__)
