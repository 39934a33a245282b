"""The Optuna study: its storage (SQLite or any SQLAlchemy URL, shared by workers), what it was
started for (metric, task, architecture), and its results (summary.json, best_params.yaml)."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import yaml
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from pipeline.core.dburl import redact, with_driver

try:
    import optuna
    from optuna.trial import TrialState
except ModuleNotFoundError:  # the optional "tune" extra; main() says how to install it
    # mypy's documented idiom for an optional import: None means "not installed", which main() checks before any use.
    optuna = None  # type: ignore[assignment]
    TrialState = None  # type: ignore[assignment,misc]

from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import atomic_write
from pipeline.engine import MAXIMISED, TASK_METRICS
from pipeline.params import PrunerParams

log = logging.getLogger(__name__)

BEST_PARAMS_FILE = "best_params.yaml"
SUMMARY_FILE = "summary.json"
SQLITE_BUSY_TIMEOUT_S = 60  # several local workers on one SQLite file wait for each other's writes
STORAGE_ATTEMPTS = 5
# What a study is started for, and where a search's value of each comes from: trials that differ in
# any of them are not comparable.
IDENTITY = {
    "metric": "train.early_stopping.metric",
    "task": "the task of the data in paths.split",
    "architecture": "train.model.architecture",
}


def direction(metric: str) -> Literal["maximize", "minimize"]:
    """Optuna's direction for an early-stopping metric."""
    return "maximize" if metric in MAXIMISED else "minimize"


def reported_metrics(task: str) -> list[str]:
    """The validation values each trial records: the loss and the task's own metrics."""
    return ["val_loss", *(f"val_{name}" for name in TASK_METRICS[task])]


def _sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL, else None."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_storage(url: str, create: bool = True):
    """Optuna's RDB storage at ``url``; a bad URL, a missing driver or an unreachable database is one line."""
    url = with_driver(url, "psycopg")  # postgresql:// as libpq writes it
    database = _sqlite_file(url)
    if database is not None:
        if not create and not database.exists():
            raise DataError(f"{database}: no study database yet (run python -m pipeline.tune search first)")
        database.parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if database is not None else {}
    for attempt in range(1, STORAGE_ATTEMPTS + 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except ModuleNotFoundError as exc:
            raise ParamsError(f"tune storage {redact(url)}: its database driver is not installed ({exc.name})") from None
        except SQLAlchemyError as exc:
            # Workers started together race to create the tables and stamp the schema version: the
            # loser sees "already exists" or a duplicate key, and the next attempt finds them made.
            racing = any(word in str(exc).lower() for word in ("already exists", "unique", "duplicate"))
            if racing and attempt < STORAGE_ATTEMPTS:
                log.info("tune storage being created by another worker (%s); trying again", exc.__class__.__name__)
                time.sleep(0.2 * attempt)
                continue
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ParamsError(f"tune storage {redact(url)}: cannot open ({exc.__class__.__name__}: {first_line})") from None
    raise AssertionError("unreachable")


def make_pruner(cfg: PrunerParams):
    if cfg.method == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps)


def open_study(storage, name: str, metric: str, *, task: str, architecture: str, sampler=None, pruner=None):
    """Create the study, or join it when it exists (several workers); refuse one started for another
    metric, task or architecture (their trials could not be compared with this search's)."""
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction(metric), sampler=sampler, pruner=pruner, load_if_exists=True
    )
    stored = study.user_attrs
    if "metric" not in stored and study.direction.name.lower() != direction(metric):
        raise ParamsError(
            f"study {name!r} was started to {study.direction.name.lower()}, but train.early_stopping.metric "
            f"{metric!r} is to {direction(metric)}: name a new study (--study or tune.study)"
        )
    for key, value in {"metric": metric, "task": task, "architecture": architecture}.items():
        if key not in stored:
            study.set_user_attr(key, value)
        elif stored[key] != value:
            raise ParamsError(
                f"study {name!r} was started for {key} {stored[key]!r}, but {IDENTITY[key]} is {value!r}: "
                "name a new study (--study or tune.study)"
            )
    return study


def summarize(study) -> dict[str, Any]:
    """What the study was started for, counts by trial state and the best trial, across every worker that joined it."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(trial.state for trial in trials)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    metric, task = study.user_attrs.get("metric"), study.user_attrs.get("task")
    return {
        "study": study.study_name,
        "architecture": study.user_attrs.get("architecture"),
        "task": task,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "metrics": reported_metrics(task) if task in TASK_METRICS else None,
        "trials": len(trials),
        "complete": states[TrialState.COMPLETE],
        "pruned": states[TrialState.PRUNED],
        "failed": states[TrialState.FAIL],
        "running": states[TrialState.RUNNING] + states[TrialState.WAITING],
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_metrics": best.user_attrs.get("metrics") if best else None,
        "best_train": best.user_attrs.get("train") if best else None,
    }


def best_params_document(study, epochs: int) -> dict[str, Any]:
    """What ``apply`` reads: the best trial's train values (``model.<key>``: the network's), and where they came from."""
    best = study.best_trial
    if "train" not in best.user_attrs:
        raise DataError(f"study {study.study_name!r}: best trial {best.number} has no train values recorded")
    return {
        "study": study.study_name,
        "trial": best.number,
        "architecture": study.user_attrs.get("architecture"),
        "task": study.user_attrs.get("task"),
        "metric": study.user_attrs.get("metric"),
        "direction": study.direction.name.lower(),
        "value": best.value,
        "metrics": best.user_attrs.get("metrics"),  # every reported validation value at the best epoch
        "best_epoch": best.user_attrs.get("best_epoch"),
        "trial_epochs": epochs,  # each trial's epoch budget (train.epochs is not changed by apply)
        "train": best.user_attrs["train"],
    }


def write_results(folder: Path, summary: dict[str, Any], best: dict[str, Any] | None) -> None:
    atomic_write(folder / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if best is not None:
        header = (
            f"# Best trial of Optuna study {best['study']!r} (python -m pipeline.tune search).\n"
            "# Write its train values into params.yaml with: python -m pipeline.tune apply\n"
        )
        atomic_write(folder / BEST_PARAMS_FILE, header + yaml.safe_dump(best, sort_keys=False, default_flow_style=None))
