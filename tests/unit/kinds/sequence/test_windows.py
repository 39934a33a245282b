"""Sequence windows (pipeline/kinds/sequence/windows.py): origins, inputs and targets; the seasonal-naive forecast;
the complete windows of new steps on the card's grid (gaps and missing values break a run)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.kinds.sequence.windows import (
    complete_windows,
    grid_links,
    run_lengths,
    seasonal_naive,
    series_windows,
    window_actuals,
    window_inputs,
)


def test_windows_on_a_tiny_series():
    values = np.arange(10, dtype=float)[:, None] * np.array([1.0, 10.0])  # [T, F]: the target and 10x it
    origins, x, y = series_windows(values, values[:, 0], first=0, lookback=3, horizon=2, stride=1)
    assert origins.tolist() == [3, 4, 5, 6, 7, 8]
    assert x[0, :, 0].tolist() == [0, 1, 2] and x[0, :, 1].tolist() == [0, 10, 20] and y[0].tolist() == [3, 4]
    assert y[-1].tolist() == [8, 9] and x.dtype == np.float32 and x.shape == (6, 3, 2)
    origins, _, y = series_windows(values, values[:, 0], first=6, lookback=3, horizon=1, stride=2)
    assert origins.tolist() == [6, 8] and y[:, 0].tolist() == [6, 8]  # targets from row 6 on, inputs from before


def test_seasonal_naive_on_a_hand_made_series():
    target = np.tile(np.array([1.0, 2.0, 3.0, 4.0]), 6)  # a perfect period-4 season
    origins = np.array([8, 13])
    assert seasonal_naive(target, origins, horizon=6, season=4).tolist() == [[1, 2, 3, 4, 1, 2], [2, 3, 4, 1, 2, 3]]
    assert np.isnan(seasonal_naive(target, np.array([2]), horizon=1, season=4)).all()  # no value a season back


def test_runs_and_complete_windows_of_new_steps_on_the_grid():
    times = np.array([0, 1, 2, 3, 5, 6, 7, 8, 9, 10], dtype=np.int64)  # a gap: no step 4
    assert grid_links(times, 1).tolist() == [False, True, True, True, False, True, True, True, True, True]
    usable = np.array([True, True, True, True, True, True, False, True, True, True])  # row 6 (t=7) has a missing value
    assert run_lengths(usable, grid_links(times, 1)).tolist() == [1, 2, 3, 4, 1, 2, 0, 1, 2, 3]
    values = np.where(usable, 1.0, np.nan)[:, None]
    assert complete_windows(times, values, lookback=3, frequency=1).tolist() == [2, 3, 9]
    # Scoring a forecast: the next horizon steps must follow on the grid with the target present.
    target = np.arange(10, dtype=float)
    assert complete_windows(times, values, 3, 1, target, horizon=1).tolist() == [2]  # row 3 is followed by the gap
    ends = complete_windows(times, np.ones((10, 1)), 3, 1, target, horizon=2)
    assert ends.tolist() == [6, 7] and window_actuals(target, ends, 2).tolist() == [[7, 8], [8, 9]]
    assert window_inputs(np.arange(10.0)[:, None], ends, 3)[:, :, 0].tolist() == [[4, 5, 6], [5, 6, 7]]
    assert complete_windows(times[:2], values[:2], 3, 1).tolist() == []


def test_datetime_steps_follow_the_cards_offset():
    times = pd.to_datetime(["2014-01-01 00:00", "2014-01-01 00:30", "2014-01-01 01:30", "2014-01-01 02:00"]).to_numpy()
    assert grid_links(times, "30min").tolist() == [False, True, False, True]
