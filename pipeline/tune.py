"""Hyperparameter search over the train params with Optuna: a command, outside ``dvc repro``.

Every trial trains exactly as the train stage does (the same encoder fitted on the training split,
the same tensors, loop and seed: ``pipeline.train.prepare`` and ``fit``) with the train keys of
``tune.space`` drawn by a seeded TPE sampler. After each epoch the trial reports the early-stopping
metric (``train.early_stopping.metric``) to the pruner, which stops trials that trail the median of
earlier trials at that epoch. A trial's value is that metric at its best epoch, minimised for
``val_loss`` and maximised for ``val_accuracy``/``val_macro_f1``.

The study lives in a database: SQLite in ``paths.tune`` by default, or any SQLAlchemy URL
(``--storage``, ``$EVERGREEN_TUNE_STORAGE`` or ``tune.storage``), so several workers started
with the same storage and study name share one study. ``apply`` writes the best train values into
``params.yaml`` line by line, keeping its comments; ``dvc repro`` then retrains with them.

Inputs:  ``paths.split`` (train/val Parquet and schema.json), ``paths.augmented``/train.parquet
Outputs: the study (default ``sqlite:///<paths.tune>/optuna.db``), ``paths.tune``/best_params.yaml
         (the best trial's train values, value, trial number, study), ``paths.tune``/summary.json
Params:  ``tune``, ``train``, ``features``, ``seed``
Commands: ``python -m pipeline.tune search [--trials N] [--timeout S] [--storage URL] [--study NAME] [--worker K]``
          ``python -m pipeline.tune show [--storage URL] [--study NAME]``
          ``python -m pipeline.tune apply [--best FILE]``
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

try:
    import optuna
    from optuna.trial import TrialState
except ModuleNotFoundError:  # the optional "tune" extra; main() says how to install it
    optuna = None

from pipeline.core.cli import run_or_exit, setup_logging
from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import atomic_write
from pipeline.engine import MAXIMISED, Prepared, configure_torch, fit
from pipeline.params import (
    DEFAULT_PARAMS_FILE,
    Params,
    PrunerParams,
    TrainParams,
    TuneParams,
    load_params,
    numeric_kind,
    parse_params,
    tune_storage_url,
)
from pipeline.stages.train import prepare

log = logging.getLogger(__name__)

BEST_PARAMS_FILE = "best_params.yaml"
SUMMARY_FILE = "summary.json"
SQLITE_BUSY_TIMEOUT_S = 60  # several local workers on one SQLite file wait for each other's writes
STORAGE_ATTEMPTS = 5


# ---------------------------------------------------------------- the search space and one trial


def direction(metric: str) -> str:
    """Optuna's direction for an early-stopping metric."""
    return "maximize" if metric in MAXIMISED else "minimize"


def trial_epochs(train: TrainParams, tune: TuneParams) -> int:
    """Each trial's epoch budget: train.epochs, capped by tune.epochs."""
    return min(train.epochs, tune.epochs) if tune.epochs is not None else train.epochs


def trial_params(base: TrainParams, update: dict[str, Any], epochs: int) -> TrainParams:
    """``base`` with the trial's values and epoch budget, validated again as a whole (never mutated).
    Lists (YAML's, JSON's) are taken as the tuples the params hold."""
    update = {key: tuple(value) if isinstance(value, list) else value for key, value in update.items()}
    try:
        return TrainParams.model_validate({**base.model_dump(), **update, "epochs": epochs})
    except ValidationError as exc:
        problems = "; ".join(
            f"train.{'.'.join(str(part) for part in error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
            if error["loc"] else error["msg"].removeprefix("Value error, ")
            for error in exc.errors()
        )
        raise ParamsError(problems) from None


def _as_train_value(key: str, value: Any) -> Any:
    """A bound of a range as the train key's type (YAML ranges are read as floats)."""
    return int(value) if numeric_kind(TrainParams.model_fields[key].annotation) is int else value


def check_space(base: TrainParams, tune: TuneParams) -> None:
    """Fail before any trial runs if a bound or a choice of ``tune.space`` gives invalid train params."""
    epochs = trial_epochs(base, tune)
    try:
        trial_params(base, {}, epochs)
    except ParamsError as exc:
        raise ParamsError(f"tune.epochs = {tune.epochs}: trials would run {epochs} epochs: {exc}") from None
    for key, dimension in tune.space.items():
        values = dimension.choices if dimension.choices is not None else (dimension.low, dimension.high)
        for value in values:
            try:
                trial_params(base, {key: _as_train_value(key, value)}, epochs)
            except ParamsError as exc:
                raise ParamsError(f"tune.space.{key}: {value!r} is not a valid train value: {exc}") from None


def _choice_label(choice: Any) -> Any:
    """Optuna stores categorical choices as plain scalars: a list value (``hidden``) becomes its JSON text."""
    return json.dumps(list(choice)) if isinstance(choice, tuple) else choice


def _plain(value: Any) -> Any:
    """Tuples as lists, for JSON (trial attributes) and YAML."""
    return [_plain(item) for item in value] if isinstance(value, (tuple, list)) else value


def suggest(trial, tune: TuneParams) -> dict[str, Any]:
    """One trial's train values, drawn from ``tune.space`` (ints for integer train keys)."""
    values: dict[str, Any] = {}
    for key, dimension in tune.space.items():
        try:
            if dimension.choices is not None:
                labels = {_choice_label(choice): choice for choice in dimension.choices}
                values[key] = labels[trial.suggest_categorical(key, list(labels))]
            elif numeric_kind(TrainParams.model_fields[key].annotation) is int:
                values[key] = trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
            else:
                values[key] = trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)
        except ValueError as exc:  # Optuna refuses a changed distribution for a name already in the study
            raise ParamsError(
                f"tune.space.{key} differs from the space study {trial.study.study_name!r} was started with "
                f"({exc}); name a new study (--study) to search a new space"
            ) from None
    return values


def current_values(base: TrainParams, tune: TuneParams) -> dict[str, Any]:
    """The params file's own train values, as Optuna parameters, for the keys whose value lies in the
    space: queued as a trial (a new study's first, never pruned), so when every key's value lies in
    the space the best found is never worse than what params.yaml has."""
    values: dict[str, Any] = {}
    for key, dimension in tune.space.items():
        value = getattr(base, key)
        if dimension.choices is not None:
            if value in dimension.choices:
                values[key] = _choice_label(value)
        elif value is not None and dimension.low <= value <= dimension.high:
            values[key] = value
    return values


class PruningReporter:
    """``fit``'s epoch logger for a trial: reports the watched metric each epoch and stops the trial
    (``optuna.TrialPruned``, raised through ``fit``) when the pruner gives up on it."""

    def __init__(self, trial, metric: str):
        self.trial = trial
        self.metric = metric

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        value = values[self.metric]
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.metric} = {value:.4f}")


def objective(trial, data: Prepared, base: TrainParams, tune: TuneParams, seed: int) -> float:
    """Train once with the trial's values; its value is the early-stopping metric at the best epoch."""
    update = suggest(trial, tune)
    cfg = trial_params(base, update, trial_epochs(base, tune))
    trial.set_user_attr("train", {key: _plain(value) for key, value in update.items()})
    metric = cfg.early_stopping.metric
    _, _, history = fit(data.train, data.val, data.config_for(cfg), cfg, seed, task=data.task, logger=PruningReporter(trial, metric))
    best = history.epochs[history.best_epoch]
    trial.set_user_attr("best_epoch", history.best_epoch)
    trial.set_user_attr("epochs_run", len(history.epochs))
    for name in ("val_loss", "val_accuracy", "val_macro_f1"):
        trial.set_user_attr(name, best[name])
    return history.best_value


# ---------------------------------------------------------------- the study


def redact(url: str) -> str:
    """A storage URL fit for logs and reports: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"


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


def open_study(storage, name: str, metric: str, sampler=None, pruner=None):
    """Create the study, or join it when it exists (several workers); refuse one made for another metric."""
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction(metric), sampler=sampler, pruner=pruner, load_if_exists=True
    )
    stored = study.user_attrs.get("metric")
    if stored is None and study.direction.name.lower() == direction(metric):
        study.set_user_attr("metric", metric)
    elif stored != metric:
        raise ParamsError(
            f"study {name!r} was started for {stored or study.direction.name.lower()}, but "
            f"train.early_stopping.metric is {metric!r}: name a new study (--study or tune.study)"
        )
    return study


def summarize(study, metric: str) -> dict[str, Any]:
    """Counts by trial state and the best trial, across every worker that joined the study."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(trial.state for trial in trials)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return {
        "study": study.study_name,
        "metric": metric,
        "direction": direction(metric),
        "trials": len(trials),
        "complete": states[TrialState.COMPLETE],
        "pruned": states[TrialState.PRUNED],
        "failed": states[TrialState.FAIL],
        "running": states[TrialState.RUNNING] + states[TrialState.WAITING],
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_train": best.user_attrs.get("train") if best else None,
    }


def best_params_document(study, metric: str, epochs: int) -> dict[str, Any]:
    """What ``apply`` reads: the best trial's train values, and where they came from."""
    best = study.best_trial
    if "train" not in best.user_attrs:
        raise DataError(f"study {study.study_name!r}: best trial {best.number} has no train values recorded")
    return {
        "study": study.study_name,
        "trial": best.number,
        "metric": metric,
        "direction": direction(metric),
        "value": best.value,
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


def search(
    params: Params, *, storage: str, study_name: str, trials: int, timeout: float | None = None, worker: int = 0
) -> dict[str, Any]:
    """Run ``trials`` trials (or until ``timeout``) in the shared study; write best_params.yaml and summary.json."""
    base, tune = params.train, params.tune
    check_space(base, tune)
    configure_torch(base)
    data = prepare(params.features, base, params.paths)
    metric = base.early_stopping.metric
    # Each worker seeds its sampler differently (seed + worker): workers with one seed would draw
    # the same random start-up trials.
    sampler = optuna.samplers.TPESampler(seed=params.seed + worker)
    study = open_study(open_storage(storage), study_name, metric, sampler, make_pruner(tune.pruner))
    folder, epochs = Path(params.paths.tune), trial_epochs(base, tune)
    # Once per study and set of values: a later search with other train values adds them too.
    study.enqueue_trial(current_values(base, tune), skip_if_exists=True)
    log.info(
        "study %r in %s: %d trials so far; %d more (%s %s, %d epochs each at most)",
        study_name, redact(storage), len(study.get_trials(deepcopy=False)), trials, direction(metric), metric, epochs,
    )

    def record(study, _trial=None) -> dict[str, Any]:
        """Results as they stand (every worker's trials), rewritten after each trial: a long search
        stopped at any point leaves the best so far."""
        summary = {**summarize(study, metric), "storage": redact(storage)}
        best = best_params_document(study, metric, epochs) if summary["complete"] else None
        write_results(folder, summary, best)
        return summary

    study.optimize(
        lambda trial: objective(trial, data, base, tune, params.seed), n_trials=trials, timeout=timeout, callbacks=[record]
    )
    summary = record(study)
    if summary["complete"] == 0:
        raise DataError(
            f"study {study_name!r}: no trial completed ({summary['pruned']} pruned, {summary['failed']} failed); "
            "nothing to apply"
        )
    log.info(
        "best %s %.4f (trial %d of %d: %d complete, %d pruned, %d failed): %s",
        metric, summary["best_value"], summary["best_trial"], summary["trials"], summary["complete"],
        summary["pruned"], summary["failed"], summary["best_train"],
    )
    return summary


def show(storage: str, study_name: str) -> str:
    """Every trial of the study, one line each, after a summary line and the best trial."""
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage, create=False))
    except KeyError:
        raise DataError(f"no study {study_name!r} in {redact(storage)} (run python -m pipeline.tune search)") from None
    metric = study.user_attrs.get("metric", study.direction.name.lower())
    summary = summarize(study, metric)
    lines = [
        f"study {study_name!r} ({summary['direction']} {metric}): {summary['trials']} trials, {summary['complete']} "
        f"complete, {summary['pruned']} pruned, {summary['failed']} failed, {summary['running']} running"
    ]
    if summary["best_trial"] is not None:
        lines.append(f"best: trial {summary['best_trial']}, {metric} = {summary['best_value']:.4f}, {summary['best_train']}")
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


# ---------------------------------------------------------------- apply: best values into params.yaml

_SECTION_HEADER = re.compile(r"^train:[ \t]*(#.*)?$")
# A key of the train section on one line: two spaces, key, colon, value, optional comment.
_KEY_LINE = re.compile(
    r"^(?P<lead>  (?P<key>[A-Za-z_]\w*):[ \t]*)(?P<value>[^#\r\n]*?)(?P<gap>[ \t]*)(?P<comment>#[^\r\n]*)?(?P<eol>\r?\n?)$"
)


def yaml_value(value: Any) -> str:
    """A value as inline YAML that reads back as the same value (floats keep a dot: 1.0e-05)."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=1 << 20).strip()
    return text.removesuffix("\n...").strip()


# A line continuing a key's block value: deeper indented, or a "- item" at the key's own indent
# (the layout ``dvc exp run -S`` and ``dvc exp apply`` write lists in).
_CONTINUATION = re.compile(r"^(   |  -([ \t]|\r?\n?$))")


def rewrite_train_values(text: str, values: dict[str, Any], source: str = "params.yaml") -> str:
    """``text`` with the values of the given ``train:`` keys replaced in place: each key's line keeps
    its comment (in its column when the value fits) and every other line is left as it is. A value
    written as a block (a list one item a line) is replaced by its one-line form."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _SECTION_HEADER.match(line.rstrip("\r\n"))), None)
    if start is None:
        raise ParamsError(f"{source}: no 'train:' section header on a line of its own; set the tuned values by hand")
    # The section ends at the next line that starts a top-level key (not indented, not a comment).
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"[^\s#]", lines[i])), len(lines))
    found: dict[int, tuple[str, re.Match[str], int]] = {}  # line -> key, its match, the line after its value
    for i in range(start + 1, end):
        match = _KEY_LINE.match(lines[i])
        if match and match["key"] in values:
            after = i + 1
            if not match["value"].strip():
                while after < end and _CONTINUATION.match(lines[after]):
                    after += 1
            found[i] = (match["key"], match, after)
    missing = sorted(set(values) - {key for key, _, _ in found.values()})
    if missing:
        key = missing[0]
        raise ParamsError(f"{source}: no line '  {key}: <value>' in the train section; set train.{key}: {yaml_value(values[key])} by hand")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i not in found:
            out.append(lines[i])
            i += 1
            continue
        key, match, after = found[i]
        line = match["lead"].rstrip(" \t") + " " + yaml_value(values[key])
        if match["comment"]:
            column = len(match["lead"]) + len(match["value"]) + len(match["gap"])
            line += " " * max(1, column - len(line)) + match["comment"]
        out.append(line + (match["eol"] or ("\n" if after > i + 1 else "")))
        i = after
    rewritten = "".join(out)
    # Check the result as YAML: exactly the intended train values changed, nothing else.
    expected = yaml.safe_load(text)
    expected["train"] = {**expected["train"], **{key: _plain(value) for key, value in values.items()}}
    if yaml.safe_load(rewritten) != expected:
        raise ParamsError(f"{source}: rewriting the train values line by line did not give the intended YAML; set them by hand")
    return rewritten


def read_best(path: Path) -> dict[str, Any]:
    """best_params.yaml, checked to hold a mapping of train values."""
    try:
        best = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run python -m pipeline.tune search first)") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(best, dict) or not isinstance(best.get("train"), dict) or not best["train"]:
        raise DataError(f"{path}: expected a 'train' mapping of tuned values")
    return best


def apply(params_file: Path, best_file: Path) -> dict[str, tuple[Any, Any]]:
    """Write the best trial's train values into ``params_file`` (comments kept); returns {key: (old, new)}."""
    best = read_best(best_file)
    text = params_file.read_text()
    rewritten = rewrite_train_values(text, best["train"], str(params_file))
    new = parse_params(yaml.safe_load(rewritten), str(params_file))  # the result must still be valid params
    old = parse_params(yaml.safe_load(text), str(params_file))
    changes = {key: (_plain(getattr(old.train, key)), _plain(getattr(new.train, key))) for key in best["train"]}
    atomic_write(params_file, rewritten)
    log.info(
        "%s: train values of trial %s (%s %s) written: %s", params_file, best.get("trial"), best.get("metric"),
        best.get("value"), ", ".join(f"{key} {a} -> {b}" for key, (a, b) in changes.items()),
    )
    return changes


# ---------------------------------------------------------------- command line


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS_FILE, help="params file (default: params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    find = commands.add_parser("search", help="run trials in the (shared) study; write best_params.yaml and summary.json")
    find.add_argument("--trials", type=_positive(int), help="trials this command runs (default: tune.trials)")
    find.add_argument("--timeout", type=_positive(float), metavar="SECONDS", help="start no trial after this (default: tune.timeout_seconds)")
    find.add_argument("--worker", type=int, default=0, help="this worker's number when several share a study: sampler seed = seed + worker")
    view = commands.add_parser("show", help="every trial of the study")
    for command in (find, view):
        command.add_argument("--storage", help="SQLAlchemy URL (default: $EVERGREEN_TUNE_STORAGE, tune.storage, sqlite in paths.tune)")
        command.add_argument("--study", help="study name (default: tune.study)")
    write = commands.add_parser("apply", help="write the best train values into the params file")
    write.add_argument("--best", type=Path, help="best params file (default: paths.tune/best_params.yaml)")
    return parser


def _run_cli(args: argparse.Namespace) -> str:
    params = load_params(args.params)
    storage = getattr(args, "storage", None) or tune_storage_url(params.tune, params.paths)
    study = getattr(args, "study", None) or params.tune.study
    if args.command == "search":
        trials = args.trials or params.tune.trials
        timeout = args.timeout or params.tune.timeout_seconds
        summary = search(params, storage=storage, study_name=study, trials=trials, timeout=timeout, worker=args.worker)
        return (
            f"study {study!r}: best {summary['metric']} {summary['best_value']:.4f} (trial {summary['best_trial']}); "
            f"{summary['trials']} trials, {summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed\n"
            f"best params: {Path(params.paths.tune) / BEST_PARAMS_FILE} (write them into {args.params}: python -m pipeline.tune apply)\n"
        )
    if args.command == "show":
        return show(storage, study)
    changes = apply(args.params, args.best or Path(params.paths.tune) / BEST_PARAMS_FILE)
    return "".join(f"train.{key}: {old} -> {new}\n" for key, (old, new) in changes.items())


def main(argv: list[str] | None = None) -> None:
    """CLI entry: results on stdout, progress on stderr; a user error is one line and exit code 1."""
    setup_logging()
    if optuna is None:
        log.error("optuna is not installed: pip install -e '.[tune]'")
        sys.exit(1)
    optuna.logging.disable_default_handler()  # Optuna's per-trial lines through our handler and format
    optuna.logging.enable_propagation()
    args = _parser().parse_args(argv)
    sys.stdout.write(run_or_exit(lambda: _run_cli(args)))


if __name__ == "__main__":
    main()
