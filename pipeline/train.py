"""Stage train: fit the feature encoder on the training split, then train the PyTorch MLP.

The loop reads top to bottom: batches are index slices of in-memory tensors (no per-row Python),
the learning rate is a pure function of the step (``lr_at``), validation is one no-grad function,
early stopping watches one validation metric, and the best and the last model are checkpointed as
self-describing dicts (model config, state, optimizer, epoch, best metric, params) that load with
``torch.load(weights_only=True)``. Curves go to DVCLive (for ``dvc plots``) and TensorBoard.

Inputs:  ``paths.split`` (train.parquet for fitting the encoder, val.parquet, schema.json),
         ``paths.augmented``/train.parquet (the rows trained on)
Outputs: ``paths.preprocessor``, ``paths.model`` (best), ``paths.checkpoints`` (last),
         ``paths.train_live`` (DVCLive metrics and plots), ``paths.tensorboard``
Params:  ``features``, ``train``, ``seed``
Command: ``python -m pipeline.train``
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pipeline.common import file_sha256, read_schema, read_table, split_file, stage_main, write_json
from pipeline.config import FeatureParams, Paths, TrainParams
from pipeline.errors import ParamsError
from pipeline.features import Preprocessor, fit_preprocessor
from pipeline.metrics import classification_scores
from pipeline.model import ModelConfig, TabularMLP, build_model, penalised_parameters

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
MAXIMISED = {"val_accuracy", "val_macro_f1"}
ONECYCLE_START_DIVISOR = 25.0
ONECYCLE_DEFAULT_WARMUP = 0.3


@dataclass(frozen=True)
class Tensors:
    """One split, encoded: x_num float32 [N, F], x_cat int64 [N, C], y int64 [N]."""

    x_num: torch.Tensor
    x_cat: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> Tensors:
        return Tensors(self.x_num.to(device), self.x_cat.to(device), self.y.to(device))

    @classmethod
    def encode(cls, frame, preprocessor: Preprocessor) -> Tensors:
        x_num, x_cat = preprocessor.transform(frame)
        y = preprocessor.encode_labels(frame[preprocessor.target])
        return cls(torch.from_numpy(x_num), torch.from_numpy(x_cat), torch.from_numpy(y))


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_value: float = math.nan
    stopped_early: bool = False
    resumed_at: int = 0  # epochs already done when this process started (0: a fresh run)


class EpochLogger(Protocol):
    def log_epoch(self, epoch: int, values: dict[str, float]) -> None: ...


# ---------------------------------------------------------------- pure pieces of the loop


def lr_at(step: int, cfg: TrainParams, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step ``step`` for every schedule except reduce-on-plateau's cuts."""
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "onecycle":
        warm = cfg.warmup_epochs * steps_per_epoch or int(ONECYCLE_DEFAULT_WARMUP * total)
        start = cfg.lr / ONECYCLE_START_DIVISOR
        if step < warm:
            return start + (cfg.lr - start) * 0.5 * (1 - math.cos(math.pi * step / warm))
        progress = (step - warm) / max(1, total - warm)
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** ((step - warm) // (cfg.step_size * steps_per_epoch))
    if cfg.scheduler == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr  # none, plateau


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("train.device = 'cuda': no CUDA device is available; use auto or cpu")
    return torch.device(name)


def make_optimizer(model: nn.Module, cfg: TrainParams) -> torch.optim.Optimizer:
    """The optimizer named in ``train.optimizer``; weight_decay is the L2 penalty (decoupled in AdamW)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def class_weights(y: torch.Tensor, n_classes: int, mode: str) -> torch.Tensor | None:
    """'balanced' weights n / (k * count), as in scikit-learn; classes absent from training get 0."""
    if mode == "none":
        return None
    counts = torch.bincount(y, minlength=n_classes).double()
    weights = torch.where(counts > 0, len(y) / (n_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def is_improvement(value: float, best: float, metric: str, min_delta: float) -> bool:
    if math.isnan(best):
        return True
    if metric in MAXIMISED:
        return value > best + min_delta
    return value < best - min_delta


@torch.no_grad()
def evaluate(model: nn.Module, data: Tensors, loss_fn: nn.Module, batch_size: int) -> dict[str, float]:
    """Loss, accuracy and macro F1 over a whole split, in eval mode; restores the previous mode."""
    was_training = model.training
    model.eval()
    logits = torch.cat(
        [model(data.x_num[i : i + batch_size], data.x_cat[i : i + batch_size]) for i in range(0, len(data), batch_size)]
    )
    model.train(was_training)
    loss = float(loss_fn(logits, data.y))
    scores = classification_scores(data.y.cpu().numpy(), logits.argmax(1).cpu().numpy(), logits.shape[1])
    return {"loss": loss, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


def checkpoint(model: TabularMLP, optimizer, epoch: int, history: History, cfg: TrainParams, seed: int) -> dict[str, Any]:
    """A self-describing checkpoint of plain tensors and values (loadable with weights_only=True)."""
    return {
        "model_config": model.config.to_dict(),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict(),
        "epoch": epoch,
        "best_epoch": history.best_epoch,
        "best_metric": {"name": cfg.early_stopping.metric, "value": history.best_value},
        "train_params": cfg.model_dump(mode="json"),
        "seed": seed,
    }


def run_fingerprint(cfg: TrainParams, seed: int, config: ModelConfig, data_files: list[Path]) -> str:
    """What a last checkpoint must match to be resumed: the same params, model, data and training code."""
    from pipeline import features, metrics, model

    digest = hashlib.sha256(json.dumps([cfg.model_dump(mode="json"), seed, config.to_dict()], sort_keys=True).encode())
    for path in [*data_files, Path(__file__), Path(model.__file__), Path(features.__file__), Path(metrics.__file__)]:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def resumable(checkpoint_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The last checkpoint if it belongs to this very run (same fingerprint), else None (start afresh)."""
    path = checkpoint_dir / LAST_CHECKPOINT
    if not path.exists():
        return None
    last = torch.load(path, map_location="cpu", weights_only=True)
    if last.get("resume", {}).get("fingerprint") != fingerprint:
        log.info("%s belongs to another run (params, data or code changed): training from scratch", path)
        return None
    return last


# ---------------------------------------------------------------- the loop


def fit(
    train: Tensors,
    val: Tensors,
    config: ModelConfig,
    cfg: TrainParams,
    seed: int,
    logger: EpochLogger | None = None,
    checkpoint_dir: Path | None = None,
    resume: dict[str, Any] | None = None,
    fingerprint: str = "",
) -> tuple[TabularMLP, dict[str, Any], History]:
    """Train with early stopping; returns the model with the best weights, its checkpoint and the history.

    ``resume`` (a last checkpoint of the same run, see ``resumable``) continues after its epoch with
    the weights, optimizer, schedule, history and random-number state it saved, so an interrupted
    run ends exactly where an uninterrupted one would. The last checkpoint is written every epoch.
    """
    torch.manual_seed(seed)  # weight init and dropout; batch order has its own generator
    shuffle = torch.Generator().manual_seed(seed)
    device = resolve_device(cfg.device)
    model = build_model(config).to(device)
    train, val = train.to(device), val.to(device)
    optimizer = make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(train.y, config.n_classes, cfg.class_weight), label_smoothing=cfg.label_smoothing)
    val_loss_fn = nn.CrossEntropyLoss()
    l1_params = penalised_parameters(model) if cfg.l1 > 0 else []

    n = len(train)
    # BatchNorm cannot normalise a batch of one: drop a trailing single-row batch.
    batches_per_epoch = n // cfg.batch_size + (1 if n % cfg.batch_size > 1 or (n % cfg.batch_size == 1 and not config.batch_norm) else 0)
    # Gradient accumulation: one optimizer step every grad_accum_steps batches (and at the epoch's end).
    accum = cfg.grad_accum_steps
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    # bf16 autocast: matrix products in bfloat16 (AMX on recent CPUs, tensor cores on GPUs), the loss in fp32.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    plateau_scale, plateau_wait = 1.0, 0
    history = History()
    best: dict[str, Any] = {}
    step, start_epoch, finished = 0, 0, False
    if resume is not None:
        model.load_state_dict(resume["model_state"])
        optimizer.load_state_dict(resume["optimizer_state"])
        state = resume["resume"]
        history = History(list(state["history"]), resume["best_epoch"], resume["best_metric"]["value"], state["stopped_early"])
        best, step, finished = state["best"], state["step"], state["finished"]
        plateau_scale, plateau_wait = state["plateau"]
        torch.set_rng_state(state["rng_torch"])
        shuffle.set_state(state["rng_shuffle"])
        start_epoch = history.resumed_at = resume["epoch"] + 1
        if logger is not None:
            for epoch, values in enumerate(history.epochs):  # the curves of the epochs already done
                logger.log_epoch(epoch, values)
        log.info("resuming after epoch %d of %d", resume["epoch"], cfg.epochs)

    def save_last(epoch: int, done: bool) -> None:
        if checkpoint_dir is None:
            return
        last = checkpoint(model, optimizer, epoch, history, cfg, seed)
        last["resume"] = {
            "fingerprint": fingerprint, "history": history.epochs, "stopped_early": history.stopped_early, "best": best,
            "step": step, "plateau": [plateau_scale, plateau_wait], "finished": done,
            "rng_torch": torch.get_rng_state(), "rng_shuffle": shuffle.get_state(),
        }
        # Write then rename: a kill during the save leaves the previous epoch's checkpoint intact.
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        temporary = checkpoint_dir / f".{LAST_CHECKPOINT}.tmp"
        torch.save(last, temporary)
        temporary.replace(checkpoint_dir / LAST_CHECKPOINT)

    progress = _progress_bar(cfg.epochs)
    progress.update(start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if finished:
            break
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        # Running sums stay tensors: no host sync per step (it matters on a GPU).
        loss_sum = torch.zeros((), device=device)
        correct, seen = torch.zeros((), dtype=torch.int64, device=device), 0
        for b in range(batches_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if b % accum == 0:
                lr = lr_at(step, cfg, steps_per_epoch) * plateau_scale
                for group in optimizer.param_groups:
                    group["lr"] = lr
            with autocast:
                logits = model(train.x_num[idx], train.x_cat[idx])
            loss = loss_fn(logits.float(), train.y[idx])
            total_loss = loss + cfg.l1 * sum(p.abs().sum() for p in l1_params) if l1_params else loss
            (total_loss / accum).backward()
            if (b + 1) % accum == 0 or b == batches_per_epoch - 1:
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == train.y[idx]).sum()
            seen += len(idx)

        val_scores = evaluate(model, val, val_loss_fn, max(cfg.batch_size, 4096))
        values = {
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_accuracy": int(correct) / max(seen, 1),
            "val_loss": val_scores["loss"],
            "val_accuracy": val_scores["accuracy"],
            "val_macro_f1": val_scores["macro_f1"],
            "lr": lr,
            "epoch_seconds": time.perf_counter() - started,
        }
        history.epochs.append(values)
        if logger is not None:
            logger.log_epoch(epoch, values)

        watched = values[cfg.early_stopping.metric]
        if is_improvement(watched, history.best_value, cfg.early_stopping.metric, cfg.early_stopping.min_delta):
            history.best_epoch, history.best_value = epoch, watched
            best = copy.deepcopy(checkpoint(model, optimizer, epoch, history, cfg, seed))
            plateau_wait = 0
        else:
            plateau_wait += 1
            if cfg.scheduler == "plateau" and plateau_wait > cfg.plateau_patience:
                plateau_scale *= cfg.gamma
                plateau_wait = 0
        if epoch - history.best_epoch >= cfg.early_stopping.patience:
            history.stopped_early = True
        save_last(epoch, done=history.stopped_early or epoch == cfg.epochs - 1)
        progress.update(1)
        progress.set_postfix(val_loss=f"{values['val_loss']:.4f}", val_acc=f"{values['val_accuracy']:.4f}")
        log.debug("epoch %d %s", epoch, values)
        if history.stopped_early:
            break
    progress.close()
    model.load_state_dict(best["model_state"])
    model.cpu()  # callers export and evaluate on the CPU
    best["best_epoch"] = history.best_epoch
    return model, best, history


def _progress_bar(total: int):
    """tqdm on an interactive terminal; silent in CI and under DVC's captured output."""
    from tqdm import tqdm

    return tqdm(total=total, desc="train", unit="epoch", disable=not sys.stderr.isatty(), leave=False)


class CurveLogger:
    """Per-epoch curves to DVCLive (``dvc plots``) and TensorBoard event files."""

    def __init__(self, live_dir: str, tensorboard_dir: str):
        from dvclive import Live
        from torch.utils.tensorboard import SummaryWriter

        self.live = Live(dir=live_dir, dvcyaml=None, save_dvc_exp=False, report=None)
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


@dataclass(frozen=True)
class Prepared:
    """The training stage's inputs, encoded once: the encoder fitted on the real training rows,
    the rows trained on (the augmented split) and the validation rows."""

    preprocessor: Preprocessor
    train: Tensors
    val: Tensors
    data_files: tuple[Path, ...]  # what a run's fingerprint hashes

    def model_config(self, cfg: TrainParams) -> ModelConfig:
        """The network for these inputs and the train params' architecture keys."""
        return ModelConfig(
            n_numeric=self.preprocessor.n_numeric_inputs,
            cardinalities=tuple(self.preprocessor.cardinalities),
            n_classes=len(self.preprocessor.classes),
            hidden=cfg.hidden,
            dropout=cfg.dropout,
            batch_norm=cfg.batch_norm,
            categorical_encoding=cfg.categorical_encoding,
            embedding_dim=cfg.embedding_dim,
        )


def prepare(features: FeatureParams, paths: Paths) -> Prepared:
    """Read the split and augmented data, fit the encoder on the training split, encode (shared by
    this stage and the hyperparameter search, so both train on exactly the same tensors)."""
    schema = read_schema(paths.split)
    # The encoder learns from the real training rows only: augmented rows are training-time noise.
    preprocessor = fit_preprocessor(read_table(split_file(paths.split, "train")), schema, features)
    train = Tensors.encode(read_table(split_file(paths.augmented, "train")), preprocessor)
    val = Tensors.encode(read_table(split_file(paths.split, "val")), preprocessor)
    data_files = (split_file(paths.split, "train"), split_file(paths.split, "val"), split_file(paths.augmented, "train"))
    return Prepared(preprocessor, train, val, data_files)


def configure_torch(cfg: TrainParams) -> None:
    """Threads (``train.num_threads``) and deterministic kernels, once per process before training."""
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    torch.use_deterministic_algorithms(True)


def run(features: FeatureParams, cfg: TrainParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Fit the encoder on the training split, train, and write the encoder, checkpoints and curves."""
    configure_torch(cfg)
    data = prepare(features, paths)
    write_json(paths.preprocessor, data.preprocessor.to_dict())
    train, val, config = data.train, data.val, data.model_config(cfg)
    checkpoint_dir = Path(paths.checkpoints)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = run_fingerprint(cfg, seed, config, list(data.data_files))
    curves = CurveLogger(paths.train_live, paths.tensorboard)
    started = time.perf_counter()
    model, best, history = fit(
        train, val, config, cfg, seed, logger=curves, checkpoint_dir=checkpoint_dir,
        resume=resumable(checkpoint_dir, fingerprint), fingerprint=fingerprint,
    )
    seconds = time.perf_counter() - started
    best_values = history.epochs[history.best_epoch]
    summary = {
        "epoch": history.best_epoch,
        "val_loss": best_values["val_loss"],
        "val_accuracy": best_values["val_accuracy"],
        "val_macro_f1": best_values["val_macro_f1"],
    }
    curves.close(summary)
    Path(paths.model).parent.mkdir(parents=True, exist_ok=True)
    torch.save(best, paths.model)
    trained = len(history.epochs) - history.resumed_at
    log.info(
        "trained %d epochs (%d here, %d resumed; best %d, %s=%.4f) in %.1fs, %.0f samples/s; %d parameters",
        len(history.epochs), trained, history.resumed_at, history.best_epoch, cfg.early_stopping.metric,
        history.best_value, seconds, trained * len(train) / seconds, sum(p.numel() for p in model.parameters()),
    )
    return {**summary, "epochs_run": len(history.epochs), "stopped_early": history.stopped_early}


def main() -> None:
    stage_main(lambda p: run(p.features, p.train, p.paths, p.seed))


if __name__ == "__main__":
    main()
