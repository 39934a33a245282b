"""Forecast errors and the forecast evaluation report (numpy and pandas only: the gate scores with them too)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.sequence.windows import Windows


def forecast_errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """MAE and RMSE over every window and step, in the target's units; MAPE (%) when no actual value is 0."""
    error = predicted.astype(np.float64) - actual
    scores = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}
    if np.all(np.abs(actual) > 0):
        scores["mape"] = float(100 * np.abs(error / actual).mean())
    return scores


def forecast_report(
    windows: Windows, predicted: np.ndarray, target_index: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, pd.DataFrame]]:
    """Metrics, per-step and per-series errors, and plot tables for the model and both baselines."""
    seasonal = windows.seasonal
    assert seasonal is not None, "forecast windows carry their seasonal-naive forecast"
    persistence = np.repeat(windows.x[:, -1, target_index][:, None], windows.y.shape[1], axis=1)
    forecasts = {"model": predicted, "seasonal_naive": seasonal, "persistence": persistence}
    if np.isnan(seasonal).any():
        raise DataError(
            "some test windows have no value one season earlier; use a longer series or a shorter ingest.season_length"
        )
    overall = {name: forecast_errors(f, windows.y) for name, f in forecasts.items()}
    metrics = {
        "task": "forecast",
        "test_windows": len(windows),
        "horizon": int(windows.y.shape[1]),
        "model": overall["model"],
        "baseline_seasonal_naive": overall["seasonal_naive"],
        "baseline_persistence": overall["persistence"],
        "model_minus_seasonal_naive": {k: overall["model"][k] - overall["seasonal_naive"][k] for k in ("mae", "rmse")},
    }
    steps = pd.DataFrame({"step": np.arange(1, windows.y.shape[1] + 1)})
    for name, f in forecasts.items():
        error = f.astype(np.float64) - windows.y
        steps[f"{name}_mae"] = np.abs(error).mean(axis=0)
        steps[f"{name}_rmse"] = np.sqrt((error**2).mean(axis=0))
    per_series = {}
    for key in sorted(set(windows.series)):
        mask = windows.series == key
        per_series[str(key)] = {name: forecast_errors(f[mask], windows.y[mask]) for name, f in forecasts.items()}
    breakdown = {"per_horizon_step": steps.to_dict(orient="records"), "per_series": per_series}
    # One-step-ahead forecasts over the test period (the first step of every window): actual vs predicted.
    plots = {
        "forecast": pd.DataFrame(
            {
                "index": np.arange(len(windows)),
                "time": pd.Series(windows.time).astype(str),
                "series": windows.series,
                "actual": windows.y[:, 0],
                "predicted": predicted[:, 0],
                "seasonal_naive": seasonal[:, 0],
                "persistence": persistence[:, 0],
            }
        ),
        "horizon_errors": steps,
    }
    return metrics, breakdown, plots
