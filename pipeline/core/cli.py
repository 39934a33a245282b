"""Command-line plumbing: logging set-up and turning a user error into one logged line and exit code 1."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from pipeline.core.errors import EvergreenError

log = logging.getLogger(__name__)


def setup_logging() -> None:
    level = os.environ.get("EVERGREEN_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_or_exit(command: Callable[[], Any]) -> Any:
    """Run a command-line action: a user error (EvergreenError) becomes one logged line and exit code 1."""
    try:
        return command()
    except EvergreenError as exc:
        log.error("%s", exc)
        sys.exit(1)
