"""pipeline.engine.loop"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from pipeline.core.errors import ParamsError
from pipeline.core.io import file_sha256
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.models import build_model, penalised_parameters
from pipeline.params import LoaderParams, TrainParams
from pipeline.shared.metrics import classification_scores

log = logging.getLogger(__name__)


LAST_CHECKPOINT = "last.pt"


INIT_FILE = "model.pt"  # in paths.init_model: the checkpoint a warm start fine-tunes ...


INIT_ENCODER_FILE = "preprocessor.json"  # ... and the encoder it was trained with (optional)


MAXIMISED = {"val_accuracy", "val_macro_f1"}


# The per-epoch metrics of each task: the first is also shown for the training batches.
TASK_METRICS = {"classification": ("accuracy", "macro_f1"), "regression": ("mae", "rmse")}


ONECYCLE_START_DIVISOR = 25.0


ONECYCLE_DEFAULT_WARMUP = 0.3


@dataclass(frozen=True)
class Tensors:
    """One split, encoded: the network's inputs (each [N, ...], passed as ``model(*inputs)``) and the
    target ``y``: int64 [N] class indices (classification) or float32 [N, H] values (regression).

    Tabular data has inputs (x_num float32 [N, F], x_cat int64 [N, C]); other data kinds bring
    their own inputs, and the loop below never looks inside them.
    """

    inputs: tuple[torch.Tensor, ...]
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    @property
    def task(self) -> str:
        return "classification" if self.y.dtype == torch.int64 else "regression"

    def to(self, device: torch.device, non_blocking: bool = False) -> Tensors:
        return Tensors(tuple(x.to(device, non_blocking=non_blocking) for x in self.inputs), self.y.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Tensors:
        """A copy in page-locked host memory, so copies to a GPU can be asynchronous (needs CUDA)."""
        return Tensors(tuple(x.pin_memory() for x in self.inputs), self.y.pin_memory())

    def rows(self, idx: torch.Tensor | slice) -> tuple[torch.Tensor, ...]:
        return tuple(x[idx] for x in self.inputs)

    @classmethod
    def encode(cls, frame, preprocessor: Preprocessor) -> Tensors:
        """Tabular rows through the fitted encoder."""
        x_num, x_cat = preprocessor.transform(frame)
        y = preprocessor.encode_labels(frame[preprocessor.target])
        return cls((torch.from_numpy(x_num), torch.from_numpy(x_cat)), torch.from_numpy(y))


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_value: float = math.nan
    stopped_early: bool = False
    resumed_at: int = 0  # epochs already done when this process started (0: a fresh run)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job; rank 0 of 1 when training alone.

    Only rank 0 (``main``) writes files and logs curves; every rank takes a disjoint share of
    each global batch, and validation outputs are gathered so every rank computes the same metrics.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or a single process."""
    if "RANK" not in os.environ:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


class EpochLogger(Protocol):
    def log_epoch(self, epoch: int, values: dict[str, float]) -> None: ...


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


def use_pinned_memory(loader: LoaderParams, device: torch.device) -> bool:
    """``train.loader.pin_memory``: ``auto`` pins exactly when training on CUDA (pinning needs it)."""
    if loader.pin_memory == "auto":
        return device.type == "cuda"
    if loader.pin_memory and device.type != "cuda":
        raise ParamsError(f"train.loader.pin_memory = true needs a CUDA device, training runs on {device.type}; use auto")
    return loader.pin_memory


class _SplitRows(torch.utils.data.Dataset):
    """A split for a DataLoader whose every item is a whole batch: ``__getitems__`` slices all rows at once."""

    def __init__(self, data: Tensors):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, idx: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return self.data.rows(idx), self.data.y[idx]


class _EpochBatches:
    """A DataLoader batch sampler: the current epoch's shuffled ``order``, cut into its batches (this
    rank's share of each under DDP)."""

    def __init__(self, batch_size: int, count: int, dist: Distributed):
        self.batch_size, self.count, self.dist = batch_size, count, dist
        self.order = torch.arange(0)

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        for b in range(self.count):
            yield self.order[b * self.batch_size : (b + 1) * self.batch_size][self.dist.rank :: self.dist.world]


def _whole_batch(batch):
    return batch  # _SplitRows already returns collated batches


def batch_loader(data: Tensors, cfg: TrainParams, count: int, pin: bool, dist: Distributed) -> torch.utils.data.DataLoader:
    """``train.loader.workers`` processes gathering the batches of a split kept in host memory; pinned
    batches when ``pin``. The batches, and so the results, are those of the in-memory path."""
    return torch.utils.data.DataLoader(
        _SplitRows(data), batch_sampler=_EpochBatches(cfg.batch_size, count, dist), collate_fn=_whole_batch,
        num_workers=cfg.loader.workers, pin_memory=pin, persistent_workers=True,
        # The workers' seeds come from their own generator: drawing them from the global one would
        # shift the dropout masks and make the results differ from the in-memory path's.
        generator=torch.Generator().manual_seed(0),
    )


def epoch_batches(data: Tensors, order: torch.Tensor, count: int, batch_size: int, loader=None, device=None, dist: Distributed = Distributed()):
    """The epoch's ``count`` batches ``(inputs, target)`` in ``order``: index slices of the split where it
    lies, or, with a ``batch_loader``, its workers' batches copied to ``device`` (asynchronously if pinned).

    ``batch_size`` is the global batch: under DDP each rank takes every world-th row of it."""
    if loader is None:
        for b in range(count):
            idx = order[b * batch_size : (b + 1) * batch_size][dist.rank :: dist.world]
            yield data.rows(idx), data.y[idx]
        return
    loader.batch_sampler.order = order.cpu()
    for inputs, target in loader:
        yield tuple(x.to(device, non_blocking=True) for x in inputs), target.to(device, non_blocking=True)


def make_optimizer(model: nn.Module, cfg: TrainParams, pretrained: frozenset[str] = frozenset()) -> torch.optim.Optimizer:
    """The optimizer named in ``train.optimizer``; weight_decay is the L2 penalty (decoupled in AdamW).

    Trainable parameters loaded by a warm start (``pretrained``) form their own group whose
    learning rate is scaled by ``train.warm_start.pretrained_lr_scale`` (the ``lr_scale`` key).
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for name, p in named if name not in pretrained], "lr_scale": 1.0},
        {"params": [p for name, p in named if name in pretrained], "lr_scale": cfg.warm_start.pretrained_lr_scale},
    ]
    params = [group for group in groups if group["params"]]
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


def check_metric(metric: str, task: str) -> None:
    """The early-stopping metric must be one the task reports (accuracy means nothing for a regression)."""
    allowed = ["val_loss", *(f"val_{name}" for name in TASK_METRICS[task])]
    if metric not in allowed:
        raise ParamsError(f"train.early_stopping.metric = {metric!r} does not apply to {task}; choose one of {allowed}")


def is_improvement(value: float, best: float, metric: str, min_delta: float) -> bool:
    if math.isnan(best):
        return True
    if metric in MAXIMISED:
        return value > best + min_delta
    return value < best - min_delta


def make_loss(task: str, cfg: TrainParams, weight: torch.Tensor | None = None) -> nn.Module:
    """Cross-entropy (with class weights and label smoothing) for classes; ``train.regression_loss`` for values."""
    if task == "classification":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    return {"mse": nn.MSELoss, "mae": nn.L1Loss, "huber": nn.HuberLoss}[cfg.regression_loss]()


@torch.no_grad()
def predict(model: nn.Module, data: Tensors, batch_size: int, dist: Distributed = Distributed()) -> torch.Tensor:
    """The network's outputs over a whole split, in eval mode; restores the previous mode.

    Under DDP each rank computes one contiguous shard and the shards are gathered in order, so
    every rank holds the outputs for the whole split (and computes identical metrics from them).
    """
    was_training = model.training
    model.eval()
    shard = math.ceil(len(data) / dist.world)
    start, stop = dist.rank * shard, min(len(data), (dist.rank + 1) * shard)
    # One row tells the output width even for an empty shard; its result is discarded.
    chunks = [model(*data.rows(slice(i, min(i + batch_size, stop)))) for i in range(start, stop, batch_size)] or [model(*data.rows(slice(0, 1)))[:0]]
    out = torch.cat(chunks).float()
    model.train(was_training)
    if not dist.enabled:
        return out
    padded = torch.zeros((shard, *out.shape[1:]), dtype=out.dtype, device=out.device)
    padded[: len(out)] = out
    gathered = [torch.empty_like(padded) for _ in range(dist.world)]
    torch.distributed.all_gather(gathered, padded)
    return torch.cat(gathered)[: len(data)]


def scores_of(outputs: torch.Tensor, y: torch.Tensor, task: str) -> dict[str, float]:
    """Accuracy and macro F1 of logits, or MAE and RMSE of predicted values (in the training scale)."""
    if task == "classification":
        scores = classification_scores(y.cpu().numpy(), outputs.argmax(1).cpu().numpy(), outputs.shape[1])
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
    error = outputs.reshape(y.shape) - y
    return {"mae": float(error.abs().mean()), "rmse": float(error.pow(2).mean().sqrt())}


def evaluate(model: nn.Module, data: Tensors, loss_fn: nn.Module, batch_size: int, dist: Distributed = Distributed()) -> dict[str, float]:
    """Loss and the task's metrics over a whole split (gathered across DDP ranks)."""
    outputs = predict(model, data, batch_size, dist)
    target = data.y if data.task == "classification" else data.y.reshape(outputs.shape)
    return {"loss": float(loss_fn(outputs, target)), **scores_of(outputs, data.y, data.task)}


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


def warm_start_state(path: Path, config) -> dict[str, torch.Tensor] | None:
    """The weights of the checkpoint at ``path`` to fine-tune, or None (cold start) when there is none."""
    if not path.exists():
        return None
    from pipeline.models import config_from_dict

    saved = torch.load(path, map_location="cpu", weights_only=True)
    family = config_from_dict(saved["model_config"]).family
    if family != config.family:
        raise ParamsError(f"{path} holds a {family} model but train.architecture builds a {config.family}: warm starts need the same architecture")
    return saved["model_state"]


def checkpoint(model: nn.Module, optimizer, epoch: int, history: History, cfg: TrainParams, seed: int) -> dict[str, Any]:
    """A self-describing checkpoint of plain tensors and values (loadable with weights_only=True)."""
    return {
        "model_config": model.config.to_dict(),
        # Plain contiguous tensors whatever the training memory format (channels_last).
        "model_state": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict(),
        "epoch": epoch,
        "best_epoch": history.best_epoch,
        "best_metric": {"name": cfg.early_stopping.metric, "value": history.best_value},
        "train_params": cfg.model_dump(mode="json"),
        "seed": seed,
    }


def run_fingerprint(cfg: TrainParams, seed: int, config, data_files: list[Path]) -> str:
    """What a last checkpoint must match to be resumed: the same params, model, data and training code."""
    from pipeline import models as model
    from pipeline.kinds.tabular import encoder as features
    from pipeline.shared import metrics

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


def fit(
    train: Tensors,
    val: Tensors,
    config,
    cfg: TrainParams,
    seed: int,
    logger: EpochLogger | None = None,
    checkpoint_dir: Path | None = None,
    resume: dict[str, Any] | None = None,
    fingerprint: str = "",
    dist: Distributed = Distributed(),
    init_state: dict[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, dict[str, Any], History]:
    """Train with early stopping; returns the model with the best weights, its checkpoint and the history.

    ``resume`` (a last checkpoint of the same run, see ``resumable``) continues after its epoch with
    the weights, optimizer, schedule, history and random-number state it saved, so an interrupted
    run ends exactly where an uninterrupted one would. The last checkpoint is written every epoch.

    ``init_state`` (weights of an earlier model) warm-starts: matching tensors are loaded, the
    ``train.warm_start.freeze`` prefixes are frozen, and loaded tensors learn at a scaled rate.

    Under ``torchrun`` (``dist``) the network is wrapped in DistributedDataParallel; checkpoints
    always hold the unwrapped model's state (no ``module.`` or ``_orig_mod.`` prefixes).
    """
    task = train.task
    check_metric(cfg.early_stopping.metric, task)
    primary = TASK_METRICS[task][0]
    torch.manual_seed(seed)  # weight init and dropout; batch order has its own generator
    shuffle = torch.Generator().manual_seed(seed)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    pin = use_pinned_memory(cfg.loader, device)
    model = build_model(config)
    pretrained: frozenset[str] = frozenset()
    if init_state is not None:
        loaded, skipped = load_matching(model, init_state)
        frozen = freeze(model, cfg.warm_start.freeze)
        pretrained = frozenset(loaded)
        log.info("warm start: %d tensors loaded, %d fresh %s, %d parameters frozen", len(loaded), len(skipped), skipped, len(frozen))
    model = model.to(device)
    if cfg.loader.workers == 0:  # the whole split on the device once; batches are index slices of it
        train = (train.pin_memory() if pin else train).to(device, non_blocking=pin)
    val = (val.pin_memory() if pin else val).to(device, non_blocking=pin)
    # `model` stays the plain module (checkpoints, evaluation); `net` is what the training step calls.
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if dist.enabled else None
    net = ddp or model
    if cfg.compile:
        net = torch.compile(net)
    optimizer = make_optimizer(model, cfg, pretrained)
    weight = class_weights(train.y, config.n_classes, cfg.class_weight) if task == "classification" else None
    loss_fn, val_loss_fn = make_loss(task, cfg, weight), make_loss(task, cfg)
    l1_params = penalised_parameters(model) if cfg.l1 > 0 else []

    n = len(train)
    # BatchNorm cannot normalise a batch of one: drop a trailing batch too small to give every rank
    # two rows (one row per rank without batch norm).
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    smallest = dist.world * (2 if has_batch_norm else 1)
    batches_per_epoch = n // cfg.batch_size + (1 if n % cfg.batch_size >= smallest else 0)
    loader = batch_loader(train, cfg, batches_per_epoch, pin, dist) if cfg.loader.workers else None
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
        if checkpoint_dir is None or not dist.main:
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

    progress = _progress_bar(cfg.epochs if dist.main else 0)
    progress.update(start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if finished:
            break
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        # Running sums stay tensors (no host sync per step, it matters on a GPU); reduced over ranks below.
        loss_sum = torch.zeros((), device=device)
        hits_sum = torch.zeros((), device=device)  # correct labels, or summed absolute errors
        seen = 0
        batches = epoch_batches(train, order, batches_per_epoch, cfg.batch_size, loader, device, dist)
        for b, (inputs, target) in enumerate(batches):
            stepping = (b + 1) % accum == 0 or b == batches_per_epoch - 1
            if b % accum == 0:
                lr = lr_at(step, cfg, steps_per_epoch) * plateau_scale
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
            # Between optimizer steps DDP need not all-reduce gradients: they only accumulate.
            with ddp.no_sync() if ddp is not None and not stepping else contextlib.nullcontext():
                with autocast:
                    outputs = net(*inputs).float()
                if task == "regression":
                    outputs = outputs.reshape(target.shape)
                loss = loss_fn(outputs, target)
                total_loss = loss + cfg.l1 * sum(p.abs().sum() for p in l1_params) if l1_params else loss
                (total_loss / accum).backward()
            if stepping:
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            with torch.no_grad():
                loss_sum += loss.detach() * len(target)
                hits_sum += (outputs.argmax(1) == target).sum() if task == "classification" else (outputs - target).abs().mean() * len(target)
            seen += len(target)
        sums = torch.stack([loss_sum, hits_sum, torch.tensor(float(seen), device=device)])
        if dist.enabled:
            torch.distributed.all_reduce(sums)
        loss_sum, hits_sum, seen = sums.tolist()

        if dist.enabled:
            # Each rank's last forward updated its own batch-norm statistics; validate (and save)
            # rank 0's, so every shard is scored by the very model that is checkpointed.
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        val_scores = evaluate(model, val, val_loss_fn, max(cfg.batch_size, 4096), dist)
        values = {
            "train_loss": loss_sum / max(seen, 1),
            f"train_{primary}": hits_sum / max(seen, 1),
            **{f"val_{name}": value for name, value in val_scores.items()},
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
        progress.set_postfix(val_loss=f"{values['val_loss']:.4f}", **{f"val_{primary}": f"{values[f'val_{primary}']:.4f}"})
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
    """What training needs, from any data kind: encoded splits, the network's config, the fitted
    encoder (JSON, saved at ``paths.preprocessor`` for evaluate, export and serving) and the data
    files the run depends on (for resuming)."""

    train: Tensors
    val: Tensors
    config: Any
    encoder: dict[str, Any]
    data_files: list[Path]
    # The network's config for other train params on the same data (the hyperparameter search).
    config_for: Callable[[TrainParams], Any]


def reusable_encoder(encoder: dict[str, Any] | None, classes: tuple[str, ...] | list[str]) -> dict[str, Any] | None:
    """A warm start's encoder, when it still fits the data: the same classes in the same order.

    Fine-tuning keeps the initial model's encoder so every input (category index, scaling) means
    what it meant when the weights were learned; new classes need a new encoder (and head)."""
    if encoder is None:
        return None
    if list(encoder.get("classes", [])) != list(classes):
        log.warning("warm start: the classes changed (%s -> %s); the encoder is fitted afresh", encoder.get("classes"), list(classes))
        return None
    log.info("warm start: keeping the initial model's encoder")
    return encoder


def configure_torch(cfg: TrainParams) -> None:
    """Threads (``train.num_threads``) and deterministic kernels, once per process before training."""
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    torch.use_deterministic_algorithms(True)