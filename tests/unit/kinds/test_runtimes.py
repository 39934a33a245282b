"""Every kind's runtime reads its model's card as a typed ``ModelCard`` and refuses a card of another kind."""

from __future__ import annotations

import pytest

from pipeline import kinds
from pipeline.core.errors import DataError
from pipeline.onnxio.card import parse_card
from tests.unit.onnxio.fixtures import old_card_data

OTHER = {"tabular": "image", "image": "sequence", "sequence": "tabular"}


@pytest.mark.parametrize("kind", sorted(OTHER))
def test_score_split_refuses_the_card_of_another_kind(kind, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"")  # never opened: the card is checked first
    card = parse_card(old_card_data(OTHER[kind]))
    with pytest.raises(DataError, match=rf"model\.onnx: the card is of an? {OTHER[kind]} model, not an? {kind} one$"):
        kinds.get(kind).runtime.score_split(onnx_path, card, tmp_path)
