"""The git revision a model or a run came from (recorded in the registry's meta.json and history)."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_TIMEOUT_S = 10  # a hung git (a lock, a network filesystem) must not hang a registration


def git_revision(root: str | Path | None = None) -> str | None:
    """HEAD of the repository at ``root`` (default: the working directory), or None outside git or without git."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return (result.stdout.strip() or None) if result.returncode == 0 else None
