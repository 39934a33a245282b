"""What a data kind hands the engine: ``Prepared`` (the output of its ``prepare``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.engine.data import TASK_METRICS, Task, Tensors
from pipeline.params import TrainParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What training needs, from any data kind: encoded splits, the task they pose, the network's
    config, the fitted encoder (JSON, saved at ``paths.preprocessor`` for evaluate, export and
    serving) and the data files the run depends on (for resuming)."""

    train: Tensors
    val: Tensors
    # Said by the kind, never guessed from the targets' dtype: it picks the loss, the metrics and
    # the early-stopping metrics allowed.
    task: Task
    config: Any
    encoder: dict[str, Any]
    data_files: list[Path]
    # The network's config for other train params on the same data (the hyperparameter search).
    config_for: Callable[[TrainParams], Any]

    def __post_init__(self) -> None:
        if self.task not in TASK_METRICS:
            raise ValueError(f"Prepared.task = {self.task!r}; choose one of {sorted(TASK_METRICS)}")


def reusable_encoder(encoder: dict[str, Any] | None, classes: tuple[str, ...] | list[str]) -> dict[str, Any] | None:
    """A warm start's encoder, when it still fits the data: the same classes in the same order.

    Fine-tuning keeps the initial model's encoder so every input (category index, scaling) means
    what it meant when the weights were learned; new classes need a new encoder (and head)."""
    if encoder is None:
        return None
    if list(encoder.get("classes", [])) != list(classes):
        log.warning(
            "warm start: the classes changed (%s -> %s); the encoder is fitted afresh", encoder.get("classes"), list(classes)
        )
        return None
    log.info("warm start: keeping the initial model's encoder")
    return encoder
