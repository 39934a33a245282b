"""The text kind's row rules (clean), augmentation, networks and export, on small in-memory data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.kinds.base import RecordError
from pipeline.kinds.text.augment import augment_texts
from pipeline.kinds.text.clean import clean_texts
from pipeline.kinds.text.data import TEXT_INPUT, TextSchema
from pipeline.kinds.text.evaluate import predict_texts
from pipeline.kinds.text.export import build_text_onnx
from pipeline.kinds.text.runtime import answer, build_feed, feed_schema
from pipeline.kinds.text.tokenizer import TextTokenizer, split_tokens
from pipeline.models import TextLSTMConfig, TextTransformerConfig, build_model
from pipeline.onnxio.build import LABEL, PROBABILITIES
from pipeline.onnxio.session import ort_session
from pipeline.params import TextAugment, TextClean, TextFeatures
from tests.unit.kinds.text.test_tokenizer import TRAIN, TRICKY

SCHEMA = TextSchema("text", "source", None)


def frame(rows: list[tuple[object, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["text", "source"])


def test_clean_drops_bad_rows_and_groups_rare_labels():
    rows = [("a", "Web")] * 5 + [("b", "Android")] * 4 + [("c", "iPhone")] * 3 + [("d", "Fax"), ("e", "Pager")]
    rows += [("x", None), ("y", "NA"), ("   ", "Web"), (None, "Web")]
    rows += [(f"w{i}", "Web") for i in range(3)]

    out, about = clean_texts(frame(rows), SCHEMA, TextClean(min_class_rows=3, max_classes=3))

    # 4 + 3 + 2 repeated (text, label) pairs; then Web has 4 rows, every other label 1 (< min_class_rows)
    assert about["dropped"] == {"missing_label": 2, "label_not_allowed": 0, "empty_text": 2, "duplicate": 9, "rare_label": 0}
    assert sorted(out["source"].unique()) == ["Web", "other"]
    assert about["grouped_labels"] == ["Android", "Fax", "Pager", "iPhone"]


def test_clean_drops_rare_labels_without_other_label():
    rows = [(f"w{i}", "Web") for i in range(5)] + [(f"a{i}", "Android") for i in range(5)] + [("f", "Fax")]

    out, about = clean_texts(frame(rows), SCHEMA, TextClean(min_class_rows=2, other_label=None))

    assert sorted(out["source"].unique()) == ["Android", "Web"] and about["dropped"]["rare_label"] == 1


def test_augmentation_is_seeded_and_keeps_the_tokens():
    cfg = TextAugment.model_validate(
        {"token_dropout": {"enabled": True, "rate": 0.3}, "token_swap": {"enabled": True}, "copies": 2}
    )

    first, again, other = augment_texts(TRAIN, cfg, 7), augment_texts(TRAIN, cfg, 7), augment_texts(TRAIN, cfg, 8)

    assert first == again and first != other and len(first) == 2
    for text, copy in zip(TRAIN, first[0]):
        tokens = split_tokens(copy)
        assert tokens and set(tokens) <= set(split_tokens(text))  # dropped and swapped, never invented
    swapped_only = augment_texts(TRAIN, TextAugment.model_validate({"token_swap": {"enabled": True, "rate": 0.5}}), 1)
    assert [sorted(split_tokens(t)) for t in swapped_only[0]] == [sorted(split_tokens(t)) for t in TRAIN]
    assert augment_texts(TRAIN, TextAugment(), 1) == []  # everything off: no copies


def tokenizer() -> TextTokenizer:
    return TextTokenizer.fit(
        TRAIN, TextSchema("text", "source", None, ("Android", "Web", "iPhone")), TextFeatures(min_count=1, max_length=32)
    )


CONFIGS = {
    "text_transformer": lambda t: TextTransformerConfig(
        t.vocab_size, 3, t.max_length, d_model=16, layers=2, heads=2, pooling="cls"
    ),
    "text_transformer_mean": lambda t: TextTransformerConfig(
        t.vocab_size, 3, t.max_length, d_model=16, heads=2, pooling="mean"
    ),
    "text_lstm": lambda t: TextLSTMConfig(t.vocab_size, 3, embedding_dim=8, hidden=8, bidirectional=True),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_texts_answer_does_not_depend_on_its_padding(name):
    torch.manual_seed(0)
    model = build_model(CONFIGS[name](tokenizer())).eval()
    ids = torch.from_numpy(tokenizer().transform(TRAIN))

    longest = int((ids != 0).sum(1).max())
    assert longest < ids.shape[1]  # some padding to take away

    with torch.no_grad():
        padded, cut = model(ids), model(ids[:, :longest])
        alone = torch.cat([model(ids[i : i + 1, : int((ids[i] != 0).sum())]) for i in range(len(ids))])

    assert torch.allclose(padded, cut, atol=1e-5) and torch.allclose(padded, alone, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_exported_model_takes_raw_strings_and_agrees_with_pytorch(name):
    torch.manual_seed(0)
    fitted = tokenizer()
    model = build_model(CONFIGS[name](fitted)).eval()
    session = ort_session(build_text_onnx(model, fitted, opset=17).SerializeToString())

    probabilities, labels = session.run([PROBABILITIES, LABEL], {TEXT_INPUT: np.array(TRICKY, dtype=object)})

    expected = predict_texts(model, fitted, TRICKY)
    assert np.abs(probabilities - expected).max() < 1e-5
    assert labels.tolist() == [fitted.classes[i] for i in expected.argmax(1)]


def test_the_service_feed_takes_strings_only_and_answers_by_class():
    schema = feed_schema_of(("Android", "iPhone"))
    feed = build_feed(["great", ""], schema)
    assert feed[TEXT_INPUT].tolist() == ["great", ""]
    with pytest.raises(RecordError, match="record 1: expected a text"):
        build_feed(["great", {"text": "great"}], schema)

    answers = answer([np.array([[0.25, 0.75]], np.float32), np.array(["iPhone"], dtype=object)], ["great"], schema)

    assert answers.answers == [{"label": "iPhone", "probabilities": {"Android": 0.25, "iPhone": 0.75}}]
    assert answers.labels == ["iPhone"] and answers.vectors == [[0.25, 0.75]]


def feed_schema_of(classes: tuple[str, ...]):
    from pipeline.kinds.text.runtime import TextFeedSchema

    return TextFeedSchema(classes=classes)


def test_feed_schema_refuses_a_card_of_another_kind():
    from pipeline.core.errors import DataError

    class Card:  # the runtime checks the card's class before reading anything from it
        KIND = "image"

    with pytest.raises(DataError, match="not a text one"):
        feed_schema(Card())  # type: ignore[arg-type]
