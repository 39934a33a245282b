"""The sequence kind's torch-free runtime: gate scores of an exported model, and the service's hooks
(window records -> feed, outputs -> forecasts or labels, what the log keeps: ``pipeline.kinds.sequence.records``).

Landing and the drift monitor: ``pipeline.kinds.sequence.landing`` (landed long tables: new steps and
corrections), ``pipeline.kinds.sequence.drift`` (the steps' inputs and target, checked pooled and per
series: ``drift_groups``) and ``pipeline.kinds.sequence.steps`` (the production model on every complete
window of new steps: ``score_rows``, and a classifier's predicted class in its drift frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
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


# ---------------------------------------------------------------- landing and the drift monitor (KindRuntime)
# Imported here, not at the top: the service's hooks above are edited by others at the same time.
from pipeline.core.canon import category_text  # noqa: E402
from pipeline.core.errors import ParamsError  # noqa: E402
from pipeline.kinds.base import LOGGED_LABEL, PREDICTED, LandingScreen  # noqa: E402
from pipeline.kinds.sequence import landing as sequence_landing  # noqa: E402
from pipeline.kinds.sequence.drift import step_columns  # noqa: E402
from pipeline.kinds.sequence.steps import classifier_scores, forecast_scores, predicted_classes  # noqa: E402
from pipeline.params import SequenceParams  # noqa: E402


def _sequence_params(params: Params) -> SequenceParams:
    if not isinstance(params, SequenceParams):
        raise ParamsError(f"ingest.kind = {params.ingest.kind!r}: these params are not a sequence pipeline's")
    return params


def _sequence_card(card: ModelCard) -> SequenceCard:
    if not isinstance(card, SequenceCard):
        raise DataError(f"the card is of a {card.KIND} model, not a sequence one")
    return card


def landing_screen(params: Params) -> LandingScreen:
    """Landed long tables (new steps, corrections) checked against the source's columns and types
    (``pipeline.kinds.sequence.landing``)."""
    return sequence_landing.landing_screen(_sequence_params(params).ingest)


def drift_frame(frame: pd.DataFrame, card: ModelCard, params: Params, model: Path | None = None) -> pd.DataFrame:
    """The steps' window inputs (and a classifier's label), cleaned as training rows were (``pipeline.kinds.sequence.drift``).

    A classifier's frame also gets ``PREDICTED``, the class answered for the window that ends at each step:
    the service's answer on the prediction log's rows (``LOGGED_LABEL``), the production ``model``'s on other
    steps (missing where no complete window ends there, and on other steps without ``model``)."""
    sequence_card = _sequence_card(card)
    cfg = _sequence_params(params)
    columns = step_columns(frame, sequence_card, cfg.clean)
    if sequence_card.sequence_task != "classify" or (model is None and LOGGED_LABEL not in frame.columns):
        return columns
    logged = frame[LOGGED_LABEL] if LOGGED_LABEL in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    answered = category_text(logged)
    rest = answered.isna().to_numpy()
    if model is not None and rest.any():
        found = predicted_classes(model, frame.loc[rest], sequence_card, cfg.clean, cfg.ingest.time_format)
        answered[rest] = found.to_numpy()
    return columns.assign(**{PREDICTED: answered})


def score_rows(onnx_path: Path, card: ModelCard, frame: pd.DataFrame, params: Params) -> dict[str, float]:
    """The production model on every complete window of the new steps in ``frame`` (``pipeline.kinds.sequence.steps``):
    a forecaster's MAE, RMSE, R^2 (target units) on the windows whose next ``horizon`` steps carry the
    target, a classifier's accuracy (balanced accuracy, macro F1) on the windows whose last step carries
    the label (the prediction log's rows: the answered class); ``rows``: the windows scored. Empty when no
    window is complete."""
    sequence_card = _sequence_card(card)
    cfg = _sequence_params(params)
    if sequence_card.sequence_task == "forecast":
        return forecast_scores(Path(onnx_path), frame, sequence_card, cfg.clean, cfg.ingest.time_format)
    return classifier_scores(Path(onnx_path), frame, sequence_card, cfg.clean, cfg.ingest.time_format)


def drift_groups(card: ModelCard) -> str | None:
    """The series column: the monitor also checks each series' new steps against its own training steps."""
    return _sequence_card(card).series_column
