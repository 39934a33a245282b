"""A search: every trial trains as the train stage does, with values drawn from the architecture's space."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.core.errors import DataError, ParamsError
from pipeline.engine import Prepared, check_metric, configure_torch, fit
from pipeline.params import Params, SearchDimension, TrainParams
from pipeline.stages.train import prepare
from pipeline.tune.space import check_space, current_values, plain, suggest, trial_epochs, trial_params
from pipeline.tune.study import (
    TrialState,
    best_params_document,
    direction,
    make_pruner,
    open_storage,
    open_study,
    optuna,
    redact,
    reported_metrics,
    summarize,
    write_results,
)

log = logging.getLogger(__name__)


class Progress:
    """Progress bars on a terminal: one over the search's trials, one over the running trial's epochs (tqdm, on
    stderr, log lines printed above them). Off the terminal (CI, a pipe) nothing is drawn: each finished trial
    is one log line (Optuna's), so a log stays quiet."""

    def __init__(self, trials: int, epochs: int, metric: str, enabled: bool | None = None, file: Any = None):
        self.file = file if file is not None else sys.stderr
        if enabled is None:
            enabled = self.file.isatty() and not os.environ.get("CI")
        self.enabled, self.epochs, self.metric = enabled, epochs, metric
        # mininterval 0: an epoch takes seconds, so every update is drawn (tqdm's default skips updates 0.1 s apart)
        self.trials = tqdm(
            total=trials, desc="trials", unit="trial", disable=not enabled, file=self.file, position=0, mininterval=0
        )
        self.current: tqdm | None = None

    def start_trial(self, number: int) -> None:
        self.end_epochs()
        self.current = tqdm(
            total=self.epochs,
            desc=f"trial {number}",
            unit="epoch",
            leave=False,
            disable=not self.enabled,
            file=self.file,
            position=1,
            mininterval=0,
        )

    def epoch(self, value: float) -> None:
        if self.current is not None:
            self.current.update(1)
            self.current.set_postfix({self.metric: f"{value:.4f}"}, refresh=False)

    def end_epochs(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def end_trial(self, best: float | None) -> None:
        self.end_epochs()
        self.trials.update(1)
        if best is not None:
            self.trials.set_postfix({f"best {self.metric}": f"{best:.4f}"}, refresh=False)

    def close(self) -> None:
        self.end_epochs()
        self.trials.close()


class PruningReporter:
    """``fit``'s epoch logger for a trial: reports the watched metric each epoch and stops the trial
    (``optuna.TrialPruned``, raised through ``fit``) when the pruner gives up on it."""

    def __init__(self, trial, metric: str, progress: Progress | None = None):
        self.trial = trial
        self.metric = metric
        self.progress = progress

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        value = values[self.metric]
        if self.progress is not None:
            self.progress.epoch(value)
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.metric} = {value:.4f}")


def objective(
    trial,
    data: Prepared,
    base: TrainParams,
    space: dict[str, SearchDimension],
    epochs: int,
    seed: int,
    progress: Progress | None = None,
) -> float:
    """Train once with the trial's values; its value is the early-stopping metric at the best epoch,
    and the loss and the task's metrics at that epoch are recorded with it."""
    if progress is not None:
        progress.start_trial(trial.number)
    update = suggest(trial, base, space)
    trial.set_user_attr("train", {key: plain(value) for key, value in update.items()})
    try:
        cfg = trial_params(base, update, epochs)
    except ParamsError as exc:  # a combination inside ranges that check_space could only check at their bounds
        drawn = ", ".join(f"{key} = {plain(value)!r}" for key, value in update.items())
        raise ParamsError(
            f"trial {trial.number} drew {drawn}: {exc}; list values that fit together as choices in tune.space"
        ) from None
    metric = cfg.early_stopping.metric
    _, _, history = fit(
        data.train, data.val, data.config_for(cfg), cfg, seed, task=data.task, logger=PruningReporter(trial, metric, progress)
    )
    best = history.epochs[history.best_epoch]
    trial.set_user_attr("best_epoch", history.best_epoch)
    trial.set_user_attr("epochs_run", len(history.epochs))
    trial.set_user_attr("metrics", {name: best[name] for name in reported_metrics(data.task)})
    return history.best_value


def search(
    params: Params, *, storage: str, study_name: str, trials: int, timeout: float | None = None, worker: int = 0
) -> dict[str, Any]:
    """Run ``trials`` trials (or until ``timeout``) in the shared study; write best_params.yaml and summary.json."""
    base, tune = params.train, params.tune
    architecture, metric = base.model.architecture, base.early_stopping.metric
    space = tune.space_for(architecture)
    check_space(base, tune)
    configure_torch(base)
    data = prepare(params.features, base, params.paths)
    check_metric(metric, data.task)  # before a study is made for a metric the data cannot report
    # Each worker seeds its sampler differently (seed + worker): workers with one seed would draw
    # the same random start-up trials.
    sampler = optuna.samplers.TPESampler(seed=params.seed + worker)
    study = open_study(
        open_storage(storage),
        study_name,
        metric,
        task=data.task,
        architecture=architecture,
        sampler=sampler,
        pruner=make_pruner(tune.pruner),
    )
    folder, epochs = Path(params.paths.tune), trial_epochs(base, tune)
    # Once per study and set of values: a later search with other train values adds them too.
    study.enqueue_trial(current_values(base, space), skip_if_exists=True)
    ran = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]  # not the enqueued
    log.info(
        "study %r in %s: %d trials run so far; %d more (%s, %s: %s %s over %s; %d epochs each at most)",
        study_name,
        redact(storage),
        len(ran),
        trials,
        architecture,
        data.task,
        direction(metric),
        metric,
        ", ".join(space),
        epochs,
    )

    def record(study, _trial=None) -> dict[str, Any]:
        """Results as they stand (every worker's trials), rewritten after each trial: a long search
        stopped at any point leaves the best so far."""
        summary = {**summarize(study), "storage": redact(storage)}
        best = best_params_document(study, epochs) if summary["complete"] else None
        write_results(folder, summary, best)
        return summary

    progress = Progress(trials, epochs, metric)

    def advance(study, trial) -> None:
        record(study)
        completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        progress.end_trial(study.best_value if completed else None)

    try:
        with logging_redirect_tqdm():  # log lines print above the bars instead of through them
            study.optimize(
                lambda trial: objective(trial, data, base, space, epochs, params.seed, progress),
                n_trials=trials,
                timeout=timeout,
                callbacks=[advance],
            )
    finally:
        progress.close()
    summary = record(study)
    if summary["complete"] == 0:
        raise DataError(
            f"study {study_name!r}: no trial completed ({summary['pruned']} pruned, {summary['failed']} failed); nothing to apply"
        )
    log.info(
        "best %s %.4f (trial %d of %d: %d complete, %d pruned, %d failed): %s; %s",
        metric,
        summary["best_value"],
        summary["best_trial"],
        summary["trials"],
        summary["complete"],
        summary["pruned"],
        summary["failed"],
        summary["best_train"],
        summary["best_metrics"],
    )
    return summary


def show(storage: str, study_name: str) -> str:
    """Every trial of the study, one line each, after a summary line and the best trial."""
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage, create=False))
    except KeyError:
        raise DataError(f"no study {study_name!r} in {redact(storage)} (run python -m pipeline.tune search)") from None
    summary = summarize(study)
    metric = summary["metric"] or summary["direction"]
    started_for = ", ".join(str(summary[key]) for key in ("architecture", "task") if summary[key])
    lines = [
        f"study {study_name!r} ({started_for + '; ' if started_for else ''}{summary['direction']} {metric}): "
        f"{summary['trials']} trials, {summary['complete']} complete, {summary['pruned']} pruned, "
        f"{summary['failed']} failed, {summary['running']} running"
    ]
    if summary["best_trial"] is not None:
        values = ", ".join(f"{name} {value:.4f}" for name, value in (summary["best_metrics"] or {}).items())
        lines.append(
            f"best: trial {summary['best_trial']}, {metric} = {summary['best_value']:.4f} ({values}), {summary['best_train']}"
        )
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE:
            outcome = f"{metric} {trial.value:.4f} (best epoch {trial.user_attrs.get('best_epoch')})"
        elif trial.intermediate_values:  # pruned (or still running): its last reported epoch
            last = max(trial.intermediate_values)
            outcome = f"{metric} {trial.intermediate_values[last]:.4f} at epoch {last}"
        else:
            outcome = "-"
        train = " ".join(f"{key}={value}" for key, value in trial.user_attrs.get("train", {}).items())
        lines.append(f"{trial.number:>5}  {trial.state.name:<8}  {outcome:<40}  {train}")
    return "\n".join(lines) + "\n"
