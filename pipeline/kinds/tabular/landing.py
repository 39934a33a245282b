"""The tabular kind's check of a landed batch: readable, the source's columns, numbers where the source has them (no torch).

Moving a bad batch to quarantine, and when a screening runs, is the lifecycle's (``pipeline.lifecycle.landing``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.kinds.tabular.ingest import check_batch_columns, read_source
from pipeline.params import TabularIngest
from pipeline.shared.tables import looks_numeric, read_table_file, time_filter


def batch_problems(path: Path, expected_columns: list[str], numeric: list[str], cfg: TabularIngest) -> list[str]:
    """Why a landed file cannot be used (empty list: it can)."""
    try:
        frame = read_table_file(path)
    except DataError as exc:
        return [str(exc).removeprefix(f"{path}: ")]
    problems = check_batch_columns(path, frame, expected_columns, cfg)
    for name in numeric:
        if name in frame.columns and frame[name].notna().any() and not looks_numeric(frame[name]):
            problems.append(f"column {name!r} should be numeric but is mostly text")
    optional = {cfg.target, *cfg.drop_columns}
    empty = [c for c in expected_columns if c in frame.columns and c not in optional and frame[c].isna().all()]
    if empty:
        problems.append(f"column(s) {empty} have no values at all")
    if cfg.time_column is not None and cfg.time_column in frame.columns:
        try:
            time_filter(frame[[cfg.time_column]], cfg.time_column)
        except DataError as exc:
            problems.append(str(exc))
    return problems


def expected_source_columns(cfg: TabularIngest) -> tuple[list[str], list[str]]:
    """Columns a batch must have (those of ingest.source) and those that must be numeric."""
    source = read_source(cfg.source)
    numeric = [
        c
        for c in source.columns
        if c not in cfg.categorical and (c in cfg.numeric or looks_numeric(source[c])) and c != cfg.target
    ]
    return list(map(str, source.columns)), numeric
