"""The service scoring a real sequence forecaster (the elecdemand LSTM from the pipeline on a slice): windows of
long-table rows in, forecasts in target units with their times out; a window of the wrong length, out of
order, with a gap or a mistyped value refused naming the record; the log keeps each window's newest step."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pipeline.lifecycle.registry import Registry
from pipeline.onnxio.session import ort_session
from pipeline.params import load_params
from serving.app import create_app
from serving.predlog import make_engine, predictions

pytestmark = pytest.mark.slow

LOOKBACK = 96  # examples/elecdemand: two days of half-hours
FEATURES = ["Demand", "WorkDay", "Temperature"]


@pytest.fixture(scope="module")
def served(sequence_workspace, tmp_path_factory):
    params = load_params(sequence_workspace / "params.yaml")
    registry = Registry(sequence_workspace / params.paths.registry)
    database = tmp_path_factory.mktemp("sequence-log") / "predictions.sqlite"
    settings = params.serve.model_copy(update={"database_url": f"sqlite:///{database}", "reload_interval_seconds": 0.2})
    with TestClient(create_app(settings, registry.root)) as client:
        yield client, registry.get("v0001"), database


@pytest.fixture(scope="module")
def steps(sequence_workspace) -> pd.DataFrame:
    """The test split's long table: series, time, Demand, WorkDay, Temperature every 30 minutes."""
    return pd.read_parquet(sequence_workspace / "data/split/test.parquet")


def window(steps: pd.DataFrame, start: int) -> list[dict]:
    """``LOOKBACK`` rows from ``start`` as a client sends them: ISO times, numbers."""
    rows = steps.iloc[start : start + LOOKBACK]
    return [
        {"series": r.series, "time": r.time.isoformat(), **{f: float(getattr(r, f)) for f in FEATURES}}
        for r in rows.itertuples()
    ]


def test_windows_are_forecast_in_target_units_with_their_times(served, steps):
    client, version, _ = served
    starts = [0, 10, 40]
    response = client.post("/predict", json=[window(steps, s) for s in starts])
    assert response.status_code == 200, response.text
    x = np.stack([steps[FEATURES].to_numpy(np.float32)[s : s + LOOKBACK] for s in starts])
    (expected,) = ort_session(version.onnx).run(["forecast"], {"window": x})
    for start, answer, forecast in zip(starts, response.json()["predictions"], expected):
        assert np.allclose(answer["forecast"], forecast, rtol=1e-6)
        next_step = steps["time"].iloc[start + LOOKBACK - 1] + pd.Timedelta("30min")
        assert answer["times"] == [next_step.isoformat()] and answer["series"] == "elecdemand"
    # In target units: demand in GW, not standardised values.
    assert all(2.0 < a["forecast"][0] < 10.0 for a in response.json()["predictions"])


def test_the_log_keeps_each_windows_newest_step(served, steps):
    client, _, database = served
    response = client.post("/predict", json=[window(steps, 5)])
    assert response.status_code == 200, response.text
    engine = make_engine(f"sqlite:///{database}")
    query = sa.select(predictions.c.inputs, predictions.c.label, predictions.c.probabilities)
    with engine.connect() as connection:
        row = connection.execute(query.where(predictions.c.request_id == response.json()["request_id"])).one()
    newest = window(steps, 5)[-1]
    assert json.loads(row.inputs) == {**newest, "window_start": window(steps, 5)[0]["time"]}
    forecast = response.json()["predictions"][0]["forecast"]
    assert float(row.label) == forecast[0] and json.loads(row.probabilities) == forecast


def broken(steps: pd.DataFrame, how: str):
    rows = window(steps, 0)
    if how == "short":
        return rows[:-1]
    if how == "gap":
        return rows[:50] + rows[51:] + [window(steps, 1)[-1]]
    if how == "order":
        rows[10], rows[11] = rows[11], rows[10]
    elif how == "repeat":
        rows[20] = {**rows[20], "time": rows[19]["time"]}
    elif how == "text":
        rows[3] = {**rows[3], "Temperature": "warm"}
    elif how == "null":
        rows[4] = {**rows[4], "Demand": None}
    elif how == "unknown":
        rows[0] = {**rows[0], "Price": 1.0}
    elif how == "series":
        rows[7] = {**rows[7], "series": "other"}
    elif how == "time":
        rows[2] = {**rows[2], "time": 1390000000}
    elif how == "object":
        return {"rows": rows}
    return rows


@pytest.mark.parametrize(
    ("how", "detail"),
    [
        ("short", "record 1: a window has 96 rows (the model's lookback), got 95"),
        ("gap", "record 1: row 50: field 'time' = 2014-01-23T07:30:00 leaves a gap after 2014-01-23T06:30:00"),
        ("order", "record 1: row 11: field 'time' = 2014-01-22T11:00:00 is before row 10's 2014-01-22T11:30:00"),
        ("repeat", "record 1: row 20: field 'time' = 2014-01-22T15:30:00 repeats row 19's 2014-01-22T15:30:00"),
        ("text", "record 1: row 3: field 'Temperature' must be a number (no missing values), got 'warm'"),
        ("null", "record 1: row 4: field 'Demand' must be a number (no missing values), got None"),
        ("unknown", "record 1: row 0: unknown field 'Price'"),
        ("series", "record 1: row 7: field 'series' differs from row 0's: a window is one series"),
        ("time", "record 1: row 2: field 'time' must be ISO 8601 date-time text, got 1390000000"),
        ("object", "record 1: expected a window: a list of 96 rows of the long table, got dict"),
    ],
)
def test_a_bad_window_is_a_422_naming_the_record_and_the_row(served, steps, how, detail):
    client, _, _ = served
    response = client.post("/predict", json=[window(steps, 0), broken(steps, how)])
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail), response.json()["detail"]
