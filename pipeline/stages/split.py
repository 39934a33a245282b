"""Stage split: assign every clean record to exactly one of train / val / test.

Inputs:  ``paths.clean``
Outputs: ``paths.split`` (train/val/test and schema.json), ``paths.split_report``
Params:  ``split``, ``seed``
Command: ``python -m pipeline.stages.split``
"""

from __future__ import annotations

from pipeline import kinds
from pipeline.kinds.base import Report
from pipeline.params import Paths, SplitParams
from pipeline.stages.common import stage_main


def run(cfg: SplitParams, paths: Paths, seed: int) -> Report:
    return kinds.get(kinds.data_kind(paths.clean)).stages().split(cfg, paths, seed)


def main() -> None:
    stage_main(lambda p: run(p.split, p.paths, p.seed))


if __name__ == "__main__":
    main()
