"""Stage evaluate: score the trained model on the test split beside trained and naive baselines.

Writes the metrics DVC compares (``dvc metrics diff``), per-class scores and the plot files for
``dvc plots`` (classifiers: confusion, ROC, precision-recall, calibration; forecasters: forecast and
per-horizon errors).

Inputs:  ``paths.split``, ``paths.preprocessor``, ``paths.model``
Outputs: ``paths.eval_metrics``, ``paths.eval_per_class``, ``paths.eval_plots``
Params:  ``evaluate``, ``seed``
Command: ``python -m pipeline.stages.evaluate``
"""

from __future__ import annotations

from pathlib import Path

from pipeline import kinds
from pipeline.kinds.base import Report
from pipeline.params import EvaluateParams, Paths
from pipeline.stages.common import stage_main

# Every plot a kind may write (pipeline.shared.reports.write_plot: ``<paths.eval_plots>/<name>/<name>.csv``).
# Each folder is an output of this stage in dvc.yaml, and a top-level plot there; a run leaves the folders of
# another task's plots empty, so DVC finds every output and `dvc plots show` warns about none.
PLOTS = (
    "confusion",
    "roc",
    "precision_recall",
    "calibration",
    "forecast",
    "horizon_errors",
    "predicted_vs_actual",
    "residuals",
)


def run(cfg: EvaluateParams, paths: Paths, seed: int) -> Report:
    report = kinds.get(kinds.data_kind(paths.split)).stages().evaluate(cfg, paths, seed)
    plots = Path(paths.eval_plots)
    undeclared = sorted({p.name for p in plots.iterdir() if p.is_dir()} - set(PLOTS)) if plots.is_dir() else []
    if undeclared:  # dvc.yaml would not track it, and dvc plots would not show it
        raise RuntimeError(f"{plots}: evaluate wrote {undeclared}, not in pipeline.stages.evaluate.PLOTS and dvc.yaml")
    for name in PLOTS:
        (plots / name).mkdir(parents=True, exist_ok=True)
    return report


def main() -> None:
    stage_main(lambda p: run(p.evaluate, p.paths, p.seed))


if __name__ == "__main__":
    main()
