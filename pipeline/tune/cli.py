"""The command line: ``python -m pipeline.tune search | show | apply``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.core.cli import run_or_exit, setup_logging
from pipeline.params import DEFAULT_PARAMS_FILE, load_params, tune_storage_url
from pipeline.tune.rewrite import apply
from pipeline.tune.search import search, show
from pipeline.tune.study import BEST_PARAMS_FILE, optuna

log = logging.getLogger(__name__)


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _parser(prog: str = "python -m pipeline.tune") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Hyperparameter search over the train params with Optuna.")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS_FILE, help="params file (default: params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    find = commands.add_parser("search", help="run trials in the (shared) study; write best_params.yaml and summary.json")
    find.add_argument("--trials", type=_positive(int), help="trials this command runs (default: tune.trials)")
    find.add_argument(
        "--timeout", type=_positive(float), metavar="SECONDS", help="start no trial after this (default: tune.timeout_seconds)"
    )
    find.add_argument(
        "--worker", type=int, default=0, help="this worker's number when several share a study: sampler seed = seed + worker"
    )
    view = commands.add_parser("show", help="every trial of the study")
    for command in (find, view):
        command.add_argument(
            "--storage", help="SQLAlchemy URL (default: $EVERGREEN_TUNE_STORAGE, tune.storage, sqlite in paths.tune)"
        )
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
        values = ", ".join(f"{name} {value:.4f}" for name, value in (summary["best_metrics"] or {}).items())
        return (
            f"study {study!r}: best {summary['metric']} {summary['best_value']:.4f} (trial {summary['best_trial']}; {values}); "
            f"{summary['trials']} trials, {summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed\n"
            f"best params: {Path(params.paths.tune) / BEST_PARAMS_FILE} (write them into {args.params}: python -m pipeline.tune apply)\n"
        )
    if args.command == "show":
        return show(storage, study)
    changes = apply(args.params, args.best or Path(params.paths.tune) / BEST_PARAMS_FILE)
    return "".join(f"train.{key}: {old} -> {new}\n" for key, (old, new) in changes.items())


def main(argv: list[str] | None = None, prog: str = "python -m pipeline.tune") -> None:
    """CLI entry: results on stdout, progress on stderr; a user error is one line and exit code 1."""
    setup_logging()
    if optuna is None:
        log.error("optuna is not installed: pip install -e '.[tune]'")
        sys.exit(1)
    optuna.logging.disable_default_handler()  # Optuna's per-trial lines through our handler and format
    optuna.logging.enable_propagation()
    args = _parser(prog).parse_args(argv)
    sys.stdout.write(run_or_exit(lambda: _run_cli(args)))
