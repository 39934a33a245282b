"""The kind-agnostic training engine.

``fit`` trains a network on a kind's ``Prepared`` tensors; ``train_and_save`` is the train stage's
run (prepare -> fit -> save) and ``train_command`` runs it alone or as ``torchrun`` ranks.

Modules: ``data`` (Tensors, batches), ``optim`` (optimizer, schedule, losses), ``distributed``
(device, DDP), ``state`` (TrainState, checkpoints), ``callbacks`` (early stopping, best weights,
plateau, last checkpoint, curves), ``warm_start``, ``training`` (fit, train_epoch, validate),
``prepared`` (what a kind hands the engine) and ``run``.
"""

from pipeline.engine.callbacks import MAXIMISED, Callback, CurveLogger, EpochLogger, check_metric, is_improvement
from pipeline.engine.data import TASK_METRICS, Task, Tensors, batch_loader, epoch_batches, use_pinned_memory
from pipeline.engine.distributed import Distributed, distributed_from_env, resolve_device
from pipeline.engine.optim import class_weights, lr_at, make_loss, make_optimizer
from pipeline.engine.prepared import Prepared, keeps_encoder
from pipeline.engine.run import configure_torch, launch_torchrun, train_and_save, train_command
from pipeline.engine.state import LAST_CHECKPOINT, History, TrainState, resumable, run_fingerprint
from pipeline.engine.training import fit, predict, scores_of, train_epoch, validate
from pipeline.engine.warm_start import INIT_ENCODER_FILE, INIT_FILE, InitialModel, freeze, load_matching, warm_start_state

__all__ = [
    "INIT_ENCODER_FILE",
    "INIT_FILE",
    "LAST_CHECKPOINT",
    "MAXIMISED",
    "TASK_METRICS",
    "Callback",
    "CurveLogger",
    "Distributed",
    "EpochLogger",
    "History",
    "InitialModel",
    "Prepared",
    "Task",
    "Tensors",
    "TrainState",
    "batch_loader",
    "check_metric",
    "class_weights",
    "configure_torch",
    "distributed_from_env",
    "epoch_batches",
    "fit",
    "freeze",
    "is_improvement",
    "launch_torchrun",
    "load_matching",
    "lr_at",
    "make_loss",
    "make_optimizer",
    "predict",
    "resolve_device",
    "resumable",
    "keeps_encoder",
    "run_fingerprint",
    "scores_of",
    "train_and_save",
    "train_command",
    "train_epoch",
    "use_pinned_memory",
    "validate",
    "warm_start_state",
]
