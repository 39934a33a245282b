"""A whole training run for the train stage: prepare -> train -> save, alone or as DDP ranks.

Every DDP rank prepares the same data and trains its share; only rank 0 writes (the encoder, the
checkpoints, the curves and the best model).
"""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import TrainError
from pipeline.core.io import write_json
from pipeline.engine.callbacks import CurveLogger
from pipeline.engine.distributed import Distributed, distributed_from_env, process_group
from pipeline.engine.prepared import Prepared
from pipeline.engine.state import resumable, run_fingerprint, save_checkpoint
from pipeline.engine.training import fit
from pipeline.engine.warm_start import InitialModel, warm_start_state
from pipeline.params import DDPParams, Paths, TrainParams, usable_cpus

log = logging.getLogger(__name__)


# glibc's allocator (mallopt, malloc.h): blocks up to this size come from the heap, not from a mapping
# of their own, and up to TRIM_THRESHOLD of freed heap stays in the process.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its adaptive threshold (64-bit)
TRIM_THRESHOLD = 256 << 20


def configure_torch(cfg: TrainParams) -> None:
    """Threads (``train.num_threads``), deterministic kernels and the host allocator, once per process before training.

    ``num_threads: null`` is PyTorch's default (the physical cores of the CPU affinity) lowered to the
    CPUs a cgroup v2 quota allows (``usable_cpus``): in a container given 2 CPUs of a 64-core host,
    64 threads would mostly wait for each other. On this idle 2-core machine two threads trained the
    FT-Transformer's bf16 step 1.4-1.5x faster than one; when another job held the second core they
    were 2-12x slower, which no rule can see coming: set ``train.num_threads: 1`` on a shared machine.

    With deterministic algorithms PyTorch also fills every new tensor with NaN, so that a read of
    uninitialised memory would show; results never depend on it (they would be NaN), and the fill
    was 9% of the sequence Transformer's bf16 step in the CPU profile: it is off. See
    ``keep_freed_memory`` for the allocator. Neither changes a single result bit (an MLP trains to the
    same weights, tests/unit/engine/test_run.py); together they made the sequence Transformer's bf16
    epoch 7-20% faster (bench/transformer_speed.py, the ``fill+mmap`` row)."""
    torch.set_num_threads(cfg.num_threads or min(torch.get_num_threads(), usable_cpus()))
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # a property on the module object
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Let glibc keep a training step's freed tensors for the next step instead of handing them back
    to the kernel; returns whether it applied (Linux with glibc only).

    By default glibc maps large blocks afresh and returns the top of its heap once 2x its adaptive
    threshold is free, so every step's activations were new pages: the sequence Transformer's bf16
    step on the CPU took 19,000-27,000 page faults (80-110 MB of pages zeroed by the kernel, then
    written). With blocks up to ``MMAP_THRESHOLD`` from the heap and up to ``TRIM_THRESHOLD`` of it
    kept, it takes none. The cost: up to ``TRIM_THRESHOLD`` stays resident between steps, and the peak
    grew 4% there (1,071 -> 1,110 MB over two epochs and a validation)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others have no such knobs
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def train_and_save(
    prepare: Callable[[dict[str, Any] | None], Prepared],
    cfg: TrainParams,
    paths: Paths,
    seed: int,
    dist: Distributed = Distributed(),
) -> dict[str, Any]:
    """Prepare the data (``prepare(warm start's encoder or None)``), train, and write the encoder,
    checkpoints, curves and the best model; returns the best epoch's validation values."""
    configure_torch(cfg)
    initial = InitialModel.at(paths.init_model)
    prepared = prepare(initial.encoder())
    init_state = warm_start_state(initial.checkpoint, prepared.config)
    fingerprint = run_fingerprint(cfg, seed, prepared.config, [*prepared.data_files, *initial.files()])
    checkpoint_dir = Path(paths.checkpoints)
    curves = None
    if dist.main:
        write_json(paths.preprocessor, prepared.encoder)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        curves = CurveLogger(paths.train_live, paths.tensorboard)
    started = time.perf_counter()
    model, best, history = fit(
        prepared.train,
        prepared.val,
        prepared.config,
        cfg,
        seed,
        task=prepared.task,
        logger=curves,
        checkpoint_dir=checkpoint_dir,
        resume=resumable(checkpoint_dir, fingerprint),
        fingerprint=fingerprint,
        dist=dist,
        init_state=init_state,
    )
    seconds = time.perf_counter() - started
    best_values = history.epochs[history.best_epoch]
    summary = {"epoch": history.best_epoch, **{k: v for k, v in best_values.items() if k.startswith("val_")}}
    if curves is None:  # not rank 0: nothing to write
        return summary
    curves.close(summary)
    save_checkpoint(best, paths.model)
    trained = len(history.epochs) - history.resumed_at
    log.info(
        "trained %d epochs (%d here, %d resumed; best %d, %s=%.4f) in %.1fs, %.0f samples/s; %d parameters",
        len(history.epochs),
        trained,
        history.resumed_at,
        history.best_epoch,
        cfg.early_stopping.metric,
        history.best_value,
        seconds,
        trained * len(prepared.train) / seconds,
        sum(p.numel() for p in model.parameters()),
    )
    return {**summary, "epochs_run": len(history.epochs), "stopped_early": history.stopped_early}


def launch_torchrun(ddp: DDPParams, module: str) -> dict[str, Any]:
    """Re-run ``python -m module`` as ``nproc_per_node`` processes under torchrun on this machine."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={ddp.nproc_per_node}",
        "-m",
        module,
    ]
    log.info("train.ddp.nproc_per_node = %d: %s", ddp.nproc_per_node, " ".join(command[1:]))
    result = subprocess.run(command)
    if result.returncode != 0:
        raise TrainError(
            f"torchrun with {ddp.nproc_per_node} training processes failed (exit code {result.returncode}; the ranks' errors are above)"
        )
    return {"processes": ddp.nproc_per_node}


def train_command(run: Callable[[Distributed], dict[str, Any]], cfg: TrainParams, module: str) -> dict[str, Any]:
    """A training command (``run``, the command-line module ``module``): alone, as a DDP rank (under
    torchrun), or launching torchrun itself when ``train.ddp.nproc_per_node`` > 1."""
    dist = distributed_from_env()
    if dist.enabled:
        with process_group(cfg.ddp.backend, cfg.device):
            return run(dist)
    if cfg.ddp.nproc_per_node > 1:
        return launch_torchrun(cfg.ddp, module)
    return run(dist)
