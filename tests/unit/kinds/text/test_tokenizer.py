"""The text kind's encoder: fitted on training texts only, saved as JSON, and cut identically inside the
ONNX graph (onnxruntime's StringNormalizer + Tokenizer + LabelEncoder) and in Python."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from pipeline.core.errors import DataError
from pipeline.core.io import read_json, write_json
from pipeline.kinds.text.data import TEXT_INPUT, TextSchema
from pipeline.kinds.text.graph import IDS, tokenizer_graph
from pipeline.kinds.text.tokenizer import CLS_ID, PAD_ID, UNK_ID, TextTokenizer, label_codes, split_tokens
from pipeline.onnxio.session import ort_session
from pipeline.params import TextFeatures

SCHEMA = TextSchema("text", "source", "created_at", ("Android", "iPhone"))
TRAIN = [
    "Make America GREAT again! https://t.co/AbC123",
    "great rally tonight in Ohio #MAGA @realDonaldTrump",
    "Thank you Ohio! 🇺🇸 Great crowd, don't miss it",
    "the fake news media is working overtime... Sad!",
    "Great again & again: https://t.co/ZZ9",
]
TRICKY = [
    "GREAT Again!!!",  # case
    "great,again;ohio...sad?!",  # punctuation between words
    "HTTPS://T.CO/XyZ and http://example.com/path?q=1",  # URLs, upper-case scheme
    "🇺🇸👍🏽 ❤️ great",  # emoji: flags, skin tones, variation selectors
    "",  # empty
    "   \t\n  ",  # only white space
    "zebra quokka unseenword",  # words never seen in training
    "CAFÉ Ünïcode ΑΒΓ İstanbul ß ẞ",  # non-ASCII letters: no case mapping anywhere
    "don't DON'T 'quoted'",
    "a\u00a0b\u2028c",  # white space outside ASCII is a token of its own, in both engines
    "<pad> <unk> <cls>",  # the special tokens' names are just text
    "a\x00great",  # a NUL travels into onnxruntime's strings intact
    " ".join(["great"] * 100),  # longer than max_length: cut
]


def fit(**features) -> TextTokenizer:
    return TextTokenizer.fit(TRAIN, SCHEMA, TextFeatures(min_count=1, **features))


def test_the_vocabulary_comes_from_the_training_texts_only():
    tokenizer = TextTokenizer.fit(TRAIN, SCHEMA, TextFeatures(min_count=2))

    assert tokenizer.vocab[0] == "great"  # the most frequent first
    assert set(tokenizer.vocab) == {"great", "again", "!", "ohio", "https://t.co/", "."}
    ids = tokenizer.transform(["zebra great"])[0]
    assert ids[:3].tolist() == [CLS_ID, UNK_ID, 3] and not ids[3:].any()
    # fitting on other texts gives another vocabulary: nothing is shared between fits
    assert "zebra" in TextTokenizer.fit(["zebra"] * 3, SCHEMA, TextFeatures()).vocab


def test_max_vocab_keeps_the_most_frequent_and_ties_by_token():
    tokenizer = TextTokenizer.fit(["b a c", "a b", "a"], SCHEMA, TextFeatures(min_count=1, max_vocab=10))

    assert tokenizer.vocab[:3] == ("a", "b", "c")
    assert TextTokenizer.fit(["b a c", "a b", "a"], SCHEMA, TextFeatures(min_count=1, max_vocab=10)).vocab[:2] == ("a", "b")


def test_every_text_starts_with_cls_and_is_cut_and_padded_to_max_length():
    tokenizer = fit(max_length=5)

    ids = tokenizer.transform(["", "great " * 10])

    assert ids.shape == (2, 5) and ids.dtype == np.int64
    assert ids[0].tolist() == [CLS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID]
    assert ids[1, 0] == CLS_ID and (ids[1, 1:] == tokenizer.transform(["great"])[0, 1]).all()


def test_lowercasing_is_ascii_only():
    assert split_tokens("ÉCOLE Great", lowercase=True) == ["É", "cole", "great"]
    assert split_tokens("ÉCOLE Great") == ["É", "COLE", "Great"]


def test_the_json_round_trip_transforms_identically(tmp_path):
    tokenizer = fit()
    write_json(tmp_path / "preprocessor.json", tokenizer.to_dict())

    restored = TextTokenizer.from_dict(read_json(tmp_path / "preprocessor.json"))

    assert restored == tokenizer
    assert (restored.transform(TRICKY) == tokenizer.transform(TRICKY)).all()


def test_a_tokeniser_saved_with_another_pattern_is_refused():
    saved = fit().to_dict() | {"pattern": r"\w+"}

    with pytest.raises(DataError, match="another pattern"):
        TextTokenizer.from_dict(saved)


def test_an_unknown_label_is_named():
    with pytest.raises(DataError, match=r"labels \['Web'\] are not among the classes"):
        label_codes(["Android", "Web"], ("Android", "iPhone"))


@pytest.mark.parametrize("lowercase", [True, False])
def test_the_graph_tokenises_exactly_as_python(lowercase):
    tokenizer = fit(lowercase=lowercase, max_length=16)
    model = tokenizer_graph(tokenizer, opset=17)
    onnx.checker.check_model(model, full_check=True)

    (ids,) = ort_session(model.SerializeToString()).run([IDS], {TEXT_INPUT: np.array(TRICKY, dtype=object)})

    expected = tokenizer.transform(TRICKY)
    for text, got, want in zip(TRICKY, ids, expected):
        assert got.tolist() == want.tolist(), f"{text!r}"


def test_the_graph_takes_a_batch_of_empty_texts_and_a_single_text():
    tokenizer = fit(max_length=6)
    session = ort_session(tokenizer_graph(tokenizer, opset=17).SerializeToString())

    (empty,) = session.run([IDS], {TEXT_INPUT: np.array(["", " "], dtype=object)})
    (one,) = session.run([IDS], {TEXT_INPUT: np.array(["great"], dtype=object)})

    assert empty.tolist() == tokenizer.transform(["", " "]).tolist()
    assert one.tolist() == tokenizer.transform(["great"]).tolist()
