"""Warm starts: fine-tune the model in ``paths.init_model`` instead of starting from random weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import ParamsError
from pipeline.core.io import INIT_ENCODER_FILE, INIT_FILE, read_json
from pipeline.models import config_from_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitialModel:
    """What ``paths.init_model`` holds: the checkpoint to fine-tune and the encoder it was trained with."""

    checkpoint: Path
    encoder_file: Path

    @classmethod
    def at(cls, folder: str | Path) -> InitialModel:
        return cls(Path(folder) / INIT_FILE, Path(folder) / INIT_ENCODER_FILE)

    def encoder(self) -> dict[str, Any] | None:
        """The initial model's encoder (JSON), when both the model and its encoder are there."""
        return read_json(self.encoder_file) if self.checkpoint.exists() and self.encoder_file.exists() else None

    def files(self) -> list[Path]:
        """The files a warm start reads (part of what a resumed run must match); none for a cold start."""
        if not self.checkpoint.exists():
            return []
        return [path for path in (self.checkpoint, self.encoder_file) if path.exists()]


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``state`` whose name and shape match into ``model``.

    Returns (loaded, skipped) names: skipped tensors (e.g. a head for a different number of
    classes, or embeddings for new categories) keep their fresh initialisation.
    """
    own = model.state_dict()
    matched = {name: value for name, value in state.items() if name in own and own[name].shape == value.shape}
    model.load_state_dict(matched, strict=False)
    return sorted(matched), sorted(set(own) - set(matched))


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Stop gradients for parameters under each prefix; a prefix that names nothing is an error."""
    names = [name for name, _ in model.named_parameters()]
    under = {prefix: [n for n in names if n == prefix or n.startswith(prefix + ".")] for prefix in prefixes}
    for prefix, found in under.items():
        if not found:
            parts = sorted({n.split(".")[0] for n in names})
            raise ParamsError(f"train.warm_start.freeze: {prefix!r} names no parameter of this model; its parts are {parts}")
    frozen = sorted({n for found in under.values() for n in found})
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    return frozen


def warm_start(model: nn.Module, state: dict[str, torch.Tensor] | None, prefixes: tuple[str, ...]) -> frozenset[str]:
    """Load the matching tensors of ``state`` and freeze ``prefixes``; returns the loaded names (the
    tensors that learn at ``train.warm_start.pretrained_lr_scale``). Nothing to do without a state."""
    if state is None:
        return frozenset()
    loaded, skipped = load_matching(model, state)
    frozen = freeze(model, prefixes)
    log.info(
        "warm start: %d tensors loaded, %d fresh %s, %d parameters frozen", len(loaded), len(skipped), skipped, len(frozen)
    )
    return frozenset(loaded)


def warm_start_state(path: Path, config) -> dict[str, torch.Tensor] | None:
    """The weights of the checkpoint at ``path`` to fine-tune, or None (cold start) when there is none."""
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    family = config_from_dict(saved["model_config"]).family
    if family != config.family:
        raise ParamsError(
            f"{path} holds a {family} model but train.model builds a {config.family}: warm starts need the same architecture"
        )
    return saved["model_state"]
