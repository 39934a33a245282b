"""Stage train: fit the feature encoder on the training split, then train the PyTorch MLP.

The loop reads top to bottom: batches are index slices of in-memory tensors (no per-row Python;
with ``train.loader.workers``, DataLoader worker processes gather the same batches from host memory),
the learning rate is a pure function of the step (``lr_at``), validation is one no-grad function,
early stopping watches one validation metric, and the best and the last model are checkpointed as
self-describing dicts (model config, state, optimizer, epoch, best metric, params) that load with
``torch.load(weights_only=True)``. Curves go to DVCLive (for ``dvc plots``) and TensorBoard.

Inputs:  ``paths.split`` (train.parquet for fitting the encoder, val.parquet, schema.json),
         ``paths.augmented``/train.parquet (the rows trained on)
Outputs: ``paths.preprocessor``, ``paths.model`` (best), ``paths.checkpoints`` (last),
         ``paths.train_live`` (DVCLive metrics and plots), ``paths.tensorboard``
Params:  ``features``, ``train``, ``seed``
Command: ``python -m pipeline.stages.train``
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pipeline import kinds
from pipeline.core.errors import TrainError
from pipeline.core.io import read_json, write_json
from pipeline.engine.loop import (
    INIT_ENCODER_FILE,
    INIT_FILE,
    CurveLogger,
    Distributed,
    Prepared,
    configure_torch,
    distributed_from_env,
    fit,
    resolve_device,
    resumable,
    run_fingerprint,
    warm_start_state,
)
from pipeline.params import DDPParams, FeatureParams, Params, Paths, TrainParams
from pipeline.stages.common import stage_main

log = logging.getLogger(__name__)



def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    """The training inputs of the data kind found in ``paths.split`` (``encoder``: a warm start's)."""
    return kinds.get(kinds.data_kind(paths.split)).stages().prepare(features, cfg, paths, encoder)


def run(features: FeatureParams, cfg: TrainParams, paths: Paths, seed: int, dist: Distributed = Distributed()) -> dict[str, Any]:
    """Fit the encoder on the training split, train, and write the encoder, checkpoints and curves.

    Every DDP rank prepares the same data and trains its share; only rank 0 writes.
    """
    configure_torch(cfg)
    init_file, init_encoder_file = Path(paths.init_model) / INIT_FILE, Path(paths.init_model) / INIT_ENCODER_FILE
    init_encoder = read_json(init_encoder_file) if init_file.exists() and init_encoder_file.exists() else None
    prepared = prepare(features, cfg, paths, init_encoder)
    train, val, config = prepared.train, prepared.val, prepared.config
    checkpoint_dir = Path(paths.checkpoints)
    init_state = warm_start_state(init_file, config)
    init_files = [path for path in (init_file, init_encoder_file) if init_state is not None and path.exists()]
    fingerprint = run_fingerprint(cfg, seed, config, [*prepared.data_files, *init_files])
    curves = None
    if dist.main:
        write_json(paths.preprocessor, prepared.encoder)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        curves = CurveLogger(paths.train_live, paths.tensorboard)
    started = time.perf_counter()
    model, best, history = fit(
        train, val, config, cfg, seed, logger=curves, checkpoint_dir=checkpoint_dir,
        resume=resumable(checkpoint_dir, fingerprint), fingerprint=fingerprint, dist=dist, init_state=init_state,
    )
    seconds = time.perf_counter() - started
    best_values = history.epochs[history.best_epoch]
    summary = {"epoch": history.best_epoch, **{k: v for k, v in best_values.items() if k.startswith("val_")}}
    if not dist.main:
        return summary
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


def launch_torchrun(ddp: DDPParams) -> dict[str, Any]:
    """Re-run this stage as ``nproc_per_node`` processes under torchrun on this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ddp.nproc_per_node}", "-m", "pipeline.stages.train"]
    log.info("train.ddp.nproc_per_node = %d: %s", ddp.nproc_per_node, " ".join(command[1:]))
    result = subprocess.run(command)
    if result.returncode != 0:
        raise TrainError(f"torchrun with {ddp.nproc_per_node} training processes failed (exit code {result.returncode}; the ranks' errors are above)")
    return {"processes": ddp.nproc_per_node}


def train_command(params: Params) -> dict[str, Any]:
    """The stage's command: alone, as a DDP rank (under torchrun), or launching torchrun itself."""
    dist = distributed_from_env()
    if not dist.enabled:
        if params.train.ddp.nproc_per_node > 1:
            return launch_torchrun(params.train.ddp)
        return run(params.features, params.train, params.paths, params.seed)
    backend = params.train.ddp.backend
    if backend == "auto":
        backend = "nccl" if resolve_device(params.train.device).type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend)
    try:
        return run(params.features, params.train, params.paths, params.seed, dist)
    finally:
        torch.distributed.destroy_process_group()


def main() -> None:
    stage_main(train_command)


if __name__ == "__main__":
    main()
