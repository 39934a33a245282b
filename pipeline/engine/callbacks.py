"""What happens around the epochs, as small callbacks on the epoch hook: curves, early stopping, the
best weights, reduce-on-plateau, the last checkpoint and the progress bar.

``fit`` calls each callback's ``on_start`` once (after a resume: with the epochs already done),
``on_epoch_end`` after every epoch, in the order given, and ``on_end`` when training stops.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from pipeline.core.errors import ParamsError
from pipeline.engine.data import TASK_METRICS
from pipeline.engine.state import LAST_CHECKPOINT, TrainState, last_checkpoint, save_checkpoint, weights
from pipeline.params import EarlyStoppingParams, TrainParams

log = logging.getLogger(__name__)


MAXIMISED = {"val_accuracy", "val_macro_f1"}


class EpochLogger(Protocol):
    def log_epoch(self, epoch: int, values: dict[str, float]) -> None: ...


class Callback:
    """A hook on the epochs; each method does nothing unless overridden."""

    def on_start(self, state: TrainState) -> None:
        pass

    def on_epoch_end(self, epoch: int, values: dict[str, float], state: TrainState) -> None:
        pass

    def on_end(self, state: TrainState) -> None:
        pass


def check_metric(metric: str, task: str) -> None:
    """The early-stopping metric must be one the task reports (accuracy means nothing for a regression)."""
    allowed = ["val_loss", *(f"val_{name}" for name in TASK_METRICS[task])]
    if metric not in allowed:
        raise ParamsError(f"train.early_stopping.metric = {metric!r} does not apply to {task}; choose one of {allowed}")


def is_improvement(value: float, best: float, metric: str, min_delta: float) -> bool:
    if not math.isfinite(value):  # a diverged epoch is never the best one
        return False
    if math.isnan(best):
        return True
    if metric in MAXIMISED:
        return value > best + min_delta
    return value < best - min_delta


class Curves(Callback):
    """Every epoch's values to an ``EpochLogger`` (after a resume, the epochs already done first)."""

    def __init__(self, logger: EpochLogger):
        self.logger = logger

    def on_start(self, state: TrainState) -> None:
        for epoch, values in enumerate(state.history.epochs):
            self.logger.log_epoch(epoch, values)

    def on_epoch_end(self, epoch: int, values: dict[str, float], state: TrainState) -> None:
        self.logger.log_epoch(epoch, values)


class EarlyStopping(Callback):
    """Tracks the best value of ``train.early_stopping.metric``; stops ``patience`` epochs after it."""

    def __init__(self, cfg: EarlyStoppingParams):
        self.cfg = cfg

    def on_epoch_end(self, epoch: int, values: dict[str, float], state: TrainState) -> None:
        history, watched = state.history, values[self.cfg.metric]
        if is_improvement(watched, history.best_value, self.cfg.metric, self.cfg.min_delta):
            history.best_epoch, history.best_value = epoch, watched
        if epoch - history.best_epoch >= self.cfg.patience:
            history.stopped_early = True


class KeepBest(Callback):
    """The weights of the best epoch so far (``TrainState.best``); runs after ``EarlyStopping``."""

    def __init__(self, model: nn.Module, cfg: TrainParams, seed: int):
        self.model, self.cfg, self.seed = model, cfg, seed

    def on_epoch_end(self, epoch: int, values: dict[str, float], state: TrainState) -> None:
        if state.history.best_epoch == epoch:
            state.best = weights(self.model, state.history, self.cfg, self.seed)


class Plateau(Callback):
    """Reduce-on-plateau: the learning rate times ``train.gamma`` after ``train.plateau_patience``
    epochs without improvement (then the count starts again); runs after ``EarlyStopping``."""

    def __init__(self, patience: int, gamma: float):
        self.patience, self.gamma = patience, gamma

    def on_epoch_end(self, epoch: int, values: dict[str, float], state: TrainState) -> None:
        if state.history.best_epoch == epoch:
            state.plateau_wait = 0
            return
        state.plateau_wait += 1
        if state.plateau_wait > self.patience:
            state.plateau_scale *= self.gamma
            state.plateau_wait = 0


class SaveLast(Callback):
    """The last checkpoint in ``folder`` after every epoch (see ``pipeline.engine.state``)."""

    def __init__(
        self, folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainParams, seed: int, fingerprint: str
    ):
        self.path = folder / LAST_CHECKPOINT
        self.model, self.optimizer, self.cfg, self.seed, self.fingerprint = model, optimizer, cfg, seed, fingerprint

    def on_epoch_end(self, epoch: int, values: dict[str, float], state: TrainState) -> None:
        save_checkpoint(last_checkpoint(self.model, self.optimizer, state, self.cfg, self.seed, self.fingerprint), self.path)


class Progress(Callback):
    """A tqdm bar of the epochs with the validation loss and the task's first metric; silent in CI and
    under DVC's captured output (and on every DDP rank but the first: ``epochs`` 0)."""

    def __init__(self, epochs: int, primary: str):
        from tqdm import tqdm

        self.primary = f"val_{primary}"
        self.bar = tqdm(total=epochs, desc="train", unit="epoch", disable=not sys.stderr.isatty(), leave=False)

    def on_start(self, state: TrainState) -> None:
        self.bar.update(state.epoch)

    def on_epoch_end(self, epoch: int, values: dict[str, float], state: TrainState) -> None:
        self.bar.update(1)
        self.bar.set_postfix(val_loss=f"{values['val_loss']:.4f}", **{self.primary: f"{values[self.primary]:.4f}"})
        log.debug("epoch %d %s", epoch, values)

    def on_end(self, state: TrainState) -> None:
        self.bar.close()


class CurveLogger:
    """Per-epoch curves to DVCLive (``dvc plots``) and TensorBoard event files."""

    def __init__(self, live_dir: str, tensorboard_dir: str):
        from dvclive import Live
        from torch.utils.tensorboard import SummaryWriter

        self.live = Live(dir=live_dir, dvcyaml=None, save_dvc_exp=False, report=None)
        # TensorBoard's event files carry wall-clock times and the host name, so they are not a DVC
        # output (they would change dvc.lock on every run); each run starts the folder afresh.
        shutil.rmtree(tensorboard_dir, ignore_errors=True)
        self.writer = SummaryWriter(log_dir=tensorboard_dir)

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            if name == "epoch_seconds":
                continue
            split, _, metric = name.partition("_") if name != "lr" else ("", "", "lr")
            self.live.log_metric(f"{split}/{metric}" if split else metric, value)
            self.writer.add_scalar(f"{split}/{metric}" if split else metric, value, epoch)
        self.live.next_step()

    def close(self, summary: dict[str, float]) -> None:
        for name, value in summary.items():
            self.live.log_metric(f"best/{name}", value, plot=False)
        self.live.end()
        self.writer.close()
