"""Tabular split: assign every clean row to exactly one of train / val / test.

Methods (``split.method``): ``stratified`` (seeded random, class balance kept in each split; for a
regression target, the balance of its quantile bins),
``time`` (oldest periods train, the most recent ones validate and test; a period is never cut in
two), ``group`` (all rows of a group land in the same split).

Inputs:  ``paths.clean``
Outputs: ``paths.split``/{train,val,test}.parquet and schema.json, ``paths.split_report``
Params:  ``split``, ``seed``
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.io import SCHEMA_FILE, SPLITS, split_file, write_json, write_table
from pipeline.kinds.tabular.schema import Schema, read_dataset
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


def split(frame: pd.DataFrame, schema: Schema, cfg: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    """The three splits; every row lands in exactly one, and none may be empty."""
    assignment = assign(frame, schema, cfg, seed)
    parts = {name: frame.loc[assignment == name].reset_index(drop=True) for name in SPLITS}
    empty = [name for name, part in parts.items() if part.empty]
    if empty:
        raise DataError(f"split {empty} would be empty with {len(frame)} rows; check the split fractions")
    return parts


def summarise(parts: dict[str, pd.DataFrame], schema: Schema, cfg: SplitParams) -> dict[str, Any]:
    total = sum(len(p) for p in parts.values())
    report: dict[str, Any] = {"method": cfg.method, "rows": total, "splits": {}}
    for name, part in parts.items():
        entry: dict[str, Any] = {"rows": len(part), "share": round(len(part) / total, 6)}
        if schema.regression:
            entry["target_summary"] = {k: float(v) for k, v in part[schema.target].describe().drop("count").items()}
        else:
            entry["class_balance"] = {str(k): int(v) for k, v in part[schema.target].value_counts().sort_index().items()}
        if schema.time_column is not None:
            entry["time_range"] = [str(part[schema.time_column].min()), str(part[schema.time_column].max())]
        report["splits"][name] = entry
    return report


def run(cfg: SplitParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Split the clean table and write the three parts, the schema and the report."""
    frame, schema = read_dataset(paths.clean)
    parts = split(frame, schema, cfg, seed)
    for name, part in parts.items():
        write_table(split_file(paths.split, name), part)
    write_json(f"{paths.split}/{SCHEMA_FILE}", schema.to_dict())
    report = summarise(parts, schema, cfg)
    write_json(paths.split_report, report)
    log.info("split (%s): %s", cfg.method, {k: v["rows"] for k, v in report["splits"].items()})
    return report
