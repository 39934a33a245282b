"""Hyperparameter search over the train params with Optuna: a command, outside ``dvc repro``.

Every trial trains exactly as the train stage does (the data kind's ``prepare``, encoder fitted on
the training split, then the engine's ``fit``, same seed) with values drawn by a seeded TPE sampler
from the space of the network being trained: ``tune.space``, or, when it is null, the default
space of ``train.model.architecture`` (``TuneParams.space_for``). Keys are train keys (``lr``) or
the network's own (``model.hidden``). After each epoch the trial reports the early-stopping metric
(``train.early_stopping.metric``) to the pruner, which stops trials that trail the median of earlier
trials at that epoch. A trial's value is that metric at its best epoch, maximised for accuracy and
macro F1, minimised for the loss, MAE and RMSE; the loss and the task's own metrics (accuracy and
macro F1 for a classifier, MAE and RMSE for a forecaster or regressor) at that epoch are recorded.
The first trial of a study is params.yaml's own values where they lie in the space, so the best
found is never worse than them.

The study lives in a database: SQLite in ``paths.tune`` by default, or any SQLAlchemy URL
(``--storage``, ``$EVERGREEN_TUNE_STORAGE`` or ``tune.storage``), so several workers started
with the same storage and study name share one study. ``apply`` writes the best values into
``params.yaml`` line by line (``model.<key>`` into ``train.model``), keeping its comments; ``dvc
repro`` then retrains with them.

Inputs:  ``paths.split`` (train/val split and schema.json), ``paths.augmented``/train.parquet
Outputs: the study (default ``sqlite:///<paths.tune>/optuna.db``), ``paths.tune``/best_params.yaml
         (the best trial's values, value, metrics, trial number, study), ``paths.tune``/summary.json
Params:  ``tune``, ``train``, ``features``, ``seed``
Commands: ``python -m pipeline.tune search [--trials N] [--timeout S] [--storage URL] [--study NAME] [--worker K]``
          ``python -m pipeline.tune show [--storage URL] [--study NAME]``
          ``python -m pipeline.tune apply [--best FILE]``

Modules: ``space`` (the space, one trial's params), ``study`` (storage, the study, its results),
``search`` (the objective, search, show), ``rewrite`` (apply), ``cli``.
"""

from pipeline.tune.cli import main
from pipeline.tune.rewrite import apply, read_best, rewrite_train_values, yaml_value
from pipeline.tune.search import PruningReporter, objective, search, show
from pipeline.tune.space import check_space, current_values, suggest, trial_epochs, trial_params
from pipeline.tune.study import (
    BEST_PARAMS_FILE,
    SUMMARY_FILE,
    best_params_document,
    direction,
    make_pruner,
    open_storage,
    open_study,
    redact,
    reported_metrics,
    summarize,
)

__all__ = [
    "BEST_PARAMS_FILE",
    "SUMMARY_FILE",
    "PruningReporter",
    "apply",
    "best_params_document",
    "check_space",
    "current_values",
    "direction",
    "main",
    "make_pruner",
    "objective",
    "open_storage",
    "open_study",
    "read_best",
    "redact",
    "reported_metrics",
    "rewrite_train_values",
    "search",
    "show",
    "suggest",
    "summarize",
    "trial_epochs",
    "trial_params",
    "yaml_value",
]
