"""New steps of a long table as the production model reads them (no torch): performance drift and the
predicted class of a drift frame.

Rows are steps (landed batches, the prediction log's logged steps, or the training split the registry keeps
as the reference). ``step_table`` puts them in the model's terms: the series id as text (as ingest writes
it; rows without one are one series), the time parsed as ingest parses it (``ingest.time_format``;
zoned times in UTC, as the service reads them), the window inputs cleaned with ``clean.valid_ranges`` as
for the drift check, and for the same (series, time) the row read last wins (as ingest and the batch
scorer decide). Windows are every run of ``lookback`` steps on the card's grid with every input present
(``windows.complete_windows``); nothing is filled in, so a window over a gap or a missing value is not
scored. A forecast window is scored where its next ``horizon`` steps carry the target (the actuals).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.canon import category_text
from pipeline.kinds.base import LOGGED_LABEL
from pipeline.kinds.sequence.data import FORECAST, WINDOW_INPUT
from pipeline.kinds.sequence.drift import step_columns
from pipeline.kinds.sequence.windows import complete_windows, window_actuals, window_inputs
from pipeline.onnxio.card import LABEL, SequenceCard
from pipeline.onnxio.session import ort_session
from pipeline.params import SequenceClean
from pipeline.shared.metrics import label_scores, regression_scores
from pipeline.shared.tables import sortable_time

RUN_WINDOWS = 8192  # windows per onnxruntime call: a [8192, 96, 3] float32 slice is 9 MB

_ROW = "__row__"  # the position of the input row each step came from: a window's answer lands on its last step


def step_table(frame: pd.DataFrame, card: SequenceCard, clean: SequenceClean, time_format: str | None) -> pd.DataFrame:
    """The steps of ``frame`` as the model reads them: series (text), time, the card's inputs (float64,
    impossible values missing), and ``__row__`` (the row's position in ``frame``); one row per (series,
    time), the last one read; sorted by series and time. Empty when ``frame`` has no time column (no
    step can be placed on the grid)."""
    series, time = card.series_column, card.time_column
    if time not in frame.columns or frame.empty:
        return pd.DataFrame(columns=[series, time, *card.features, _ROW])
    frame = frame.reset_index(drop=True)  # positions: the caller's index may repeat labels
    times = sortable_time(frame[time], time, time_format)
    if isinstance(times.dtype, pd.DatetimeTZDtype):  # as the service reads a zoned time: UTC, naive
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    ids = frame[series].astype("string") if series in frame.columns else pd.Series(pd.NA, index=frame.index, dtype="string")
    steps = pd.concat([ids.rename(series), times.rename(time), step_columns(frame, card, clean)], axis=1)
    steps[_ROW] = np.arange(len(frame))
    steps = steps.drop_duplicates([series, time], keep="last")
    return steps.sort_values([series, time], kind="stable", na_position="first").reset_index(drop=True)


@dataclass(frozen=True)
class SeriesWindows:
    """The complete windows of one series: the rows of its last steps in the input frame, and the
    windows' inputs (raw units) and, to score a forecast, actuals."""

    rows: np.ndarray  # [N], positions in the input frame of the windows' last steps
    x: np.ndarray  # float32 [N, L, F]
    y: np.ndarray | None  # float64 [N, H] (forecast actuals) or None


def series_windows(steps: pd.DataFrame, card: SequenceCard, with_actuals: bool) -> Iterator[SeriesWindows]:
    """Every complete window of each series in ``steps`` (``step_table``), ``RUN_WINDOWS`` at most at a time,
    so memory stays bounded by one slice whatever the number of steps."""
    forecast = card.sequence_task == "forecast" and with_actuals
    for _, part in steps.groupby(card.series_column, sort=True, dropna=False):
        times = part[card.time_column].to_numpy()
        values = part[list(card.features)].to_numpy(np.float64)
        target = part[card.target].to_numpy(np.float64) if forecast else None
        ends = complete_windows(times, values, card.lookback, card.frequency, target, card.horizon if forecast else 0)
        rows = part[_ROW].to_numpy()
        for start in range(0, len(ends), RUN_WINDOWS):
            chunk = ends[start : start + RUN_WINDOWS]
            y = window_actuals(target, chunk, card.horizon) if target is not None else None
            yield SeriesWindows(rows[chunk], window_inputs(values, chunk, card.lookback), y)


def _classify(session: Any, x: np.ndarray) -> np.ndarray:
    (labels,) = session.run([LABEL], {WINDOW_INPUT: x})
    return np.asarray(labels).astype(str)


def predicted_classes(
    onnx_path: Path, frame: pd.DataFrame, card: SequenceCard, clean: SequenceClean, time_format: str | None
) -> pd.Series:
    """A classifier's answer for the window ending at each step of ``frame`` (text, index of ``frame``);
    missing where no complete window ends (the series' first ``lookback - 1`` steps, gaps, missing values)."""
    predicted = np.full(len(frame), None, dtype=object)
    session = None
    for windows in series_windows(step_table(frame, card, clean, time_format), card, with_actuals=False):
        session = session or ort_session(onnx_path)
        predicted[windows.rows] = _classify(session, windows.x)
    return pd.Series(predicted, index=frame.index, dtype="string")


def forecast_scores(
    onnx_path: Path, frame: pd.DataFrame, card: SequenceCard, clean: SequenceClean, time_format: str | None
) -> dict[str, float]:
    """A forecaster's MAE, RMSE and R^2 (target units, over every window and step, as the gate's
    ``score_split``) on every window of ``frame`` whose actuals are known, and ``rows`` (windows); empty without one."""
    steps = step_table(frame, card, clean, time_format)
    predicted, actual = [], []
    session = None
    for windows in series_windows(steps, card, with_actuals=True):
        session = session or ort_session(onnx_path)
        (forecast,) = session.run([FORECAST], {WINDOW_INPUT: windows.x})
        assert windows.y is not None, "forecast windows to score carry their actuals"
        predicted.append(np.asarray(forecast, dtype=np.float64))
        actual.append(windows.y)
    if not predicted:
        return {}
    scores = regression_scores(np.concatenate(actual), np.concatenate(predicted))
    return {**scores, "rows": float(sum(len(p) for p in predicted))}


def classifier_scores(
    onnx_path: Path, frame: pd.DataFrame, card: SequenceCard, clean: SequenceClean, time_format: str | None
) -> dict[str, float]:
    """A classifier's accuracy (balanced accuracy, macro F1) and ``rows``: landed steps' windows scored by the
    model against the label of their last step; logged rows (``LOGGED_LABEL``: the log keeps each window's
    newest step, not the window) by the class the service answered, against their late label."""
    if card.target not in frame.columns:
        return {}
    frame = frame.reset_index(drop=True)
    truth = category_text(frame[card.target], clean.missing_tokens)
    truths, answers = [], []
    logged = frame[LOGGED_LABEL].notna() if LOGGED_LABEL in frame.columns else pd.Series(False, index=frame.index)
    if logged.any():
        answered = frame.loc[logged & truth.notna(), LOGGED_LABEL].astype(str)
        truths.append(truth.loc[answered.index].tolist())
        answers.append(answered.tolist())
    landed = frame.loc[~logged]
    if not landed.empty:
        predicted = predicted_classes(onnx_path, landed, card, clean, time_format)
        scored = predicted.notna() & truth.loc[landed.index].notna()
        truths.append(truth.loc[scored[scored].index].tolist())
        answers.append(predicted[scored].tolist())
    y_true = [v for part in truths for v in part]
    if not y_true:
        return {}
    scores = label_scores(y_true, [v for part in answers for v in part], list(card.classes))
    return {**scores, "rows": float(len(y_true))}
