"""Sequence windows (pipeline/kinds/sequence/windows.py): origins, inputs and targets; the seasonal-naive forecast."""

from __future__ import annotations

import numpy as np

from pipeline.kinds.sequence.windows import seasonal_naive, series_windows


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
