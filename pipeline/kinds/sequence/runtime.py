"""The sequence kind's torch-free runtime: gate scores of an exported model, and the service's hooks
(window records -> feed, outputs -> forecasts or labels, what the log keeps: ``pipeline.kinds.sequence.records``).

Landing and the drift monitor take tabular data only for now: those ``KindRuntime`` steps refuse in one
line, where they are first reached."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import NotSupportedYet
from pipeline.kinds.sequence.data import FORECAST, WINDOW_INPUT, SequenceSchema
from pipeline.kinds.sequence.metrics import forecast_errors
from pipeline.kinds.sequence.records import WindowSchema
from pipeline.kinds.sequence.records import answer as answer  # KindRuntime.answer
from pipeline.kinds.sequence.records import build_feed as build_feed  # KindRuntime.build_feed
from pipeline.kinds.sequence.records import log_inputs as log_inputs  # KindRuntime.log_inputs
from pipeline.kinds.sequence.windows import read_split_windows
from pipeline.onnxio.card import ModelCard, SequenceCard
from pipeline.onnxio.session import ort_session
from pipeline.params import Params
from pipeline.shared.metrics import classification_scores


def card_schema(card: SequenceCard) -> SequenceSchema:
    """The windowing a model was trained with, from its card (every window: stride 1)."""
    return SequenceSchema(
        series_column=card.series_column,
        time_column=card.time_column,
        target=card.target,
        features=card.features,
        task=card.sequence_task,
        lookback=card.lookback,
        horizon=card.horizon,
        stride=1,
        season_length=card.season_length,
        frequency=card.frequency,
        classes=card.classes,
    )


def score_split(onnx_path: str | Path, card: ModelCard, split_dir: str | Path) -> dict[str, float]:
    """A model's scores on every test window of ``split_dir``, built with the model's own windowing:
    MAE, RMSE (target units) and the number of windows; or accuracy, balanced accuracy, macro F1."""
    path = Path(onnx_path)
    if not path.exists():
        raise DataError(f"{path}: model not found")
    if not isinstance(card, SequenceCard):
        raise DataError(f"{path}: the card is of a {card.KIND} model, not a sequence one")
    schema = card_schema(card)
    windows = read_split_windows(split_dir, "test", schema)
    session = ort_session(path)
    feed = {WINDOW_INPUT: windows.x}
    if schema.forecast:
        (forecast,) = session.run([FORECAST], feed)
        scores = forecast_errors(forecast, windows.y)
        return {"mae": scores["mae"], "rmse": scores["rmse"], "rows": len(windows)}
    _, labels = session.run(["probabilities", "label"], feed)
    index = {c: i for i, c in enumerate(schema.classes)}
    scores = classification_scores(windows.y, np.array([index[v] for v in labels]), len(schema.classes))
    return {k: scores[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")} | {"rows": len(windows)}


def feed_schema(card: ModelCard) -> WindowSchema:
    """The card's window length, fields and time grid, as ``build_feed`` checks records against them."""
    if not isinstance(card, SequenceCard):
        raise DataError(f"the card is of a {card.KIND} model, not a sequence one")
    return WindowSchema.of(card)


def landing_screen(params: Params) -> NoReturn:
    raise NotSupportedYet(f"ingest.kind = {params.ingest.kind!r}: landed data is not screened yet (landing takes tables only)")


def drift_frame(frame: pd.DataFrame, card: ModelCard, params: Params) -> NoReturn:
    raise NotSupportedYet("the drift monitor cannot check sequence data yet: it checks tables only")
