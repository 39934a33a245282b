"""Stage ingest: read the raw source (and every landed batch), enforce a schema, write the data and a profile.

The kind (``ingest.kind``) decides what the source is: a table (CSV/Parquet, or the GSS default),
images (a class-per-folder tree, an .npz, or scikit-learn's digits), or a long table of time series.
The kind is written into ``schema.json`` beside the data, so every later stage reads it from its input.

A DVC experiment run in a temporary copy of the workspace (``dvc exp run --queue`` or ``--temp``) sees only
what git and DVC track there: the git-ignored files of ``paths.landing`` and ``paths.raw`` stay behind. Such a
run would train on other data than the workspace's runs and sit beside them in ``dvc exp show``, so ingest
refuses it in one line naming the folder and a file it cannot see (``experiment_sees_the_data``).

Inputs:  ``ingest.source``, ``paths.raw``, ``paths.landing``
Outputs: ``paths.ingested`` (data and schema.json), ``paths.ingest_report``
Params:  ``ingest``, ``seed``
Command: ``python -m pipeline.stages.ingest``
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pipeline import kinds
from pipeline.core.errors import DataError
from pipeline.core.io import file_sha256
from pipeline.kinds.base import Report
from pipeline.params import IngestParams, Params, Paths
from pipeline.stages.common import stage_main

# What DVC sets in the environment of an experiment's stage commands: the experiment's name, and DVC_ROOT, the
# workspace the experiment was queued from (in a temporary copy under .dvc/tmp/exps that is not the copy itself).
EXPERIMENT_NAME_ENV = "DVC_EXP_NAME"
EXPERIMENT_ORIGIN_ENV = "DVC_ROOT"


def experiment_origin(env: Mapping[str, str], here: Path) -> Path | None:
    """The workspace a DVC experiment was started from, when this stage runs in the experiment's temporary
    copy ``here``; None in the workspace itself (``dvc repro``, ``dvc exp run`` without --queue/--temp)."""
    root = env.get(EXPERIMENT_ORIGIN_ENV)
    if not root or EXPERIMENT_NAME_ENV not in env:
        return None
    origin = Path(root).resolve()
    return None if origin == here.resolve() else origin


def unseen_files(origin: Path, here: Path) -> list[str]:
    """The files under ``origin`` (relative paths, sorted) that ``here`` lacks or holds with other content."""
    if not origin.is_dir():
        return []
    unseen = []
    for path in sorted(p for p in origin.rglob("*") if p.is_file()):
        relative = path.relative_to(origin)
        twin = here / relative
        same = twin.is_file() and twin.stat().st_size == path.stat().st_size and file_sha256(twin) == file_sha256(path)
        if not same:
            unseen.append(relative.as_posix())
    return unseen


def experiment_sees_the_data(paths: Paths, env: Mapping[str, str], here: Path) -> None:
    """Refuse an experiment run in a temporary copy that lacks files the workspace's ingest would read.

    DataError naming the folder, how many files and one of them, and the ways out. (``-C`` copies a file: DVC 3.67
    cannot copy a whole folder that exists in the copy, as ``paths.landing`` does with its tracked .gitignore.)"""
    origin = experiment_origin(env, here)
    if origin is None:
        return
    for folder in (paths.landing, paths.raw):
        unseen = unseen_files(origin / folder, here / folder)
        if unseen:
            raise DataError(
                f"{folder}: this DVC experiment runs in a temporary copy of the workspace that lacks {len(unseen)} "
                f"git-ignored file(s) of {origin / folder} (e.g. {unseen[0]}), so it would train on other data than "
                f"the workspace; run it in the workspace (dvc exp run, without --queue or --temp) or copy each file in "
                f"(dvc exp run --queue -C {Path(folder) / unseen[0]} ...)"
            )


def run(cfg: IngestParams, paths: Paths, seed: int) -> Report:
    return kinds.get(cfg.kind).stages().ingest(cfg, paths, seed)


def main() -> None:
    def ingest(params: Params) -> Report:
        experiment_sees_the_data(params.paths, os.environ, Path.cwd())
        return run(params.ingest, params.paths, params.seed)

    stage_main(ingest)


if __name__ == "__main__":
    main()
