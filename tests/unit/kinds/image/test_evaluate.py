"""Image evaluate (pipeline/kinds/image/evaluate.py): the tabular kind's reports with a pixel baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.kinds.image import evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_evaluate_writes_the_tabular_reports_with_a_pixel_baseline(trained):
    params, _, _, _ = trained
    metrics = evaluate.run(params.evaluate, params.paths, params.seed)
    assert {"model", "baseline_majority", "baseline_logreg", "model_minus_logreg"} <= set(metrics)
    assert metrics["baseline_majority"]["accuracy"] < 0.2 < metrics["baseline_logreg"]["accuracy"]
    plots = Path(params.paths.eval_plots)
    assert {p.name for p in plots.glob("*/*.csv")} == {"confusion.csv", "roc.csv", "precision_recall.csv", "calibration.csv"}
    assert set(json.loads(Path(params.paths.eval_per_class).read_text())) == {str(d) for d in range(10)}
