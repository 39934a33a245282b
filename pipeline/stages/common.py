"""What every stage module shares: the command-line entry point."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.cli import run_or_exit, setup_logging
from pipeline.params import DEFAULT_PARAMS_FILE, Params, load_params


def stage_main(run: Callable[[Params], Any], params_file: str | Path = DEFAULT_PARAMS_FILE) -> None:
    """Run a stage from the command line: load params once, report user errors as one line, exit 1."""
    setup_logging()
    run_or_exit(lambda: run(load_params(params_file)))
