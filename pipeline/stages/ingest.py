"""Stage ingest: read the raw source (and every landed batch), enforce a schema, write the data and a profile.

The kind (``ingest.kind``) decides what the source is: a table (CSV/Parquet, or the GSS default),
images (a class-per-folder tree, an .npz, or scikit-learn's digits), or a long table of time series.
The kind is written into ``schema.json`` beside the data, so every later stage reads it from its input.

Inputs:  ``ingest.source``, ``paths.raw``, ``paths.landing``
Outputs: ``paths.ingested`` (data and schema.json), ``paths.ingest_report``
Params:  ``ingest``, ``seed``
Command: ``python -m pipeline.stages.ingest``
"""

from __future__ import annotations

from pipeline import kinds
from pipeline.kinds.base import Report
from pipeline.params import IngestParams, Paths
from pipeline.stages.common import stage_main


def run(cfg: IngestParams, paths: Paths, seed: int) -> Report:
    return kinds.get(cfg.kind).stages().ingest(cfg, paths, seed)


def main() -> None:
    stage_main(lambda p: run(p.ingest, p.paths, p.seed))


if __name__ == "__main__":
    main()
