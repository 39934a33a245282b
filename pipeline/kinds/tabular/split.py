"""Tabular split: assign every clean row to exactly one of train / val / test.

Methods (``split.method``): ``stratified`` (seeded random, class balance kept in each split; for a
regression target, the balance of its quantile bins),
``time`` (oldest periods train, the most recent ones validate and test; a period is never cut in
two), ``group`` (all rows of a group land in the same split).

Inputs:  ``paths.clean``
Outputs: ``paths.split``/{train,val,test}.parquet and schema.json, ``paths.split_report``
Params:  ``split``, ``seed``

Streams: the assignment is decided from the one column it needs (labels as integer codes), then the rows
are routed chunk by chunk into the three files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.errors import DataError
from pipeline.core.io import DATA_FILE, SCHEMA_FILE, SPLITS, iter_table, read_column, split_file, table_rows, write_json
from pipeline.core.stream import CHUNK_ROWS, FrameSink, ParquetSink, Sink
from pipeline.kinds.tabular.schema import Schema, read_schema
from pipeline.params import Paths, SplitParams
from pipeline.shared.splits import group_assign, stratified_assign, time_assign

log = logging.getLogger(__name__)


# A regression target is stratified on this many equal-count bins of its values: every split then spans
# the same range (the rare expensive houses are not all in train). A design constant, not a knob: it
# shapes no result beyond which random rows land where.
TARGET_BINS = 10


def target_bins(values: pd.Series, bins: int = TARGET_BINS) -> pd.Series:
    """Quantile-bin index per row of a numeric target (ties may merge bins; a constant target is one bin)."""
    return pd.Series(pd.qcut(values.rank(method="first"), q=min(bins, len(values)), labels=False), index=values.index)


def assign(frame: pd.DataFrame, schema: Schema, cfg: SplitParams, seed: int) -> np.ndarray:
    """One split name per row, by ``split.method``."""
    if cfg.method == "stratified":
        strata = target_bins(frame[schema.target]) if schema.regression else frame[schema.target]
        return stratified_assign(strata, cfg, seed)
    if cfg.method == "time":
        if schema.time_column is None:
            raise DataError("split.method 'time' needs ingest.time_column")
        return time_assign(frame[schema.time_column], cfg)
    if cfg.group_column not in frame.columns:
        raise DataError(f"split.group_column {cfg.group_column!r} is not a column; columns are {list(frame.columns)}")
    return group_assign(frame[cfg.group_column], cfg, seed)


def check_filled(assignment: np.ndarray) -> None:
    """None of the three splits may be empty."""
    empty = [name for name in SPLITS if not (assignment == name).any()]
    if empty:
        raise DataError(f"split {empty} would be empty with {len(assignment)} rows; check the split fractions")


class SplitSummary:
    """The split report, accumulated from the rows written (chunk by chunk): rows and share per split, its
    class balance (or target summary) and time range."""

    def __init__(self, schema: Schema, cfg: SplitParams) -> None:
        self.schema, self.cfg = schema, cfg
        self.rows = dict.fromkeys(SPLITS, 0)
        self.labels: dict[str, dict[str, int]] = {name: {} for name in SPLITS}
        self.values: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
        self.times: dict[str, list[Any]] = {name: [] for name in SPLITS}

    def update(self, name: str, part: pd.DataFrame) -> None:
        schema = self.schema
        self.rows[name] += len(part)
        if schema.regression:
            self.values[name].append(part[schema.target].to_numpy(dtype="float64"))
        else:
            for label, n in part[schema.target].value_counts().items():
                self.labels[name][str(label)] = self.labels[name].get(str(label), 0) + int(n)
        if schema.time_column is not None and len(part):
            self.times[name] += [part[schema.time_column].min(), part[schema.time_column].max()]

    def report(self) -> dict[str, Any]:
        total = sum(self.rows.values())
        report: dict[str, Any] = {"method": self.cfg.method, "rows": total, "splits": {}}
        for name in SPLITS:
            entry: dict[str, Any] = {"rows": self.rows[name], "share": round(self.rows[name] / total, 6)}
            if self.schema.regression:
                values = pd.Series(np.concatenate(self.values[name]))
                entry["target_summary"] = {k: float(v) for k, v in values.describe().drop("count").items()}
            else:
                entry["class_balance"] = dict(sorted(self.labels[name].items()))
            if self.schema.time_column is not None:
                entry["time_range"] = [str(min(self.times[name])), str(max(self.times[name]))]
            report["splits"][name] = entry
        return report


def write_parts(chunks: Iterable[pd.DataFrame], assignment: np.ndarray, sinks: dict[str, Sink], summary: SplitSummary) -> None:
    """Route every row of every chunk to the sink of its split (``assignment``: one split name per row)."""
    offset, first = 0, True
    for chunk in chunks:
        names = assignment[offset : offset + len(chunk)]
        offset += len(chunk)
        for name in SPLITS:
            part = chunk.loc[names == name].reset_index(drop=True)
            if len(part) or first:  # an empty first chunk still fixes the columns and types
                sinks[name].write(part)
            summary.update(name, part)
        first = False


def split(frame: pd.DataFrame, schema: Schema, cfg: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    """The three splits of a frame in memory; every row lands in exactly one, and none may be empty."""
    assignment = assign(frame, schema, cfg, seed)
    check_filled(assignment)
    sinks = {name: FrameSink() for name in SPLITS}
    write_parts([frame], assignment, dict(sinks), SplitSummary(schema, cfg))
    return {name: sink.frame() for name, sink in sinks.items()}


def summarise(parts: dict[str, pd.DataFrame], schema: Schema, cfg: SplitParams) -> dict[str, Any]:
    summary = SplitSummary(schema, cfg)
    for name, part in parts.items():
        summary.update(name, part)
    return summary.report()


def decision_columns(path: Path, schema: Schema, cfg: SplitParams) -> pd.DataFrame:
    """Only what the assignment reads, not the rows: the label as an integer code in sorted label order
    (so classes are visited, and the seeded generator drawn, exactly as with the labels), a regression
    target's values, the time column, the group column."""
    rows = table_rows(path)  # a missing file is one line naming it
    file = pq.ParquetFile(path)
    names = set(file.schema_arrow.names)
    columns: dict[str, Any] = {}
    if cfg.method == "stratified":
        column = file.read(columns=[schema.target]).column(0)
        if schema.regression:
            columns[schema.target] = column.to_numpy()
        else:
            encoded = pc.dictionary_encode(column).combine_chunks()
            labels = np.array(encoded.dictionary.to_pylist(), dtype=object)
            rank = np.empty(len(labels), dtype=np.int32)
            rank[np.argsort(labels, kind="stable")] = np.arange(len(labels), dtype=np.int32)
            columns[schema.target] = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    elif cfg.method == "time" and schema.time_column is not None:
        columns[schema.time_column] = read_column(path, schema.time_column)
    elif cfg.method == "group":
        if cfg.group_column is None or cfg.group_column not in names:
            raise DataError(f"split.group_column {cfg.group_column!r} is not a column; columns are {file.schema_arrow.names}")
        columns[cfg.group_column] = read_column(path, cfg.group_column)
    return pd.DataFrame(columns, index=pd.RangeIndex(rows)) if columns else pd.DataFrame(index=pd.RangeIndex(rows))


def run(cfg: SplitParams, paths: Paths, seed: int, rows: int = CHUNK_ROWS) -> dict[str, Any]:
    """Split the clean table (deciding from its label, time or group column alone, then routing its rows
    chunk by chunk) and write the three parts, the schema and the report."""
    source = Path(paths.clean) / DATA_FILE
    schema = read_schema(paths.clean)
    assignment = assign(decision_columns(source, schema, cfg), schema, cfg, seed)
    check_filled(assignment)
    summary = SplitSummary(schema, cfg)
    with ExitStack() as stack:
        sinks: dict[str, Sink] = {name: stack.enter_context(ParquetSink(split_file(paths.split, name))) for name in SPLITS}
        write_parts(iter_table(source, rows), assignment, sinks, summary)
    write_json(f"{paths.split}/{SCHEMA_FILE}", schema.to_dict())
    report = summary.report()
    write_json(paths.split_report, report)
    log.info("split (%s): %s", cfg.method, {k: v["rows"] for k, v in report["splits"].items()})
    return report
