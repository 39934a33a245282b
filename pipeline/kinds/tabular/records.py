"""Raw JSON records -> the tabular model's ONNX feed: what the prediction service runs on every request (no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.canon import category_value
from pipeline.kinds.base import RecordError
from pipeline.kinds.tabular.encoder import MISSING_TEXT
from pipeline.onnxio.card import TabularCard


@dataclass(frozen=True)
class FeedSchema:
    """The card's inputs as ``build_feed`` uses them on every request: computed once, when a model loads."""

    names: tuple[str, ...]  # in the card's order
    known: frozenset[str]
    numeric: frozenset[str]

    @classmethod
    def of(cls, card: TabularCard) -> FeedSchema:
        return cls(card.input_names, frozenset(card.input_names), frozenset(card.numeric_names))


def build_feed(records: Sequence[Any], schema: FeedSchema) -> dict[str, np.ndarray]:
    """Validate raw records against the model's input schema and build the [N, 1] ONNX feeds.

    Every input field must be present (null is allowed: the model imputes it); unknown fields,
    wrong types and non-objects are refused with a message naming the record and the field.
    """
    names, known, numeric = schema.names, schema.known, schema.numeric
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
                if value is None:
                    columns[name].append(math.nan)
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    columns[name].append(float(value))
                else:
                    raise RecordError(f"record {i}: field {name!r} must be a number or null, got {value!r}")
            elif value is None:
                columns[name].append(MISSING_TEXT)
            elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
                text = category_value(value)  # the training rule: 441.0 and 441 are "441"
                columns[name].append(MISSING_TEXT if text is None else text)
            else:
                raise RecordError(f"record {i}: field {name!r} must be a string or null, got {value!r}")
    return {
        name: (np.array(values, dtype=np.float32) if name in numeric else np.array(values, dtype=object)).reshape(-1, 1)
        for name, values in columns.items()
    }
