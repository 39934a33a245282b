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

from pipeline import kinds
from pipeline.kinds.base import Report
from pipeline.params import EvaluateParams, Paths
from pipeline.stages.common import stage_main


def run(cfg: EvaluateParams, paths: Paths, seed: int) -> Report:
    return kinds.get(kinds.data_kind(paths.split)).stages().evaluate(cfg, paths, seed)


def main() -> None:
    stage_main(lambda p: run(p.evaluate, p.paths, p.seed))


if __name__ == "__main__":
    main()
