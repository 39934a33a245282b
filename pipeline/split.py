"""Stage split: assign every clean row to exactly one of train / val / test.

Methods (``split.method``): ``stratified`` (seeded random, class balance kept in each split),
``time`` (oldest periods train, the most recent ones validate and test; a period is never cut in
two), ``group`` (all rows of a group land in the same split).

Inputs:  ``paths.clean``
Outputs: ``paths.split``/{train,val,test}.parquet and schema.json, ``paths.split_report``
Params:  ``split``, ``seed``
Command: ``python -m pipeline.split``
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common import SPLITS, SCHEMA_FILE, Schema, read_dataset, split_file, stage_main, write_json, write_table
from pipeline.config import Paths, SplitParams
from pipeline.kinds import TABULAR, data_kind, kind_module
from pipeline.errors import DataError

log = logging.getLogger(__name__)


def stratified_assign(labels: pd.Series, cfg: SplitParams, seed: int) -> np.ndarray:
    """Seeded random split within each class so every split keeps the class balance."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=object)
    codes = labels.to_numpy()
    for cls in sorted(pd.unique(codes)):
        rows = rng.permutation(np.flatnonzero(codes == cls))
        n_train = int(round(len(rows) * cfg.train))
        n_val = int(round(len(rows) * (cfg.train + cfg.val))) - n_train
        assignment[rows[:n_train]] = "train"
        assignment[rows[n_train : n_train + n_val]] = "val"
        assignment[rows[n_train + n_val :]] = "test"
    return assignment


def _assign_units(unit_of_row: np.ndarray, unit_order: np.ndarray, cfg: SplitParams) -> np.ndarray:
    """Give whole units (periods or groups), in ``unit_order``, to test, then val, then train.

    The first units in the order fill test up to its share of rows, the next fill val; the rest
    train. Units are never cut, so shares are approximate.
    """
    sizes = pd.Series(unit_of_row).value_counts()
    total = len(unit_of_row)
    label_of_unit: dict[Any, str] = {}
    filled = {"test": 0, "val": 0}
    for unit in unit_order:
        if filled["test"] < cfg.test * total:
            target = "test"
        elif filled["val"] < cfg.val * total:
            target = "val"
        else:
            target = "train"
        label_of_unit[unit] = target
        if target != "train":
            filled[target] += int(sizes[unit])
    return np.array([label_of_unit[u] for u in unit_of_row], dtype=object)


def time_assign(times: pd.Series, cfg: SplitParams) -> np.ndarray:
    """Most recent periods to test, the ones before to val, all older ones to train."""
    periods = np.sort(pd.unique(times.to_numpy()))[::-1]
    if len(periods) < 3:
        raise DataError(f"time split needs at least 3 distinct time values, found {len(periods)}")
    return _assign_units(times.to_numpy(), periods, cfg)


def group_assign(groups: pd.Series, cfg: SplitParams, seed: int) -> np.ndarray:
    """Seeded random order of groups; every row of a group goes to the same split."""
    if groups.isna().any():
        raise DataError(f"split.group_column {groups.name!r} has {int(groups.isna().sum())} missing values")
    unique = pd.unique(groups.to_numpy())
    if len(unique) < 3:
        raise DataError(f"group split needs at least 3 groups in {groups.name!r}, found {len(unique)}")
    order = np.random.default_rng(seed).permutation(np.sort(unique.astype(str)))
    return _assign_units(groups.astype(str).to_numpy(), order, cfg)


def assign(frame: pd.DataFrame, schema: Schema, cfg: SplitParams, seed: int) -> np.ndarray:
    """One split name per row, by ``split.method``."""
    if cfg.method == "stratified":
        return stratified_assign(frame[schema.target], cfg, seed)
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
        entry: dict[str, Any] = {
            "rows": len(part),
            "share": round(len(part) / total, 6),
            "class_balance": {str(k): int(v) for k, v in part[schema.target].value_counts().sort_index().items()},
        }
        if schema.time_column is not None:
            entry["time_range"] = [str(part[schema.time_column].min()), str(part[schema.time_column].max())]
        report["splits"][name] = entry
    return report


def run(cfg: SplitParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Split the clean table and write the three parts, the schema and the report."""
    if (kind := data_kind(paths.clean)) != TABULAR:
        return kind_module(kind).split(cfg, paths, seed)
    frame, schema = read_dataset(paths.clean)
    parts = split(frame, schema, cfg, seed)
    for name, part in parts.items():
        write_table(split_file(paths.split, name), part)
    write_json(f"{paths.split}/{SCHEMA_FILE}", schema.to_dict())
    report = summarise(parts, schema, cfg)
    write_json(paths.split_report, report)
    log.info("split (%s): %s", cfg.method, {k: v["rows"] for k, v in report["splits"].items()})
    return report


def main() -> None:
    stage_main(lambda p: run(p.split, p.paths, p.seed))


if __name__ == "__main__":
    main()
