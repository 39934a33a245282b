"""The training loop: ``fit`` sets a run up, then alternates ``train_epoch`` and ``validate`` and hands
each epoch's values to the callbacks (curves, early stopping, best weights, plateau, last checkpoint).

The step math (forward, loss, backward, optimizer step) lives in ``train_epoch`` alone; what a run
decides once (device, wrapped network, optimizer, losses, batching, autocast) is a ``Setup``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import TrainError
from pipeline.engine import distributed
from pipeline.engine.callbacks import (
    Callback,
    Curves,
    EarlyStopping,
    EpochLogger,
    KeepBest,
    Plateau,
    Progress,
    SaveLast,
    check_metric,
)
from pipeline.engine.data import (
    TASK_METRICS,
    Task,
    Tensors,
    batch_count,
    batch_loader,
    epoch_batches,
    on_device,
    use_pinned_memory,
)
from pipeline.engine.distributed import Distributed
from pipeline.engine.optim import class_weights, lr_at, make_loss, make_optimizer, set_lr
from pipeline.engine.state import History, TrainState
from pipeline.engine.warm_start import warm_start
from pipeline.models import build_model, penalised_parameters
from pipeline.models.blocks import SelfAttention, can_compile, compile_attention
from pipeline.params import TrainParams
from pipeline.shared.metrics import classification_scores

log = logging.getLogger(__name__)


@dataclass
class Setup:
    """What a run decides once. ``model`` is the plain module (checkpoints, validation); ``net`` is
    what the training step calls (``model``, wrapped in DDP and/or compiled); ``ddp`` the DDP wrapper."""

    cfg: TrainParams
    task: Task
    dist: Distributed
    device: torch.device
    train: Tensors
    val: Tensors
    model: nn.Module
    net: Callable[..., torch.Tensor]
    ddp: nn.parallel.DistributedDataParallel | None
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    val_loss_fn: nn.Module
    l1_params: list[torch.Tensor]
    batches_per_epoch: int
    steps_per_epoch: int
    loader: torch.utils.data.DataLoader | None
    autocast: torch.autocast


def setup(train: Tensors, val: Tensors, config, cfg: TrainParams, task: Task, dist: Distributed, init_state) -> Setup:
    """Device, network (warm-started), data placement, DDP, compile, optimizer, losses and batching.
    The global generator must be seeded already: building the network draws its initial weights."""
    device = distributed.training_device(cfg.device, dist)
    pin = use_pinned_memory(cfg.loader, device)
    model = build_model(config)
    pretrained = warm_start(model, init_state, cfg.warm_start.freeze)
    model = model.to(device)
    if cfg.loader.workers == 0:  # the whole split on the device once; batches are index slices of it
        train = on_device(train, device, pin)
    val = on_device(val, device, pin)
    ddp = distributed.wrap(model, device, dist)
    compile_mode = resolve_compile(cfg.compile, model, device)
    if compile_mode == "attention":
        compile_attention(model)
    net = torch.compile(ddp or model) if compile_mode is True else (ddp or model)
    precision = resolve_precision(cfg.precision, model, device)
    optimizer = make_optimizer(model, cfg, pretrained)
    weight = class_weights(train.y, config.n_classes, cfg.class_weight) if task == "classification" else None
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    batches = batch_count(len(train), cfg.batch_size, has_batch_norm, dist)
    return Setup(
        cfg,
        task,
        dist,
        device,
        train,
        val,
        model,
        net,
        ddp,
        optimizer,
        loss_fn=make_loss(task, cfg, weight),
        val_loss_fn=make_loss(task, cfg),
        l1_params=penalised_parameters(model) if cfg.l1 > 0 else [],
        batches_per_epoch=batches,
        # Gradient accumulation: one optimizer step every grad_accum_steps batches (and at the epoch's end).
        steps_per_epoch=math.ceil(batches / cfg.grad_accum_steps),
        loader=batch_loader(train, cfg, batches, pin, dist) if cfg.loader.workers else None,
        # bf16 autocast: matrix products in bfloat16 (AMX on recent CPUs, tensor cores on GPUs), the loss in fp32.
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
    )


def has_attention(model: nn.Module) -> bool:
    return any(isinstance(m, SelfAttention) for m in model.modules())


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively here: a CUDA device that supports bf16, or a CPU with
    AVX512-BF16 or AMX-BF16 (read from /proc/cpuinfo; elsewhere oneDNN may only emulate bf16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)  # emulated bf16 (V100, T4) is slower
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, model: nn.Module, device: torch.device) -> str:
    """``train.precision``; ``auto``: bf16 for networks with attention blocks where bf16 is native, else fp32.

    Measured (bench/transformer_speed.py, 1 thread, AVX512-BF16): bf16 autocast trains the FT-Transformer
    1.5x and the sequence Transformer 1.3x faster per epoch at the same validation metric; ``auto`` keeps
    the MLP (and the RNNs, CNNs) in fp32, bit-identical to ``fp32``, where bf16 would change its results."""
    if precision != "auto":
        return precision
    return "bf16" if has_attention(model) and fast_bf16(device) else "fp32"


def resolve_compile(compile: bool | str, model: nn.Module, device: torch.device) -> bool | str:
    """``train.compile``; ``auto``: ``attention`` for networks with attention blocks on the CPU, else no
    compilation. ``true`` on the CPU without a C++ compiler (``can_compile``) is a TrainError up front,
    not inductor's traceback at the first step; ``attention`` without one keeps the kernels that need
    no compiler (``training_kernel``).

    Measured (bench/transformer_speed.py): compiling the whole network is slower than eager on this CPU;
    ``attention`` (see ``pipeline.models.blocks``) makes the FT-Transformer's bf16 epoch 1.8-2x faster
    (its 15 feature tokens through the compiled attention, 5-20 s of compilation once per run) and the
    sequence Transformer's 1.1-1.2x (its 96 steps through the batched bf16 attention; its last block's one
    query through the compiled one)."""
    if compile is True and device.type == "cpu" and not can_compile():
        raise TrainError(
            "train.compile: true needs a C++ compiler and Python's headers on this machine (torch.compile builds "
            "its CPU kernels with them); install them (e.g. g++ and python3-dev) or set train.compile: auto"
        )
    if compile != "auto":
        return compile
    return "attention" if device.type == "cpu" and has_attention(model) else False


def fit(
    train: Tensors,
    val: Tensors,
    config,
    cfg: TrainParams,
    seed: int,
    *,
    task: Task,
    logger: EpochLogger | None = None,
    checkpoint_dir: Path | None = None,
    resume: dict[str, Any] | None = None,
    fingerprint: str = "",
    dist: Distributed = Distributed(),
    init_state: dict[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, dict[str, Any], History]:
    """Train with early stopping; returns the model with the best weights, the best checkpoint
    (weights only, see ``pipeline.engine.state.weights``) and the history.

    ``resume`` (a last checkpoint of the same run, see ``resumable``) continues after its epoch with
    the weights, optimizer, schedule, history and random-number states it saved, so an interrupted
    run ends exactly where an uninterrupted one would. With ``checkpoint_dir`` the last checkpoint
    is written every epoch.

    ``init_state`` (weights of an earlier model) warm-starts: matching tensors are loaded, the
    ``train.warm_start.freeze`` prefixes are frozen, and loaded tensors learn at a scaled rate.

    Under ``torchrun`` (``dist``) the network is wrapped in DistributedDataParallel; checkpoints
    always hold the unwrapped model's state (no ``module.`` or ``_orig_mod.`` prefixes).
    """
    check_metric(cfg.early_stopping.metric, task)
    state = TrainState.start(seed)  # weight init and dropout; batch order has its own generator
    run = setup(train, val, config, cfg, task, dist, init_state)
    if resume is not None:
        run.model.load_state_dict(resume["model_state"])
        run.optimizer.load_state_dict(resume["optimizer_state"])
        state.load_state_dict(resume["train_state"])
        log.info("resuming after epoch %d of %d", resume["epoch"], cfg.epochs)
    callbacks = callbacks_for(run, seed, logger, checkpoint_dir, fingerprint)
    for callback in callbacks:
        callback.on_start(state)
    val_batch = max(cfg.batch_size, 4096)
    reference_loss = divergence_reference(run, task, val_batch, dist)
    for epoch in range(state.epoch, cfg.epochs):
        if state.history.stopped_early:
            break
        started = time.perf_counter()
        train_values, lr = train_epoch(run, state)
        val_values = validate(run.model, run.val, task, run.val_loss_fn, val_batch, dist)
        values = {**train_values, **{f"val_{name}": value for name, value in val_values.items()}, "lr": lr}
        values["epoch_seconds"] = time.perf_counter() - started
        check_finite(epoch, values)
        check_diverged(epoch, values["val_loss"], reference_loss, cfg.divergence_factor)
        state.history.epochs.append(values)
        for callback in callbacks:
            callback.on_epoch_end(epoch, values, state)
    for callback in callbacks:
        callback.on_end(state)
    run.model.load_state_dict(state.best["model_state"])
    run.model.cpu()  # callers export and evaluate on the CPU
    return run.model, state.best, state.history


def callbacks_for(
    run: Setup, seed: int, logger: EpochLogger | None, checkpoint_dir: Path | None, fingerprint: str
) -> list[Callback]:
    """The epoch hooks, in order: curves first (a logger may stop the run before anything is saved),
    then early stopping, which the best weights and the plateau read, then the last checkpoint."""
    cfg = run.cfg
    callbacks: list[Callback] = [Curves(logger)] if logger is not None else []
    callbacks += [EarlyStopping(cfg.early_stopping), KeepBest(run.model, cfg, seed)]
    if cfg.scheduler == "plateau":
        callbacks.append(Plateau(cfg.plateau_patience, cfg.gamma))
    if checkpoint_dir is not None and run.dist.main:  # one writer
        callbacks.append(SaveLast(checkpoint_dir, run.model, run.optimizer, cfg, seed, fingerprint))
    return [*callbacks, Progress(cfg.epochs if run.dist.main else 0, TASK_METRICS[run.task][0])]


def check_finite(epoch: int, values: dict[str, float]) -> None:
    """Stop on a diverged epoch (a NaN or infinite loss or metric), naming what and how to react, rather than
    keep training on garbage or save it as a model."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        shown = ", ".join(f"{name} = {value}" for name, value in bad.items())
        raise TrainError(
            f"epoch {epoch}: {shown}: the training diverged; lower train.lr, set train.grad_clip, or check the inputs for extreme values"
        )


def divergence_reference(run: Setup, task: Task, batch_size: int, dist: Distributed) -> float:
    """The yardstick of divergence: the network's val loss before (more) training, and for a classifier at
    least a uniform guess's (log K), so a warm start from a near-perfect model has room to move. No
    randomness is drawn, so runs stay identical."""
    loss = validate(run.model, run.val, task, run.val_loss_fn, batch_size, dist)["loss"]
    if task == "classification" and len(run.val):
        loss = max(loss, math.log(max(int(run.val.y.max()) + 1, 2)))
    return loss


def check_diverged(epoch: int, val_loss: float, reference: float, factor: float) -> None:
    """Stop when the val loss has grown past ``factor`` times the untrained network's (``train.divergence_factor``)."""
    if math.isfinite(reference) and reference > 0 and val_loss > factor * reference:
        raise TrainError(
            f"epoch {epoch}: val_loss = {val_loss:.4g} is over train.divergence_factor = {factor:g} times the untrained"
            f" network's ({reference:.4g}): the training diverged; lower train.lr or set train.grad_clip"
        )


def train_epoch(run: Setup, state: TrainState) -> tuple[dict[str, float], float]:
    """One pass over the shuffled training split; returns the mean loss and the task's first metric
    over it (``train_*``, reduced over DDP ranks) and the last learning rate."""
    cfg, accum, device = run.cfg, run.cfg.grad_accum_steps, run.device
    run.model.train()
    order = torch.randperm(len(run.train), generator=state.shuffle).to(device)
    # Running sums stay tensors (no host sync per step, it matters on a GPU); reduced over ranks below.
    loss_sum = torch.zeros((), device=device)
    hits_sum = torch.zeros((), device=device)  # correct labels, or summed absolute errors
    seen, lr = 0, math.nan
    batches = epoch_batches(run.train, order, run.batches_per_epoch, cfg.batch_size, run.loader, device, run.dist)
    for b, (inputs, target) in enumerate(batches):
        stepping = (b + 1) % accum == 0 or b == run.batches_per_epoch - 1
        if b % accum == 0:
            lr = lr_at(state.step, cfg, run.steps_per_epoch) * state.plateau_scale
            set_lr(run.optimizer, lr)
        # Between optimizer steps DDP need not all-reduce gradients: they only accumulate.
        with run.ddp.no_sync() if run.ddp is not None and not stepping else contextlib.nullcontext():
            outputs, loss = forward_backward(run, inputs, target)
        if stepping:
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip, foreach=True)  # as the optimizer
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            state.step += 1
        with torch.no_grad():
            loss_sum += loss.detach() * len(target)
            hits_sum += (
                (outputs.argmax(1) == target).sum()
                if run.task == "classification"
                else (outputs - target).abs().mean() * len(target)
            )
        seen += len(target)
    sums = distributed.sum_over_ranks(torch.stack([loss_sum, hits_sum, torch.tensor(float(seen), device=device)]), run.dist)
    loss_sum, hits_sum, seen = sums.tolist()
    distributed.broadcast_buffers(run.model, run.dist)
    primary = TASK_METRICS[run.task][0]
    return {"train_loss": loss_sum / max(seen, 1), f"train_{primary}": hits_sum / max(seen, 1)}, lr


def forward_backward(run: Setup, inputs: tuple[torch.Tensor, ...], target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's outputs (fp32) and loss, gradients accumulated (the L1 penalty included, divided by
    the accumulation steps so accumulated batches match one larger batch)."""
    with run.autocast:
        outputs = run.net(*inputs).float()
    if run.task == "regression":
        outputs = outputs.reshape(target.shape)
    loss = run.loss_fn(outputs, target)
    l1_params, l1 = run.l1_params, run.cfg.l1
    total_loss = loss + l1 * sum(p.abs().sum() for p in l1_params) if l1_params else loss
    (total_loss / run.cfg.grad_accum_steps).backward()
    return outputs, loss


@torch.no_grad()
def predict(model: nn.Module, data: Tensors, batch_size: int, dist: Distributed = Distributed()) -> torch.Tensor:
    """The network's outputs over a whole split, in eval mode; restores the previous mode.

    Under DDP each rank computes one contiguous shard and the shards are gathered in order, so
    every rank holds the outputs for the whole split (and computes identical metrics from them).
    """
    was_training = model.training
    model.eval()
    size, start, stop = distributed.shard(len(data), dist)
    # One row tells the output width even for an empty shard; its result is discarded.
    chunks = [model(*data.rows(slice(i, min(i + batch_size, stop)))) for i in range(start, stop, batch_size)] or [
        model(*data.rows(slice(0, 1)))[:0]
    ]
    out = torch.cat(chunks).float()
    model.train(was_training)
    return distributed.gather_shards(out, size, len(data), dist)


def scores_of(outputs: torch.Tensor, y: torch.Tensor, task: Task) -> dict[str, float]:
    """Accuracy and macro F1 of logits, or MAE and RMSE of predicted values (in the training scale)."""
    if task == "classification":
        scores = classification_scores(y.cpu().numpy(), outputs.argmax(1).cpu().numpy(), outputs.shape[1])
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
    error = outputs.reshape(y.shape) - y
    return {"mae": float(error.abs().mean()), "rmse": float(error.pow(2).mean().sqrt())}


def validate(
    model: nn.Module, data: Tensors, task: Task, loss_fn: nn.Module, batch_size: int, dist: Distributed = Distributed()
) -> dict[str, float]:
    """Loss and the task's metrics over a whole split (gathered across DDP ranks)."""
    outputs = predict(model, data, batch_size, dist)
    target = data.y if task == "classification" else data.y.reshape(outputs.shape)
    return {"loss": float(loss_fn(outputs, target)), **scores_of(outputs, data.y, task)}
