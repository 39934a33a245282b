"""Raw window records -> the sequence model's ONNX feed, its outputs -> answers, and what the log keeps (no torch).

A record is one window: a JSON list of exactly ``lookback`` rows of the long table, oldest first, each an
object with the time column, every input feature (numbers; the model takes no missing value) and,
optionally, the series column (the same in every row; echoed in the answer). The times must lie on the
card's grid: in order, no repeats, no gaps (``frequency``: a pandas offset alias for datetimes, given as
ISO 8601 text; a whole number of units for numeric times). A forecaster answers ``forecast`` (H values in
target units) and ``times`` (the H steps after the window's last); a classifier its label and probabilities.

The log keeps each window's newest step (series, time, every feature) and the window's first time: the
new observation a window brings, as a row of the long table the drift monitor reads; the earlier steps
were each some earlier window's newest, or lie in the data the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from pipeline.kinds.base import Answers, RecordError
from pipeline.kinds.sequence.data import FORECAST, WINDOW_INPUT
from pipeline.onnxio.card import LABEL, PROBABILITIES, SequenceCard


@dataclass(frozen=True)
class WindowSchema:
    """What a window record is checked against, from the card: its length, fields and time grid."""

    series_column: str
    time_column: str
    features: tuple[str, ...]
    lookback: int
    horizon: int
    frequency: str | int
    classes: tuple[str, ...]
    forecast: bool

    @property
    def names(self) -> tuple[str, ...]:
        """A row's fields: the time and the features (the series column is optional)."""
        return (self.time_column, *self.features)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (FORECAST,) if self.forecast else (PROBABILITIES, LABEL)

    @property
    def datetime(self) -> bool:
        return isinstance(self.frequency, str)

    @classmethod
    def of(cls, card: SequenceCard) -> WindowSchema:
        return cls(
            card.series_column,
            card.time_column,
            card.features,
            card.lookback,
            card.horizon,
            card.frequency,
            card.classes,
            card.sequence_task == "forecast",
        )


def grid(first: Any, periods: int, frequency: str | int) -> np.ndarray:
    """``periods`` times from ``first`` on the grid: datetime64 for an offset alias, int64 for numeric steps."""
    if isinstance(frequency, str):
        return pd.date_range(first, periods=periods, freq=frequency).to_numpy()
    return first + frequency * np.arange(periods, dtype=np.int64)


_TIME_LIMIT = 2**62


def parse_times(values: list[Any], schema: WindowSchema, where: str) -> np.ndarray:
    """A window's time values -> datetime64[ns] (ISO 8601 text) or int64 (whole numbers)."""
    column = schema.time_column
    if schema.datetime:
        for j, value in enumerate(values):
            if not isinstance(value, str):
                raise RecordError(f"{where}: row {j}: field {column!r} must be ISO 8601 date-time text, got {_short(value)}")
        try:
            parsed = pd.to_datetime(pd.Series(values), format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise RecordError(f"{where}: field {column!r}: not ISO 8601 date-times ({_first_line(exc)})") from None
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):  # training times were naive: compare in UTC
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        return parsed.to_numpy(dtype="datetime64[ns]")
    for j, value in enumerate(values):
        if type(value) is not int and not (type(value) is float and value.is_integer()):
            raise RecordError(f"{where}: row {j}: field {column!r} must be a whole number, got {_short(value)}")
        if not -_TIME_LIMIT < value < _TIME_LIMIT:  # int64 with room for the grid's steps: 1e30 would overflow
            raise RecordError(f"{where}: row {j}: field {column!r} = {_short(value)} is out of range for a time step")
    return np.array(values, dtype=np.int64)


def check_grid(times: np.ndarray, schema: WindowSchema, where: str) -> None:
    """The window's times lie on the card's grid from its first time: in order, no repeats, no gaps."""
    column = schema.time_column
    unordered = np.flatnonzero(times[1:] <= times[:-1])
    if len(unordered):
        j = int(unordered[0]) + 1
        previous = f"row {j - 1}'s {_time_text(times[j - 1])}"
        problem = "repeats" if times[j] == times[j - 1] else "is before"
        raise RecordError(
            f"{where}: row {j}: field {column!r} = {_time_text(times[j])} {problem} {previous}: rows are steps in time order, oldest first"
        )
    expected = grid(times[0], len(times), schema.frequency)
    wrong = np.flatnonzero(times != expected)
    if not len(wrong):
        return
    j = int(wrong[0])
    if times[j] > expected[j]:
        problem = (
            f"leaves a gap after {_time_text(times[j - 1])}: expected {_time_text(expected[j])} (frequency {schema.frequency})"
        )
    else:
        problem = f"is off the {schema.frequency} grid: expected {_time_text(expected[j])}"
    raise RecordError(f"{where}: row {j}: field {column!r} = {_time_text(times[j])} {problem}")


def window_values(rows: list[Any], schema: WindowSchema, where: str) -> tuple[list[list[float]], list[Any], Any]:
    """A window's rows -> (feature values [L][F], raw times [L], series or None), every field checked."""
    features, time_column, series_column = schema.features, schema.time_column, schema.series_column
    allowed = {time_column, series_column, *features}
    values, times = [], []
    series = None
    for j, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RecordError(f"{where}: row {j}: expected an object of fields, got {type(row).__name__}")
        unknown = [key for key in row if key not in allowed]
        if unknown:
            raise RecordError(f"{where}: row {j}: unknown field {unknown[0]!r}; a row has {[time_column, *features]}")
        if time_column not in row:
            raise RecordError(f"{where}: row {j}: missing field {time_column!r}")
        times.append(row[time_column])
        if series_column in row:
            if j and row[series_column] != series:
                raise RecordError(f"{where}: row {j}: field {series_column!r} differs from row 0's: a window is one series")
            series = row[series_column]
        elif j and series is not None:
            raise RecordError(f"{where}: row {j}: missing field {series_column!r} that row 0 has")
        step = []
        for name in features:
            value = row.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not np.isfinite(value) or abs(value) > 3.4e38:
                    raise RecordError(f"{where}: row {j}: field {name!r} = {value!r} is not a finite float32 number")
                step.append(float(value))
            elif name not in row:
                raise RecordError(f"{where}: row {j}: missing field {name!r}")
            else:
                raise RecordError(
                    f"{where}: row {j}: field {name!r} must be a number (no missing values), got {_short(value)}"
                )
        values.append(step)
    if series is not None and not isinstance(series, (str, int)):
        raise RecordError(f"{where}: field {series_column!r} must be text or an integer, got {_short(series)}")
    return values, times, series


def parse_window(record: Any, schema: WindowSchema, index: int) -> tuple[list[list[float]], np.ndarray, Any]:
    """One record -> (values [L][F], times [L], series or None); anything off is a ``RecordError`` naming it."""
    where = f"record {index}"
    if not isinstance(record, list):
        raise RecordError(
            f"{where}: expected a window: a list of {schema.lookback} rows of the long table, got {type(record).__name__}"
        )
    if len(record) != schema.lookback:
        raise RecordError(f"{where}: a window has {schema.lookback} rows (the model's lookback), got {len(record)}")
    values, raw_times, series = window_values(record, schema, where)
    times = parse_times(raw_times, schema, where)
    check_grid(times, schema, where)
    return values, times, series


def build_feed(records: Sequence[Any], schema: WindowSchema) -> dict[str, np.ndarray]:
    """Raw window records -> the feed ``window`` float32 [N, L, F]."""
    windows = [parse_window(record, schema, i)[0] for i, record in enumerate(records)]
    shape = (len(windows), schema.lookback, len(schema.features))
    return {WINDOW_INPUT: np.array(windows, dtype=np.float32).reshape(shape)}


def last_time(record: list[dict[str, Any]], schema: WindowSchema) -> Any:
    """A validated window's last time, as ``parse_times`` reads it (one value: no vectorised parse needed)."""
    value = record[-1][schema.time_column]
    if not schema.datetime:
        return int(value)
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def forecast_times(last: Any, schema: WindowSchema) -> list[Any]:
    """The ``horizon`` times after ``last`` as JSON values (ISO text for datetimes)."""
    if not schema.datetime:
        return [last + schema.frequency * h for h in range(1, schema.horizon + 1)]
    offset = pd.tseries.frequencies.to_offset(schema.frequency)
    return [(last + h * offset).isoformat() for h in range(1, schema.horizon + 1)]


def answer(outputs: Sequence[np.ndarray], records: Sequence[Any], schema: WindowSchema) -> Answers:
    """A forecaster: each window's forecast in target units with its times (logged: the first value as text,
    the H values as the vector); a classifier: label and probabilities by class."""
    series_column = schema.series_column
    if schema.forecast:
        vectors = np.asarray(outputs[0], dtype=np.float64).tolist()
        answers: list[dict[str, Any]] = []
        for record, vector in zip(records, vectors):
            item: dict[str, Any] = {"forecast": vector, "times": forecast_times(last_time(record, schema), schema)}
            if series_column in record[0]:
                item["series"] = record[0][series_column]
            answers.append(item)
        return Answers(answers, [repr(v[0]) for v in vectors], vectors)
    probabilities, labels = outputs
    vectors = np.asarray(probabilities).tolist()
    texts = [str(label) for label in labels]
    return Answers(
        [{"label": t, "probabilities": dict(zip(schema.classes, v))} for t, v in zip(texts, vectors)], texts, vectors
    )


def log_inputs(records: Sequence[Any], feed: dict[str, np.ndarray], schema: WindowSchema) -> list[str]:
    """Per window, its newest step as a row of the long table (series, time, features) and its first time."""
    rows = []
    for record in records:
        newest = record[-1]
        row = {schema.series_column: newest.get(schema.series_column), schema.time_column: newest[schema.time_column]}
        row |= {name: newest[name] for name in schema.features}
        rows.append(orjson.dumps({**row, "window_start": record[0][schema.time_column]}).decode())
    return rows


def _time_text(value: Any) -> str:
    return pd.Timestamp(value).isoformat() if isinstance(value, np.datetime64 | pd.Timestamp) else str(value)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
