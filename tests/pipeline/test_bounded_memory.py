"""Bounded work on large tables: evaluate's HGB baseline fits on a seeded sample of at most
``evaluate.baseline_max_rows`` training rows and export's parity and int8 checks run on at most
``export.parity_max_rows`` test rows, each report saying so; below the bounds nothing changes.

A real ``dvc repro`` on a slice, with the bounds set below the slice's split sizes, beside the same slice
with the default bounds: the model and its test metrics are identical, only the baseline and the parity
rows differ.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import copy_repo, tool_env
from tests.pipeline.test_dvc_repro import SLICE

pytestmark = pytest.mark.slow


def repro(root):
    result = subprocess.run(["dvc", "repro"], cwd=root, env=tool_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = json.loads((root / "reports" / "evaluate" / "metrics.json").read_text())
    parity = json.loads((root / "reports" / "export" / "parity.json").read_text())
    return metrics, parity


def test_the_baseline_and_parity_work_on_bounded_samples_and_say_so(tmp_path):
    bounded = {**SLICE, "evaluate": {**SLICE["evaluate"], "baseline_max_rows": 1000}, "export": {"parity_max_rows": 150}}
    full_metrics, full_parity = repro(copy_repo(tmp_path / "full", **SLICE))
    metrics, parity = repro(copy_repo(tmp_path / "bounded", **bounded))

    assert "train_rows" not in full_metrics["baseline_hgb"] and "test_rows" not in full_parity  # nothing sampled
    assert metrics["baseline_hgb"]["train_rows"] == 1000
    assert parity["rows"] == 150 and parity["test_rows"] == full_parity["rows"] == metrics["test_rows"]
    assert parity["label_mismatches"] == 0
    assert metrics["model"] == full_metrics["model"]  # the model and its test scores do not depend on the bounds
    assert metrics["baseline_hgb"]["accuracy"] != full_metrics["baseline_hgb"]["accuracy"]
