"""The text kind's torch-free runtime: gate scores of an exported model, raw strings -> its feed, and
what landing and the drift monitor need.

A record is one text (a JSON string): the model takes raw strings and tokenises them inside its graph,
so the service sends them as they came. The prediction log keeps each text with its length.

Landing and the drift monitor: ``pipeline.kinds.text.landing`` (landed CSV/Parquet tables with the source's
text column; labels and times optional) and ``pipeline.kinds.text.drift`` (per text its length in characters
and in tokens and, with the production model, the share of its tokens unseen in training and the predicted
class). ``score_rows`` measures the production model on the labelled rows of new data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from pipeline.core.errors import DataError, ParamsError
from pipeline.kinds.base import Answers, LandingScreen, RecordError
from pipeline.kinds.text import landing as text_landing
from pipeline.kinds.text.data import TEXT_INPUT, read_split, read_text_schema
from pipeline.kinds.text.drift import frame_texts, predict_labels, text_columns
from pipeline.kinds.text.ingest import as_labels
from pipeline.onnxio.card import LABEL, PROBABILITIES, ModelCard, TextCard
from pipeline.params import Params, TextClean, TextParams
from pipeline.shared.metrics import label_scores


@dataclass(frozen=True)
class TextFeedSchema:
    """What a text record is checked against: it is a string; the classes name the probabilities."""

    classes: tuple[str, ...]
    names: tuple[str, ...] = (TEXT_INPUT,)
    outputs: tuple[str, ...] = (PROBABILITIES, LABEL)


def _text_card(card: ModelCard, where: object = None) -> TextCard:
    if not isinstance(card, TextCard):
        prefix = "" if where is None else f"{where}: "
        raise DataError(f"{prefix}the card is of a {card.KIND} model, not a text one")
    return card


def _text_params(params: Params) -> TextParams:
    if not isinstance(params, TextParams):
        raise ParamsError(f"ingest.kind = {params.ingest.kind!r}: these params are not a text pipeline's")
    return params


def score_split(onnx_path: str | Path, card: ModelCard, split_dir: str | Path) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and rows of an exported text model on ``split_dir``'s test texts."""
    path = Path(onnx_path)
    if not path.exists():
        raise DataError(f"{path}: model not found")
    text_card = _text_card(card, path)
    texts, labels = read_split(split_dir, "test", read_text_schema(split_dir))
    return label_scores(labels, predict_labels(path, texts), list(text_card.classes))


def feed_schema(card: ModelCard) -> TextFeedSchema:
    return TextFeedSchema(classes=_text_card(card, "model card").classes)


def build_feed(records: Sequence[Any], schema: TextFeedSchema) -> dict[str, np.ndarray]:
    """Records (each a JSON string) -> the feed string [N]; anything else is a ``RecordError`` naming the record."""
    for i, record in enumerate(records):
        if not isinstance(record, str):
            raise RecordError(f"record {i}: expected a text (a JSON string), got {type(record).__name__}")
    return {TEXT_INPUT: np.array(list(records), dtype=object)}


def answer(outputs: Sequence[np.ndarray], records: Sequence[Any], schema: TextFeedSchema) -> Answers:
    """(probabilities [N, K], label [N]) -> per record the label and the probability of each class."""
    probabilities, labels = outputs
    vectors = np.asarray(probabilities, dtype=np.float64).tolist()
    names = [str(label) for label in labels]
    answers = [
        {"label": name, "probabilities": dict(zip(schema.classes, row, strict=True))}
        for name, row in zip(names, vectors, strict=True)
    ]
    return Answers(answers=answers, labels=names, vectors=vectors)


def log_inputs(records: Sequence[Any], feed: dict[str, np.ndarray], schema: TextFeedSchema) -> list[str]:
    """Per record the JSON the prediction log keeps: the text and its length in characters (texts are
    short, and the monitor needs the words themselves to measure the share unseen in training)."""
    return [orjson.dumps({TEXT_INPUT: text, "chars": len(text)}).decode() for text in feed[TEXT_INPUT].tolist()]


def landing_screen(params: Params) -> LandingScreen:
    """Landed CSV/Parquet tables of texts, checked for the source's text column and usable texts and times
    (``pipeline.kinds.text.landing``)."""
    return text_landing.landing_screen(_text_params(params).ingest)


def drift_frame(frame: pd.DataFrame, card: ModelCard, params: Params, model: Path | None = None) -> pd.DataFrame:
    """Per text ``chars`` and ``words`` and, with the production ``model``, ``oov_share`` and the predicted class
    (``pipeline.kinds.text.drift``); rows from landed tables, the training split or the prediction log."""
    return text_columns(frame, _text_card(card).text_column, model)


def usable_labels(frame: pd.DataFrame, card: TextCard, clean: TextClean) -> pd.Series:
    """The rows of ``frame`` that carry a label training could have learned, with the label as training saw it:
    read as ingest reads labels; missing-value tokens and labels outside ``clean.labels`` dropped, as clean drops
    them; a label that is none of the model's classes grouped as ``clean.other_label`` (rows dropped without one)."""
    if card.target not in frame.columns:
        return pd.Series([], dtype=object)
    labels = as_labels(frame[card.target]).dropna()
    labels = labels[~labels.isin(clean.missing_tokens)]
    if clean.labels is not None:
        labels = labels[labels.isin(clean.labels)]
    known = labels.isin(card.classes)
    if clean.other_label is None:
        return labels[known]
    return labels.where(known, clean.other_label)


def score_rows(onnx_path: Path, card: ModelCard, frame: pd.DataFrame, params: Params) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and ``rows`` of the production model on the rows of ``frame`` that
    carry a usable label (``usable_labels``) and a text (not blank, when ``clean.drop_empty``); empty when none."""
    text_card = _text_card(card, onnx_path)
    clean = _text_params(params).clean
    labels = usable_labels(frame, text_card, clean)
    texts = frame_texts(frame, text_card.text_column)[labels.index]
    usable = texts.notna() & (texts.fillna("").str.strip() != "" if clean.drop_empty else True)
    if not usable.any():
        return {}
    predicted = predict_labels(onnx_path, texts[usable].tolist())
    return label_scores(labels[usable].tolist(), predicted, list(text_card.classes))


def drift_groups(card: ModelCard) -> str | None:
    """No per-group drift check: rows are compared all together (``KindRuntime.drift_groups``)."""
    return None
