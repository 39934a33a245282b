"""Stage clean: row-level cleaning that learns nothing from the data (labels, types, impossible values, gaps).

What is learned from data (imputation values, scaling, vocabularies) is fitted on the training split
inside train, so no statistic comes from validation or test rows.

Inputs:  ``paths.ingested``
Outputs: ``paths.clean``, ``paths.clean_report``
Params:  ``clean``
Command: ``python -m pipeline.stages.clean``
"""

from __future__ import annotations

from pipeline import kinds
from pipeline.kinds.base import Report
from pipeline.params import CleanParams, Paths
from pipeline.stages.common import stage_main


def run(cfg: CleanParams, paths: Paths) -> Report:
    return kinds.get(kinds.data_kind(paths.ingested)).stages().clean(cfg, paths)


def main() -> None:
    stage_main(lambda p: run(p.clean, p.paths))


if __name__ == "__main__":
    main()
