"""Forecast metrics (pipeline/kinds/sequence/metrics.py): the model beside the seasonal-naive and persistence baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.kinds.sequence.metrics import forecast_report
from pipeline.kinds.sequence.windows import split_windows
from tests.unit.kinds.sequence.conftest import schema_for


def test_seasonal_naive_and_persistence_baselines_on_a_hand_made_series():
    target = np.tile(np.array([1.0, 2.0, 3.0, 4.0]), 6)  # a perfect period-4 season
    schema = schema_for(features=("y",), lookback=4, horizon=1, season_length=4)
    frame = pd.DataFrame({"id": "a", "t": np.arange(24), "y": target + np.arange(24) * 0.0})
    windows = split_windows({"train": frame}, "train", schema, stride=1)
    metrics, breakdown, plots = forecast_report(windows, predicted=windows.y + 0.5, target_index=0)
    assert metrics["baseline_seasonal_naive"]["mae"] == 0.0 and metrics["model"]["mae"] == pytest.approx(0.5)
    # persistence repeats the last value: off by 1 three times in four, by 3 (4 -> 1) once
    assert metrics["baseline_persistence"]["mae"] == pytest.approx(np.mean(np.abs(windows.y[:, 0] - windows.x[:, -1, 0])))
    assert metrics["baseline_persistence"]["mae"] == pytest.approx((3 * 1 + 3) / 4, abs=0.1)
    assert breakdown["per_horizon_step"][0]["model_mae"] == pytest.approx(0.5) and set(plots) == {"forecast", "horizon_errors"}
