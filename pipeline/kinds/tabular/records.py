"""Raw JSON records -> the tabular model's ONNX feed, and its outputs -> answers and log rows: what the
prediction service runs on every request (no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from pipeline.core.canon import category_value
from pipeline.kinds.base import Answers, NotSupportedYet, RecordError
from pipeline.kinds.tabular.encoder import MISSING_TEXT
from pipeline.onnxio.card import LABEL, PROBABILITIES, TabularCard
from pipeline.shared.tables import FLOAT32_MAX

_BIG_INT = 2**1000


@dataclass(frozen=True)
class FeedSchema:
    """The card's inputs as ``build_feed`` uses them on every request: computed once, when a model loads."""

    names: tuple[str, ...]  # in the card's order
    known: frozenset[str]
    numeric: frozenset[str]
    missing_tokens: frozenset[str] = frozenset()
    # A classifier runs (probabilities, label); a regressor its one output, the value in target units.
    outputs: tuple[str, ...] = (PROBABILITIES, LABEL)
    classes: tuple[str, ...] = ()

    @property
    def regression(self) -> bool:
        return not self.classes

    @classmethod
    def of(cls, card: TabularCard) -> FeedSchema:
        tokens = frozenset(card.missing_tokens) | {MISSING_TEXT}
        outputs = (PROBABILITIES, LABEL) if card.task == "classification" else tuple(o.name for o in card.outputs)
        if len(outputs) != 1 and card.task == "regression":  # a multi-output regressor has no answer shape yet
            raise NotSupportedYet(f"the service scores tabular regressors with one output; this card names {list(outputs)}")
        classes = card.classes if card.task == "classification" else ()
        return cls(card.input_names, frozenset(card.input_names), frozenset(card.numeric_names), tokens, outputs, classes)


def number_field(value: Any, tokens: frozenset[str]) -> float | None:
    """A numeric field's value as a float, NaN for missing; None when it is no number.

    The rule is the CSV reader's, so a JSON record means what a row of the training data meant: a
    number, or text holding a number ("12.5"); null and the missing-value tokens are missing."""
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value) if -_BIG_INT < value < _BIG_INT else math.inf  # float() of 10**400 raises
    if value is None:
        return math.nan
    if kind is str:
        text = value.strip()
        if text in tokens:
            return math.nan
        number = pd.to_numeric(text, errors="coerce")  # the parser clean uses, not float(): "1_0" is no number
        return None if pd.isna(number) else float(number)
    return None


def build_feed(records: Sequence[Any], schema: FeedSchema) -> dict[str, np.ndarray]:
    """Validate raw records against the model's input schema and build the [N, 1] ONNX feeds.

    Every input field must be present (null is allowed: the model imputes it); unknown fields,
    wrong types and non-objects are refused with a message naming the record and the field. One rule
    for every field: it takes what its column held in training. A numeric field takes a number or
    text holding one; a categorical field takes text, or a number taken as its canonical text ("441"
    for 441 and 441.0, as in training). Null and the card's missing-value tokens are missing in both.
    A number that is not finite in float32 (1e39 overflows it) is refused: the model would compute
    nonsense from it, so it is never scored, logged or answered.
    """
    names, known, numeric, tokens = schema.names, schema.known, schema.numeric, schema.missing_tokens
    columns: dict[str, list] = {name: [] for name in names}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RecordError(f"record {i}: expected an object of fields, got {type(record).__name__}")
        unknown = [key for key in record if key not in known]
        if unknown:
            raise RecordError(f"record {i}: unknown field {unknown[0]!r}; the model's fields are {list(names)}")
        for name in names:
            if name not in record:
                raise RecordError(f"record {i}: missing field {name!r} (send null if it is unknown)")
            value = record[name]
            if name in numeric:
                number = number_field(value, tokens)
                if number is None:
                    raise RecordError(f"record {i}: field {name!r} must be a number or null, got {shorten(value)}")
                if abs(number) > FLOAT32_MAX:  # also inf; NaN compares False and means missing
                    raise RecordError(f"record {i}: field {name!r} = {number!r} is not a finite float32 number")
                columns[name].append(number)
            elif value is None:
                columns[name].append(MISSING_TEXT)
            elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
                text = category_value(value)  # the training rule: 441.0 and 441 are "441"
                columns[name].append(MISSING_TEXT if text is None or text in tokens else text)
            else:
                raise RecordError(f"record {i}: field {name!r} must be a string or null, got {shorten(value)}")
    return {
        name: (np.array(values, dtype=np.float32) if name in numeric else np.array(values, dtype=object)).reshape(-1, 1)
        for name, values in columns.items()
    }


def answer(outputs: Sequence[np.ndarray], records: Sequence[Any], schema: FeedSchema) -> Answers:
    """Per record: a classifier's label and probabilities by class; a regressor's value in target units
    (logged as its text, with the one-value vector)."""
    if schema.regression:
        values = np.asarray(outputs[0], dtype=np.float64).reshape(len(outputs[0]), -1)[:, 0].tolist()
        return Answers([{"value": v} for v in values], [repr(v) for v in values], [[v] for v in values])
    probabilities, labels = outputs
    classes = schema.classes
    vectors = probabilities.tolist()
    texts = [str(label) for label in labels]
    return Answers(
        [{"label": text, "probabilities": dict(zip(classes, vector))} for text, vector in zip(texts, vectors)],
        texts,
        vectors,
    )


def log_inputs(records: Sequence[Any], feed: dict[str, np.ndarray], schema: FeedSchema) -> list[str]:
    """The model's input fields of each record, as sent (validation already refused anything else)."""
    names = schema.names
    return [orjson.dumps({name: record[name] for name in names}).decode() for record in records]


def shorten(value: Any, limit: int = 80) -> str:
    """A value for an error message: a huge string or object must not make a huge response."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
