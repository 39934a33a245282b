"""Every kind's runtime reads its model's card as a typed ``ModelCard`` and refuses a card of another kind;
a lifecycle step a kind does not provide yet is one line naming the kind and the step."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline import kinds
from pipeline.core.errors import DataError
from pipeline.kinds.base import LandingScreen, NotSupportedYet
from pipeline.onnxio.card import parse_card
from pipeline.params import load_params
from tests.conftest import REPO, make_params
from tests.unit.onnxio.fixtures import old_card_data

OTHER = {"tabular": "image", "image": "sequence", "sequence": "tabular"}
EXAMPLES = {"image": "examples/digits/params.yaml", "sequence": "examples/elecdemand/params.yaml"}


@pytest.mark.parametrize("kind", sorted(OTHER))
def test_score_split_refuses_the_card_of_another_kind(kind, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"")  # never opened: the card is checked first
    card = parse_card(old_card_data(OTHER[kind]))
    with pytest.raises(DataError, match=rf"model\.onnx: the card is of an? {OTHER[kind]} model, not an? {kind} one$"):
        kinds.get(kind).runtime.score_split(onnx_path, card, tmp_path)


def test_the_tabular_feed_schema_and_drift_frame_refuse_the_card_of_another_kind(raw_params, tmp_path):
    runtime, card = kinds.get("tabular").runtime, parse_card(old_card_data("image"))
    with pytest.raises(DataError, match=r"^the card is of a image model, not a tabular one$"):
        runtime.feed_schema(card)
    with pytest.raises(DataError, match=r"^the card is of a image model, not a tabular one$"):
        runtime.drift_frame(pd.DataFrame(), card, make_params(raw_params, tmp_path))


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_serving_landing_and_drift_take_every_kind(kind):
    runtime, card = kinds.get(kind).runtime, parse_card(old_card_data(kind))
    params = load_params(REPO / EXAMPLES[kind])
    runtime.feed_schema(card)  # the service scores every kind now (tests/service/test_serve_*.py)
    # Landing and drift per kind: tests/unit/kinds/<kind>/test_landing_drift.py
    assert isinstance(runtime.landing_screen(params), LandingScreen)
    assert len(runtime.drift_frame(pd.DataFrame(), card, params).columns) > 0
    assert issubclass(NotSupportedYet, DataError)  # a user error: one line at the command line, no traceback
