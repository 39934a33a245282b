"""Windows of a long table: ``lookback`` consecutive steps of every input feature, x float32 [L, F], and
their targets (forecast: the next ``horizon`` values of the target, y [H]; classify: the series' label).

Windows never cross a split boundary in their targets: a training window's inputs and targets all lie
in train; a validation or test window's targets all lie in its split, while its inputs may reach back
into the preceding split(s) for context (the values a forecaster would have seen at that time; no
target is ever an input of a window that predicts it). Classification windows lie wholly inside their
split. Evaluation and the gate score every test window (stride 1). numpy and pandas only (no torch):
the gate builds the same windows as training.

New steps (landed batches, logged steps) are not a split: they may have gaps and missing values, so their
windows are found on the card's time grid (``grid_links``, ``run_lengths``, ``complete_windows``): a window
is ``lookback`` consecutive steps on the grid with every input present, and for scoring a forecast the
next ``horizon`` steps on the grid with the target present. No value is filled in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.io import SPLITS, read_table, split_file
from pipeline.kinds.sequence.data import SequenceSchema


@dataclass(frozen=True)
class Windows:
    """Windows of one split, raw units: x float32 [N, L, F]; y float32 [N, H] target values (forecast) or
    int64 [N] class indices (classify); the series of each window and the time of its first target step
    (classify: of its last input step); ``seasonal`` float32 [N, H], the seasonal-naive forecast."""

    x: np.ndarray
    y: np.ndarray
    series: np.ndarray
    time: np.ndarray
    seasonal: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.y)


def series_windows(
    values: np.ndarray, target: np.ndarray | None, first: int, lookback: int, horizon: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of one series whose targets start at or after row ``first``.

    values float [T, F], target float [T] (None: classification windows, wholly at or after ``first``).
    Returns the window starts' origins o (the first target row; classify: one past the last input
    row), x [N, L, F] = values[o - L : o] and y [N, H] = target[o : o + H].
    """
    n = len(values)
    low = max(first, lookback) if target is not None else first + lookback
    high = n - horizon  # the last origin whose targets fit
    origins = np.arange(low, high + 1, stride, dtype=np.int64)
    if len(origins) == 0:
        return origins, np.zeros((0, lookback, values.shape[1]), np.float32), np.zeros((0, horizon), np.float32)
    view = np.lib.stride_tricks.sliding_window_view(values, lookback, axis=0)  # [T - L + 1, F, L]
    x = view[origins - lookback].transpose(0, 2, 1).astype(np.float32)
    if target is None:
        return origins, x, np.zeros((len(origins), 0), np.float32)
    y = np.lib.stride_tricks.sliding_window_view(target, horizon)[origins].astype(np.float32)
    return origins, x, y


def seasonal_naive(target: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The value one season before each target step, from before the origin: for step h (0-based)
    target[o + h - season * (h // season + 1)]; NaN where the series has no such value. [N, H]"""
    steps = np.arange(horizon)
    positions = origins[:, None] + steps[None, :] - season * (steps // season + 1)[None, :]
    out = np.full(positions.shape, np.nan, dtype=np.float32)
    valid = positions >= 0
    out[valid] = target[positions[valid]]
    return out


def split_windows(parts: dict[str, pd.DataFrame], name: str, schema: SequenceSchema, stride: int) -> Windows:
    """The windows of split ``name``: its targets, with context from the splits before it (forecast)."""
    earlier = SPLITS[: SPLITS.index(name)]
    series, time = schema.series_column, schema.time_column
    frames = (
        [parts[s].assign(_own=s == name) for s in (*earlier, name)] if schema.forecast else [parts[name].assign(_own=True)]
    )
    combined = pd.concat(frames, ignore_index=True).sort_values([series, time], kind="stable")
    class_index = {c: i for i, c in enumerate(schema.classes)}
    xs, ys, names, times, seasonals = [], [], [], [], []
    for key, part in combined.groupby(series, sort=True):
        own = part["_own"].to_numpy()
        if not own.any():
            continue
        first = int(np.argmax(own))
        values = part[list(schema.features)].to_numpy(np.float64)
        target = part[schema.target].to_numpy(np.float64) if schema.forecast else None
        origins, x, y = series_windows(values, target, first, schema.lookback, schema.horizon, stride)
        if not len(origins):
            continue
        xs.append(x)
        stamps = part[time].to_numpy()
        if target is not None:  # forecast
            ys.append(y)
            seasonals.append(seasonal_naive(target, origins, schema.horizon, schema.season_length))
            times.append(stamps[origins])
        else:
            ys.append(np.full(len(origins), class_index[part[schema.target].iloc[0]], dtype=np.int64))
            times.append(stamps[origins - 1])
        names.append(np.full(len(origins), key, dtype=object))
    if not xs:
        raise DataError(
            f"the {name} split has no complete window (ingest.lookback = {schema.lookback}, horizon = {schema.horizon})"
        )
    return Windows(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        series=np.concatenate(names),
        time=np.concatenate(times),
        seasonal=np.concatenate(seasonals) if schema.forecast else None,
    )


def read_split_windows(split_dir: str | Path, name: str, schema: SequenceSchema, stride: int = 1) -> Windows:
    """The windows of one split, read from the split folder (earlier splits give context)."""
    parts = {s: read_table(split_file(split_dir, s)) for s in SPLITS[: SPLITS.index(name) + 1]}
    return split_windows(parts, name, schema, stride)


def grid_links(times: np.ndarray, frequency: str | int) -> np.ndarray:
    """bool [T]: row j lies exactly one ``frequency`` step after row j - 1 (rows of one series, in time
    order; row 0 never does). ``frequency``: a pandas offset alias (datetimes) or a whole number of units."""
    if len(times) == 0:
        return np.zeros(0, dtype=bool)
    if isinstance(frequency, str):
        following = (pd.DatetimeIndex(times[:-1]) + pd.tseries.frequencies.to_offset(frequency)).to_numpy()
    else:
        following = times[:-1] + frequency
    return np.concatenate([[False], times[1:] == following])


def run_lengths(usable: np.ndarray, linked: np.ndarray) -> np.ndarray:
    """int64 [T]: how many consecutive usable rows end at each row (0 where the row is not usable); a run
    goes on only across rows ``linked`` to the one before (``grid_links``)."""
    index = np.arange(len(usable))
    previous = np.concatenate([[False], usable[:-1]])
    starts = usable & ~(linked & previous)  # the first row of each run
    last_start = np.maximum.accumulate(np.where(starts, index, -1))
    return np.where(usable, index - last_start + 1, 0).astype(np.int64)


def complete_windows(
    times: np.ndarray,
    values: np.ndarray,
    lookback: int,
    frequency: str | int,
    target: np.ndarray | None = None,
    horizon: int = 0,
) -> np.ndarray:
    """The last rows e of every complete window of one series (rows in time order), int64 [N].

    values float [T, F]: rows e - L + 1 .. e are on the grid with every value finite. With ``target``
    float [T] (a forecast to score), rows e + 1 .. e + H also follow on the grid with the target finite,
    so the window's actuals are ``target[e + 1 : e + H + 1]``.
    """
    n = len(times)
    linked = grid_links(times, frequency)
    inputs = run_lengths(np.isfinite(values).all(axis=1), linked)
    ends = np.arange(lookback - 1, n - horizon, dtype=np.int64)
    if target is None or not len(ends):
        return ends[inputs[ends] >= lookback]
    actuals = run_lengths(np.isfinite(target), linked)
    ok = (inputs[ends] >= lookback) & (actuals[ends + horizon] >= horizon) & linked[ends + 1]
    return ends[ok]


def window_inputs(values: np.ndarray, ends: np.ndarray, lookback: int) -> np.ndarray:
    """x float32 [N, L, F]: the ``lookback`` rows of ``values`` [T, F] ending at each of ``ends``."""
    view = np.lib.stride_tricks.sliding_window_view(values, lookback, axis=0)  # [T - L + 1, F, L]
    return view[ends - lookback + 1].transpose(0, 2, 1).astype(np.float32)


def window_actuals(target: np.ndarray, ends: np.ndarray, horizon: int) -> np.ndarray:
    """y float64 [N, H]: the ``horizon`` target values after each of ``ends``."""
    return np.lib.stride_tricks.sliding_window_view(target, horizon)[ends + 1].astype(np.float64)
