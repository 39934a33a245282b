"""The sequence kind's landed batches (no torch): long tables of new steps, and corrections of old ones.

A batch is a CSV or Parquet long table with the source's columns (series, time, values). It may hold
steps after the source's last one, or steps already known: for the same (series, time) the row read last
wins (the source first, then the batches in name order, rows in file order), in ``ingest_frame``, so a
correction is landed as a plain row, never by editing a file. The check here is the one ingest applies to
every landed batch; moving a bad one aside is the lifecycle's (``pipeline.lifecycle.landing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import LandingScreen, landed_tables, table_landing
from pipeline.kinds.sequence.ingest import input_features, read_raw_source, require_roles, series_column
from pipeline.params import SequenceIngest
from pipeline.shared.tables import looks_numeric, sortable_time


@dataclass(frozen=True)
class SourceColumns:
    """What every landed batch must have: the source's columns, and those that must hold numbers."""

    columns: tuple[str, ...]
    numeric: tuple[str, ...]


def source_columns(cfg: SequenceIngest) -> SourceColumns:
    """The source's columns and its window inputs (ingest's rule: those named, or every numeric one)."""
    raw, _, name = read_raw_source(cfg)
    require_roles(raw, cfg)
    frame, series = series_column(raw.drop(columns=list(cfg.drop_columns)), cfg, name)
    return SourceColumns(tuple(map(str, raw.columns)), tuple(input_features(frame, cfg, series)))


def batch_problems(frame: pd.DataFrame, source: SourceColumns, cfg: SequenceIngest) -> list[str]:
    """Why a landed long table cannot be stacked under the source (empty: it can)."""
    problems = []
    missing = [c for c in source.columns if c not in frame.columns]
    if missing:
        problems.append(f"missing column(s) {missing}")
    extra = sorted(str(c) for c in frame.columns if str(c) not in source.columns)
    if extra:
        problems.append(f"column(s) {extra} are not in ingest.source")
    present = [c for c in source.numeric if c in frame.columns]
    empty = [c for c in present if frame[c].isna().all()]
    if empty:
        problems.append(f"column(s) {empty} have no values at all")
    problems += [
        f"column {c!r} should be numeric but is mostly text" for c in present if c not in empty and not looks_numeric(frame[c])
    ]
    if cfg.time_column in frame.columns:
        try:
            sortable_time(frame[cfg.time_column], cfg.time_column, cfg.time_format)
        except DataError as exc:
            problems.append(str(exc))
    if cfg.series_column is not None and cfg.series_column in frame.columns and frame[cfg.series_column].isna().any():
        problems.append(
            f"ingest.series_column {cfg.series_column!r}: {int(frame[cfg.series_column].isna().sum())} rows have no series id"
        )
    return problems


def landed_batches(landing: Path, source: SourceColumns, cfg: SequenceIngest) -> list[tuple[Path, pd.DataFrame]]:
    """Every landed table, checked as the landing screen checks it (``landed_tables``)."""
    return landed_tables(landing, lambda frame: batch_problems(frame, source, cfg))


def landing_screen(cfg: SequenceIngest) -> LandingScreen:
    """The sequence kind's landing rule for ``cfg`` (the source is read once, here)."""
    source = source_columns(cfg)
    return table_landing(lambda frame: batch_problems(frame, source, cfg))
