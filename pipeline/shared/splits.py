"""Split assignment shared by the kinds: stratified by label, by time period, by group; every row in exactly one split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.params import SplitParams


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
