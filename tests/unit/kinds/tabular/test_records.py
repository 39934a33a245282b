"""Raw JSON records -> the tabular model's ONNX feed, as the service builds it through the kind table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import kinds
from pipeline.kinds.base import RecordError
from pipeline.kinds.tabular.encoder import MISSING_TEXT
from pipeline.onnxio.card import TabularCard
from tests.unit.onnxio.fixtures import old_card_path


@pytest.fixture(scope="module")
def card():
    return TabularCard.load(old_card_path("tabular"))


def record(card, **values):
    return {name: values.get(name) for name in card.input_names}


def test_records_become_one_typed_column_per_input(card):
    runtime = kinds.get("tabular").runtime
    schema = runtime.feed_schema(card)
    assert schema.names == card.input_names
    numeric, categorical = card.numeric_names[0], card.categorical_names[0]
    feed = runtime.build_feed([record(card, **{numeric: 3, categorical: 441.0}), record(card)], schema)
    assert list(feed) == list(card.input_names)
    assert feed[numeric].dtype == np.float32 and feed[numeric].shape == (2, 1)
    assert feed[numeric][0, 0] == 3.0 and math.isnan(feed[numeric][1, 0])
    assert feed[categorical].dtype == object and feed[categorical][:, 0].tolist() == ["441", MISSING_TEXT]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: [5], r"^record 0: expected an object of fields, got int$"),
        (lambda r: [{**r, "shoe_size": 42}], r"^record 0: unknown field 'shoe_size'; the model's fields are \["),
        (lambda r: [r, {k: v for k, v in r.items() if k != "age"}], r"^record 1: missing field 'age' \(send null"),
        (lambda r: [{**r, "age": True}], r"^record 0: field 'age' must be a number or null, got True$"),
    ],
)
def test_a_record_the_model_cannot_take_is_one_line_naming_it(card, change, message):
    runtime = kinds.get("tabular").runtime
    with pytest.raises(RecordError, match=message):
        runtime.build_feed(change(record(card)), runtime.feed_schema(card))
