"""The sections outside the DVC stages' data path: evaluate/export knobs, the gate, the monitor, the service, tuning."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from pipeline.params.base import Section
from pipeline.params.paths import Paths


class EvaluateParams(Section):
    calibration_bins: int = Field(default=15, ge=2)
    curve_points: int = Field(default=101, ge=3)
    baseline_max_iter: int = Field(default=200, ge=1)
    # The HGB baseline fits on at most this many training rows (a seeded sample beyond; the report says how many).
    baseline_max_rows: int = Field(default=500_000, ge=1000)


class ExportParams(Section):
    opset: int = Field(default=17, ge=13)
    tolerance: float = Field(default=1e-4, gt=0)
    int8: bool = True  # also write a dynamically quantised int8 model, with its size, accuracy and agreement
    # Tables: parity and the int8 check run on at most this many test rows (a fixed-seed sample beyond).
    parity_max_rows: int = Field(default=100_000, ge=100)


class GateParams(Section):
    """Champion/challenger: promote only if the challenger is at least as good, within a tolerance."""

    # accuracy | balanced_accuracy | macro_f1 (higher is better); mae | rmse (regression, lower is better)
    metric: Literal["accuracy", "balanced_accuracy", "macro_f1", "mae", "rmse"] = "accuracy"
    # In the metric's units: a share below 1 for accuracies, the target's units for errors (dollars, MW).
    tolerance: float = Field(default=0.005, ge=0)
    # Serve the int8 model when its test accuracy is at most this far below the fp32 model's.
    int8_max_accuracy_loss: float = Field(default=0.005, ge=0, lt=1)

    @model_validator(mode="after")
    def _share_tolerance(self) -> GateParams:
        if self.metric not in ("mae", "rmse") and self.tolerance >= 1:
            raise ValueError(f"gate.tolerance = {self.tolerance} must be below 1 for gate.metric {self.metric} (a share)")
        return self


class MonitorParams(Section):
    """When the drift monitor asks for a retrain."""

    source: Literal["landing", "prediction_log", "both"] = "landing"
    reference_sample: int = Field(default=20000, ge=100)
    current_sample: int = Field(default=20000, ge=100)
    drift_share: float = Field(default=0.5, gt=0, le=1)
    min_rows: int = Field(default=500, ge=1)
    accuracy_tolerance: float = Field(default=0.05, ge=0, lt=1)
    # A numeric prediction's MAE on new labelled data above its test MAE x (1 + error_tolerance) asks for a retrain.
    error_tolerance: float = Field(default=0.25, ge=0)
    cooldown_hours: float = Field(default=24.0, ge=0)
    keep_reports: int = Field(default=20, ge=1)  # drift checks whose HTML reports are kept; older ones are pruned
    # Snapshots kept per project in the Evidently workspace (its UI loads every one, ~1 MB of memory each).
    keep_snapshots: int = Field(default=500, ge=1)
    # Per-group drift (a kind's KindRuntime.drift_groups; sequences: per series): the largest groups with at least
    # min_rows new rows, at most this many, each checked against the same group's reference rows; 0: off.
    max_groups: int = Field(default=20, ge=0)
    # Evidently drift methods; null: its defaults (which switch with sample size, so verdicts come from its tests).
    method: str | None = None  # for every column, e.g. "psi" or "jensenshannon"
    num_method: str | None = None  # numeric columns only, e.g. "wasserstein", "ks"
    cat_method: str | None = None  # categorical columns only, e.g. "chisquare"
    threshold: float | None = Field(default=None, gt=0)


class ServeParams(Section):
    """The prediction service (``python -m serving``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Any SQLAlchemy URL; one with a password goes in $EVERGREEN_DATABASE_URL, never here.
    database_url: str = "sqlite:///data/predictions.sqlite"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_records: int = Field(default=1000, ge=1)
    reload_interval_seconds: float = Field(default=2.0, gt=0)
    onnx_threads: int = Field(default=1, ge=1)
    access_log: bool = True  # one log line per request (uvicorn's access log); off in the benchmarks
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"  # NORMAL: survives SIGKILL, not power loss
    # A production model or pointer that cannot be loaded at start: "unready" serves nothing and says why on
    # /ready (the gate chose that version; serving another one silently would be skew nobody decided);
    # "fallback" serves the newest earlier production version that verifies, and says so on /ready.
    on_bad_model: Literal["unready", "fallback"] = "unready"
    header_timeout_seconds: float = Field(default=10.0, gt=0)  # a request's header must be in within this
    body_timeout_seconds: float = Field(default=30.0, gt=0)  # and its body within this (408 after it)
    max_header_bytes: int = Field(default=16_384, ge=1024)  # request line + headers; more gets 431
    max_label_chars: int = Field(default=256, ge=1, le=256)  # /labels: longest label (the log's column holds 256)
    # Processes accepting on the port, all logging to the one prediction log: a number, or "auto" (serve_workers).
    workers: int | Literal["auto"] = "auto"

    @field_validator("database_url")
    @classmethod
    def _no_password(cls, url: str) -> str:
        refuse_password(url, DATABASE_URL_ENV)
        return url

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and 1 <= value <= MAX_WORKERS):
            return value
        raise ValueError(WORKERS_CHOICES)


# "auto" serve.workers: one per CPU this process may use, at most this many. Each worker is a whole service
# (its own Python and model session: 120 MB of its own with the tabular model) and every worker commits to
# the one prediction log, which takes one commit at a time: past a few workers the log, not the CPUs, sets
# the pace (docs/serving/service.md).
AUTO_WORKERS_MAX = 4
MAX_WORKERS = 64  # a typo such as 10000 would fork until the system refuses
WORKERS_CHOICES = (
    f"must be a whole number of processes from 1 to {MAX_WORKERS}, or auto (one per usable CPU, at most {AUTO_WORKERS_MAX})"
)


def serve_workers(workers: int | Literal["auto"], cpus: int | None = None) -> int:
    """The number of service worker processes ``serve.workers`` asks for: itself, or for "auto" the CPUs this
    process may use (``cpus``; by default ``usable_cpus``), at most ``AUTO_WORKERS_MAX``."""
    if workers != "auto":
        return workers
    return max(1, min(usable_cpus() if cpus is None else cpus, AUTO_WORKERS_MAX))


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its CPU affinity, lowered to a cgroup v2 CPU quota rounded up (a
    container limited to 1.5 CPUs on a 64-core host gets 2, not 64). No quota file, or "max": no quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, _, period = cpu_max.read_text().partition(" ")
        if quota.strip() != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 here, or a file of another shape: the affinity stands
        pass
    return cpus


DATABASE_URL_ENV = "EVERGREEN_DATABASE_URL"


def refuse_password(url: str | None, env: str) -> str | None:
    """A URL with a password does not belong in params.yaml: it is committed and copied into every
    registry version. The environment variable takes it instead."""
    if url is not None and urlsplit(url).password:
        raise ValueError(
            f"holds a password; set the URL in ${env} instead (params are committed and copied into every model version)"
        )
    return url


def prediction_log_url(serve: ServeParams) -> str:
    """The prediction log's URL: $EVERGREEN_DATABASE_URL when set (credentials belong there, not in
    params.yaml, which is committed), else ``serve.database_url``."""
    return os.environ.get(DATABASE_URL_ENV) or serve.database_url


# ---------------------------------------------------------------- tuning


class SearchDimension(Section):
    """One key's search space: a range ``{low, high, log}`` or a list ``{choices: [...]}``."""

    low: float | None = None
    high: float | None = None
    log: bool = False  # sample on a log scale (learning rates, weight decay)
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (with log), not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high, or choices")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low:g}")
        return self


class PrunerParams(Section):
    """Stop a trial early when its validation metric trails the median of earlier trials at that epoch."""

    method: Literal["median", "none"] = "median"
    n_startup_trials: int = Field(default=5, ge=0)  # trials that always finish before any is pruned
    n_warmup_steps: int = Field(default=5, ge=0)  # epochs a trial always runs before it can be pruned


def _dims(**space: dict[str, Any]) -> dict[str, SearchDimension]:
    return {key.replace("__", "."): SearchDimension(**value) for key, value in space.items()}


_LR = {"low": 3e-4, "high": 1e-2, "log": True}
_SLOW_LR = {"low": 1e-4, "high": 3e-3, "log": True}
_DECAY = {"low": 1e-6, "high": 1e-2, "log": True}
# The default search space of each architecture (``tune.space: null``): the optimiser's knobs and
# the network's own capacity and regularisation. Keys are train keys; ``model.<key>`` are the network's.
DEFAULT_SPACES: dict[str, dict[str, SearchDimension]] = {
    "mlp": _dims(
        lr=_LR,
        batch_size={"choices": (256, 512, 1024)},
        weight_decay=_DECAY,
        model__dropout={"low": 0.0, "high": 0.5},
        model__hidden={"choices": ((128, 64), (256, 128), (512, 256))},
    ),
    "ft_transformer": _dims(
        lr=_SLOW_LR,
        batch_size={"choices": (128, 256, 512)},
        weight_decay=_DECAY,
        model__attention_dropout={"low": 0.0, "high": 0.3},
        model__ffn_dropout={"low": 0.0, "high": 0.3},
        model__layers={"choices": (2, 3, 4)},
    ),
    "cnn": _dims(lr=_LR, batch_size={"choices": (32, 64, 128)}, weight_decay=_DECAY, model__dropout={"low": 0.0, "high": 0.5}),
    "lstm": _dims(
        lr=_LR,
        batch_size={"choices": (64, 128, 256)},
        weight_decay=_DECAY,
        model__hidden={"choices": (32, 64, 128)},
        model__layers={"choices": (1, 2)},
    ),
    "seq_transformer": _dims(
        lr=_SLOW_LR,
        batch_size={"choices": (64, 128, 256)},
        weight_decay=_DECAY,
        model__dropout={"low": 0.0, "high": 0.3},
        model__layers={"choices": (1, 2, 3)},
    ),
}
DEFAULT_SPACES["gru"] = DEFAULT_SPACES["lstm"]
DEFAULT_SPACES["text_transformer"] = _dims(
    lr=_SLOW_LR,
    batch_size={"choices": (32, 64, 128)},
    weight_decay=_DECAY,
    model__dropout={"low": 0.0, "high": 0.3},
    model__layers={"choices": (1, 2, 3)},
)
DEFAULT_SPACES["text_lstm"] = _dims(
    lr=_LR, batch_size={"choices": (32, 64, 128)}, weight_decay=_DECAY, model__hidden={"choices": (32, 64, 128)}
)

# Train keys a search may not vary: the objective is the early-stopping metric, which must be the
# same for every trial to compare them, and the epochs of a trial are capped by tune.epochs.
UNSEARCHABLE_TRAIN_KEYS = ("early_stopping", "epochs", "model", "model.architecture")


def numeric_kind(annotation: Any) -> type | None:
    """int or float for a numeric field (optional or not), else None."""
    kinds = {arg for arg in get_args(annotation) or (annotation,) if arg is not type(None)}
    if kinds == {int}:
        return int
    if kinds == {float}:
        return float
    return None


class TuneParams(Section):
    """The Optuna search over train params (``python -m pipeline.tune``; outside ``dvc repro``)."""

    trials: int = Field(default=20, ge=1)  # per search command (each worker adds this many)
    timeout_seconds: float | None = Field(default=None, gt=0)
    # Study storage: any SQLAlchemy URL; null: SQLite in paths.tune. One with a password goes in
    # $EVERGREEN_TUNE_STORAGE, never here.
    storage: str | None = None
    study: str = Field(default="evergreen", min_length=1)
    epochs: int | None = Field(default=None, ge=1)  # cap on each trial's epochs (null: train.epochs)
    pruner: PrunerParams = PrunerParams()
    # Train keys to search ("lr", "model.hidden", ...); null: the architecture's DEFAULT_SPACES entry.
    space: dict[str, SearchDimension] | None = None

    @field_validator("storage")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        return refuse_password(url, TUNE_STORAGE_ENV)

    @field_validator("space")
    @classmethod
    def _not_empty(cls, space: dict[str, SearchDimension] | None) -> dict[str, SearchDimension] | None:
        if space is not None and not space:
            raise ValueError("name at least one train key to search, or null for the architecture's default space")
        return space

    def space_for(self, architecture: str) -> dict[str, SearchDimension]:
        """The search space in force: the one given, else the architecture's default."""
        return dict(self.space) if self.space is not None else dict(DEFAULT_SPACES[architecture])


TUNE_STORAGE_ENV = "EVERGREEN_TUNE_STORAGE"
TUNE_DATABASE_FILE = "optuna.db"


def tune_storage_url(tune: TuneParams, paths: Paths) -> str:
    """Where the Optuna study lives: $EVERGREEN_TUNE_STORAGE when set (a shared database for several
    workers, credentials included), else ``tune.storage``, else SQLite in ``paths.tune``."""
    return os.environ.get(TUNE_STORAGE_ENV) or tune.storage or f"sqlite:///{Path(paths.tune) / TUNE_DATABASE_FILE}"
