"""What a run has done so far (``TrainState``), and the checkpoint dicts that save it.

Checkpoints are plain dicts of tensors and values that describe themselves (model config, weights,
epoch, best metric, train params, seed) and load with ``torch.load(weights_only=True)``:

- the best model (``paths.model``): the weights at the best epoch, nothing else to resume from;
- the last checkpoint (``last.pt``), written every epoch: the same plus the optimizer, the step, the
  run's fingerprint and the ``TrainState`` (history, best weights, plateau, every random-number state),
  so a run killed at any point resumes to exactly the model an uninterrupted run would give.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import models
from pipeline.core.io import atomic_write, file_sha256
from pipeline.params import TrainParams
from pipeline.shared import metrics

log = logging.getLogger(__name__)


LAST_CHECKPOINT = "last.pt"


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_value: float = math.nan
    stopped_early: bool = False
    resumed_at: int = 0  # epochs already done when this process started (0: a fresh run)


@dataclass
class TrainState:
    """Everything of a run that changes as it trains, but the weights and the optimizer: the history,
    the optimizer step (it drives the learning rate), the best weights so far, the plateau cuts and
    the random-number generators (the global one draws weights and dropout, ``shuffle`` the batch order)."""

    shuffle: torch.Generator
    history: History = field(default_factory=History)
    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)  # see ``weights``
    plateau_scale: float = 1.0  # the product of reduce-on-plateau's cuts
    plateau_wait: int = 0  # epochs without improvement since the last improvement or cut

    @classmethod
    def start(cls, seed: int) -> TrainState:
        """A fresh run: seeds the global generator (weight init and dropout) and the batch order's own."""
        torch.manual_seed(seed)
        return cls(shuffle=torch.Generator().manual_seed(seed))

    @property
    def epoch(self) -> int:
        """The next epoch to train."""
        return len(self.history.epochs)

    def state_dict(self) -> dict[str, Any]:
        return {
            # Without the epochs' wall-clock seconds: a checkpoint is a DVC output, and timings would
            # make the same run hash differently every time (dvc.lock would never stay clean).
            "history": [{k: v for k, v in epoch.items() if k != "epoch_seconds"} for epoch in self.history.epochs],
            "best_epoch": self.history.best_epoch,
            "best_value": self.history.best_value,
            "stopped_early": self.history.stopped_early,
            "step": self.step,
            "best": self.best,
            "plateau": [self.plateau_scale, self.plateau_wait],
            "rng": rng_states(self.shuffle),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` ended, random-number generators included."""
        epochs = list(state["history"])
        self.history = History(
            epochs, state["best_epoch"], state["best_value"], state["stopped_early"], resumed_at=len(epochs)
        )
        self.step, self.best = state["step"], state["best"]
        self.plateau_scale, self.plateau_wait = state["plateau"]
        set_rng_states(state["rng"], self.shuffle)


def rng_states(shuffle: torch.Generator) -> dict[str, Any]:
    """Every random-number state training draws from: torch's CPU and CUDA generators and ``shuffle``.

    The CUDA states only once CUDA is in use: until then ``torch.manual_seed`` fully decides them.
    (Nothing in training draws from numpy's or Python's generators.)"""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "shuffle": shuffle.get_state()}


def set_rng_states(states: dict[str, Any], shuffle: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    shuffle.set_state(states["shuffle"])


def weights(model: nn.Module, history: History, cfg: TrainParams, seed: int) -> dict[str, Any]:
    """The model as it is now, as a self-describing checkpoint (weights only: the best model's file)."""
    config: Any = model.config  # every network keeps the config it was built from
    return {
        "model_config": config.to_dict(),
        # A copy (training goes on changing the model), contiguous whatever the training memory format (channels_last).
        "model_state": {
            k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format) for k, v in model.state_dict().items()
        },
        "epoch": len(history.epochs) - 1,
        "best_epoch": history.best_epoch,
        "best_metric": {"name": cfg.early_stopping.metric, "value": history.best_value},
        "train_params": cfg.model_dump(mode="json"),
        "seed": seed,
    }


def last_checkpoint(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState, cfg: TrainParams, seed: int, fingerprint: str
) -> dict[str, Any]:
    """The checkpoint to resume from: the weights, the optimizer and the ``TrainState``."""
    return {
        **weights(model, state.history, cfg, seed),
        "optimizer_state": optimizer.state_dict(),
        "step": state.step,
        "fingerprint": fingerprint,
        "train_state": state.state_dict(),
    }


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Durably replace the checkpoint: a kill during the save leaves the previous one intact.

    Saved through a buffer: torch.save names the records inside its zip after the file it writes,
    and a temporary file's random name would make the same checkpoint differ byte for byte (and
    DVC's hash of it) from run to run."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write(path, buffer.getvalue())


def run_fingerprint(cfg: TrainParams, seed: int, config, data_files: list[Path]) -> str:
    """What a last checkpoint must match to be resumed: the same params, model, data and training code."""
    digest = hashlib.sha256(json.dumps([cfg.model_dump(mode="json"), seed, config.to_dict()], sort_keys=True).encode())
    code = [
        *sorted(Path(__file__).parent.glob("*.py")),
        *sorted(Path(models.__file__).parent.glob("*.py")),
        Path(metrics.__file__),
    ]
    for path in [*data_files, *code]:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def resumable(checkpoint_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The last checkpoint if it belongs to this very run (same fingerprint), else None (start afresh)."""
    path = checkpoint_dir / LAST_CHECKPOINT
    if not path.exists():
        return None
    last = torch.load(path, map_location="cpu", weights_only=True)
    if last.get("fingerprint") != fingerprint:
        log.info("%s belongs to another run (params, data or code changed): training from scratch", path)
        return None
    return last
