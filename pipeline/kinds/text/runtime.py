"""The text kind's torch-free runtime: gate scores of an exported model, and raw strings -> its feed.

A record is one text (a JSON string): the model takes raw strings and tokenises them inside its graph,
so the service sends them as they came. The prediction log keeps each text with its length, which is
what the drift monitor compares for text (length, the share of tokens unseen in training, the
predicted classes). Landing and the drift check itself are not provided yet: they refuse in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import orjson
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import Answers, NotSupportedYet, RecordError
from pipeline.kinds.text.data import SCORING_BATCH, TEXT_INPUT, read_split, read_text_schema
from pipeline.onnxio.card import LABEL, PROBABILITIES, ModelCard, TextCard
from pipeline.onnxio.session import ort_session
from pipeline.params import Params
from pipeline.shared.metrics import label_scores


@dataclass(frozen=True)
class TextFeedSchema:
    """What a text record is checked against: it is a string; the classes name the probabilities."""

    classes: tuple[str, ...]
    names: tuple[str, ...] = (TEXT_INPUT,)
    outputs: tuple[str, ...] = (PROBABILITIES, LABEL)


def _text_card(card: ModelCard, where: object) -> TextCard:
    if not isinstance(card, TextCard):
        raise DataError(f"{where}: the card is of a {card.KIND} model, not a text one")
    return card


def predict_labels(onnx_path: str | Path, texts: Sequence[str]) -> np.ndarray:
    """The exported model's labels for raw texts, in batches of ``SCORING_BATCH``."""
    session = ort_session(onnx_path)
    labels = [
        session.run([LABEL], {TEXT_INPUT: np.array(texts[i : i + SCORING_BATCH], dtype=object)})[0]
        for i in range(0, len(texts), SCORING_BATCH)
    ]
    return np.concatenate(labels) if labels else np.array([], dtype=object)


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


def landing_screen(params: Params) -> NoReturn:
    raise NotSupportedYet(f"ingest.kind = {params.ingest.kind!r}: landed text batches are not screened yet")


def drift_frame(frame: pd.DataFrame, card: ModelCard, params: Params, model: Path | None = None) -> NoReturn:
    raise NotSupportedYet("the drift monitor cannot check text data yet")


def score_rows(onnx_path: Path, card: ModelCard, frame: pd.DataFrame, params: Params) -> dict[str, float]:
    """Performance on labelled landed texts is not measured yet: nothing scored."""
    return {}
