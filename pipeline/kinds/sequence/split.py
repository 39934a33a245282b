"""Sequence split: chronological within each series, or whole series per split.

``split.method: time``: the first ``split.train`` share of each series' steps train, then val, then
test. Sequence classification may also give whole series to one split (``split.method: group`` with
``split.group_column`` = the series column).

Inputs:  ``paths.clean``
Outputs: ``paths.split``/{train,val,test}.parquet and schema.json, ``paths.split_report``
Params:  ``split``, ``seed``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import SCHEMA_FILE, SPLITS, split_file, write_json, write_table
from pipeline.kinds.sequence.data import KIND, SequenceSchema, read_sequence
from pipeline.kinds.sequence.windows import split_windows
from pipeline.params import Paths, SplitParams

log = logging.getLogger(__name__)


def split_frame(frame: pd.DataFrame, schema: SequenceSchema, cfg: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    """Chronological per series (``time``), or whole series per split (``group``, classification only)."""
    series = schema.series_column
    allowed = ["time"] if schema.forecast else ["time", "group"]
    if cfg.method not in allowed:
        raise ParamsError(
            f"split.method = {cfg.method!r} does not apply to sequence {schema.task} data; choose {' or '.join(allowed)}"
        )
    if cfg.method == "group":
        if cfg.group_column != series:
            raise ParamsError(
                f"split.group_column = {cfg.group_column!r}: sequence data is grouped by its series column {series!r}"
            )
        return _split_series(frame, schema, cfg, seed)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in SPLITS}
    for name, part in frame.groupby(series, sort=True):
        n = len(part)
        n_train, n_val = int(round(n * cfg.train)), int(round(n * cfg.val))
        sizes = {"train": n_train, "val": n_val, "test": n - n_train - n_val}
        _check_lengths(str(name), sizes, schema)
        cut = np.cumsum([0, n_train, n_val, n])
        for i, split in enumerate(SPLITS):
            parts[split].append(part.iloc[cut[i] : cut[i + 1]])
    return {name: pd.concat(p, ignore_index=True) for name, p in parts.items()}


def _check_lengths(name: str, sizes: dict[str, int], schema: SequenceSchema) -> None:
    """Every split of a series must hold at least one window (and test the seasonal baseline's season)."""
    need = {"train": schema.lookback + schema.horizon, "val": max(1, schema.horizon), "test": max(1, schema.horizon)}
    if not schema.forecast:
        need = {split: schema.lookback for split in SPLITS}
    short = {split: (sizes[split], need[split]) for split in SPLITS if sizes[split] < need[split]}
    if schema.forecast and sizes["train"] + sizes["val"] < schema.season_length:
        short["train+val"] = (sizes["train"] + sizes["val"], schema.season_length)
    if short:
        detail = ", ".join(f"{split} has {have} steps, needs {want}" for split, (have, want) in short.items())
        raise DataError(
            f"series {name!r} is too short to split into windows ({detail}); "
            "use more data, a shorter ingest.lookback or horizon, or other split shares"
        )


def _split_series(frame: pd.DataFrame, schema: SequenceSchema, cfg: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    """Whole series to train, val or test, in a seeded random order; at least one series each."""
    names = np.array(sorted(frame[schema.series_column].unique()), dtype=object)
    if len(names) < 3:
        raise DataError(f"split.method 'group' needs at least 3 series, found {len(names)}")
    order = np.random.default_rng(seed).permutation(names)
    n_test = max(1, int(round(len(names) * cfg.test)))
    n_val = max(1, int(round(len(names) * cfg.val)))
    if len(names) - n_test - n_val < 1:
        n_val, n_test = 1, 1
    chosen = {"test": set(order[:n_test]), "val": set(order[n_test : n_test + n_val]), "train": set(order[n_test + n_val :])}
    lengths = frame.groupby(schema.series_column).size()
    short = sorted(str(k) for k, v in lengths.items() if v < schema.lookback)
    if short:
        raise DataError(f"series {short[:5]} have fewer steps than ingest.lookback = {schema.lookback}")
    return {split: frame[frame[schema.series_column].isin(chosen[split])].reset_index(drop=True) for split in SPLITS}


def run(cfg: SplitParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Split the clean long table; write the three parts, the schema and the report."""
    frame, schema = read_sequence(paths.clean)
    parts = split_frame(frame, schema, cfg, seed)
    for name, part in parts.items():
        write_table(split_file(paths.split, name), part)
    write_json(Path(paths.split) / SCHEMA_FILE, schema.to_dict())
    time = schema.time_column
    report = {
        "kind": KIND,
        "method": cfg.method,
        "rows": {name: len(part) for name, part in parts.items()},
        "series": {name: int(part[schema.series_column].nunique()) for name, part in parts.items()},
        "time_range": {name: [str(part[time].min()), str(part[time].max())] for name, part in parts.items()},
        "windows": {
            name: int(len(split_windows(parts, name, schema, schema.stride if name == "train" else 1).y)) for name in SPLITS
        },
        "context": "val/test windows may take their inputs from the preceding split(s); their targets lie in the split"
        if schema.forecast
        else "every window lies inside its split",
    }
    write_json(paths.split_report, report)
    log.info("split %s rows into %s windows (%s)", report["rows"], report["windows"], cfg.method)
    return report
