"""What a data kind hands the engine: ``Prepared`` (the output of its ``prepare``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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


def keeps_encoder(old_classes: Sequence[str], classes: Sequence[str], old_inputs: object, inputs: object) -> bool:
    """Whether a warm start keeps the initial model's encoder: the same classes in the same order and the
    same inputs (the kind says what those are: columns, image shape and pixel scale, window layout).

    Fine-tuning keeps the encoder so every input (category index, scaling) means what it meant when the
    weights were learned; new classes or other inputs need a new encoder (and head, or first layer)."""
    if list(old_classes) != list(classes):
        log.warning(
            "warm start: the classes changed (%s -> %s); the encoder is fitted afresh", list(old_classes), list(classes)
        )
        return False
    if old_inputs != inputs:
        log.warning("warm start: the inputs changed (%s -> %s); the encoder is fitted afresh", old_inputs, inputs)
        return False
    log.info("warm start: keeping the initial model's encoder")
    return True
