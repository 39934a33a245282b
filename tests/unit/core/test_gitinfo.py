"""pipeline.core.gitinfo: the revision recorded with a registered model."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.core.gitinfo import git_revision

REPO = Path(__file__).resolve().parents[3]


def test_git_revision_is_head_inside_a_repository_and_none_outside(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}", git_revision(REPO) or "")
    assert git_revision(tmp_path) is None


def test_git_revision_is_none_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert git_revision(REPO) is None
