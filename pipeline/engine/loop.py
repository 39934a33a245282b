"""Compatibility only, to be removed: the names the engine's callers imported from ``pipeline.engine.loop``.

Import from ``pipeline.engine`` instead. ``fit`` here still guesses the task from the targets'
dtype when no ``task`` is given; ``pipeline.engine.fit`` needs it said (``Prepared.task``).
"""

from __future__ import annotations

import torch

from pipeline.engine import (
    INIT_ENCODER_FILE,
    INIT_FILE,
    MAXIMISED,
    History,
    Prepared,
    Task,
    Tensors,
    configure_torch,
    reusable_encoder,
    use_pinned_memory,
)
from pipeline.engine import fit as _fit

__all__ = [
    "INIT_ENCODER_FILE", "INIT_FILE", "MAXIMISED", "History", "Prepared", "Tensors",
    "configure_torch", "fit", "reusable_encoder", "use_pinned_memory",
]


def fit(train: Tensors, val: Tensors, config, cfg, seed: int, task: Task | None = None, **options):
    """``pipeline.engine.fit`` for callers not yet passing ``task``: int64 targets are classes."""
    task = task or ("classification" if train.y.dtype == torch.int64 else "regression")
    return _fit(train, val, config, cfg, seed, task=task, **options)
