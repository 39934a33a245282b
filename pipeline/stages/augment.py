"""Stage augment: add synthetic training examples; validation and test are never touched.

Inputs:  ``paths.split``
Outputs: ``paths.augmented``, ``paths.augment_report``
Params:  ``augment``, ``seed``
Command: ``python -m pipeline.stages.augment``
"""

from __future__ import annotations

from pipeline import kinds
from pipeline.kinds.base import Report
from pipeline.params import AugmentParams, Paths
from pipeline.stages.common import stage_main


def run(cfg: AugmentParams, paths: Paths, seed: int) -> Report:
    return kinds.get(kinds.data_kind(paths.split)).stages().augment(cfg, paths, seed)


def main() -> None:
    stage_main(lambda p: run(p.augment, p.paths, p.seed))


if __name__ == "__main__":
    main()
