"""The ``train`` section: the network (``train.model``, by architecture) and the training loop's knobs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.params.base import Section
from pipeline.params.models import MLPParams, ModelParams


class EarlyStoppingParams(Section):
    # val_accuracy and val_macro_f1 for classification, val_mae and val_rmse for regression
    metric: Literal["val_loss", "val_accuracy", "val_macro_f1", "val_mae", "val_rmse"] = "val_loss"
    patience: int = Field(default=5, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


class WarmStartParams(Section):
    """Fine-tuning from the checkpoint in ``paths.init_model`` (when there is one)."""

    # Parameter-name prefixes kept fixed, e.g. ["embeddings", "body.0"] (MLP) or ["tokenizer"] (FT-Transformer).
    freeze: tuple[str, ...] = ()
    pretrained_lr_scale: float = Field(default=0.1, gt=0, le=1)  # loaded tensors learn at lr x this, new ones at lr


class DDPParams(Section):
    """Distributed data parallel: the train stage re-launches itself under torchrun."""

    nproc_per_node: int = Field(default=1, ge=1)  # 1: a single process
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on the CPU


class LoaderParams(Section):
    """How training batches reach the device. ``workers: 0``: the split is moved to the device once and
    batches are index slices of it. ``workers: N``: the split stays in host memory and N worker
    processes gather the batches. Pinned (page-locked) host memory makes the host-to-GPU copies
    asynchronous; ``auto`` pins exactly when training on CUDA."""

    workers: int = Field(default=0, ge=0)
    pin_memory: bool | Literal["auto"] = "auto"


class TrainParams(Section):
    """The network and the training loop."""

    model: ModelParams = MLPParams(architecture="mlp")
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    l1: float = Field(default=0.0, ge=0)
    scheduler: Literal["none", "step", "cosine", "onecycle", "plateau"] = "cosine"
    warmup_epochs: int = Field(default=0, ge=0)
    step_size: int = Field(default=10, ge=1)
    gamma: float = Field(default=0.5, gt=0, lt=1)
    plateau_patience: int = Field(default=2, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=512, ge=1)
    epochs: int = Field(default=30, ge=1)
    grad_clip: float | None = Field(default=None, gt=0)
    # Stop with an error when an epoch's val loss exceeds this multiple of the untrained network's:
    # a diverged run (lr far too high) can keep finite but absurd losses (3e30) and must not become a model.
    divergence_factor: float = Field(default=10.0, gt=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    class_weight: Literal["none", "balanced"] = "none"
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    loader: LoaderParams = LoaderParams()
    num_threads: int | None = Field(default=None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16: autocast for the forward pass, fp32 weights and loss; auto: bf16 for networks with attention
    # (FT-Transformer, sequence and text Transformers) where bf16 is native (AVX512-BF16/AMX, bf16 GPUs),
    # fp32 for the others (see pipeline.engine.training.resolve_precision)
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    grad_accum_steps: int = Field(default=1, ge=1)  # effective batch = batch_size x grad_accum_steps
    regression_loss: Literal["mse", "mae", "huber"] = "mse"
    # true: torch.compile the whole network for training (see bench/train_throughput.py for when it pays);
    # attention: the training attention on faster CPU kernels: compiled for short sequences (<= 32 tokens,
    # the FT-Transformer's features), batched bf16 products for longer ones while a layer's probabilities fit
    # in 128 MiB (the sequence Transformer's windows; see pipeline.models.blocks); auto: attention for networks
    # with attention on the CPU, else nothing (pipeline.engine.training.resolve_compile). Compiling needs a C++
    # compiler and Python's headers: without them true is an error, attention keeps the kernels that need none
    compile: bool | Literal["attention", "auto"] = False
    ddp: DDPParams = DDPParams()
    warm_start: WarmStartParams = WarmStartParams()

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainParams:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs ({self.warmup_epochs}) must be smaller than train.epochs ({self.epochs})")
        return self
