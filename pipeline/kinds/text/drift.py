"""The text kind's drift frame (no torch): per text its length and, with the production model, the share of
its tokens unseen in training and the class the model gives it.

Rows are landed batches or the registry's reference (the training split), read as tables with the text in
the source's text column (``ingest.text_column``, the card's ``text_column``), or the prediction log's rows,
with the text under ``"text"`` (what ``runtime.log_inputs`` keeps) and the class the service answered in
``LOGGED_LABEL``. A frame mixing both (``monitor.source: both``) takes each row's text from the first of the
two that it has. Texts are read as ingest reads them (any value as its ``str``).

Columns, one row per row of the frame (numbers float64, categories pandas strings):

* ``chars``: the text's length in characters; ``words``: its tokens, as the model's tokeniser splits
  them (``tokenizer.split_tokens``: a URL's host, a word, an emoji or a punctuation mark is one);
* with the production model's ONNX file: ``oov_share``, the share of the text's tokens (lower-cased
  when the graph lower-cases) that are not in the training vocabulary, read from the graph's
  ``LabelEncoder`` (``graph.py``) once per file content; missing for a text with no token;
* and ``predicted`` (``PREDICTED``): the class the service answered where the log has it, else the
  class the model gives the text (onnxruntime, ``SCORING_BATCH`` texts a run).

A row without a text has every column missing: the drift check skips missing values.

Against the training split (the monitor's reference) ``oov_share`` starts off lower than on any new texts:
every token a training text holds was counted into the vocabulary (all but those seen fewer than
``features.min_count`` times), so held-out texts of the same distribution have more unseen tokens (on the
tweets, 0.085 against 0.068 with a vocabulary fitted on 13,000 of them), which Evidently's default test
reads as drift. One column of four: alone it is not dataset drift at ``monitor.drift_share`` 0.5.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.canon import category_text
from pipeline.core.errors import DataError
from pipeline.core.io import file_sha256
from pipeline.kinds.base import LOGGED_LABEL, PREDICTED
from pipeline.kinds.text.data import SCORING_BATCH, TEXT_INPUT
from pipeline.kinds.text.ingest import as_texts
from pipeline.kinds.text.tokenizer import PAD, PATTERN, split_tokens
from pipeline.onnxio.card import LABEL
from pipeline.onnxio.session import ort_session
from pipeline.shared.tables import first_line

CHARS, WORDS, OOV_SHARE = "chars", "words", "oov_share"


@dataclass(frozen=True)
class ModelVocabulary:
    """What a text model knows of tokens: its training vocabulary and whether it lower-cases first."""

    tokens: frozenset[str]
    lowercase: bool


def model_vocabulary(model: str | Path) -> ModelVocabulary:
    """The vocabulary inside the ONNX file ``model``, read once per path and content (a replaced file is read again)."""
    path = Path(model)
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the model ({exc.strerror or first_line(exc)})") from None
    return _read_vocabulary(str(path.resolve()), digest)


@functools.lru_cache(maxsize=4)
def _read_vocabulary(path: str, _sha256: str) -> ModelVocabulary:
    # Imported here: the service loads this runtime to serve texts and never needs the onnx package.
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import helper

    from pipeline.kinds.text.graph import ML_DOMAIN, MS_DOMAIN

    try:
        graph = onnx.load(path, load_external_data=False).graph
    except (OSError, ValueError, DecodeError) as exc:
        raise DataError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    tokenizers = [n for n in graph.node if n.op_type == "Tokenizer" and n.domain == MS_DOMAIN]
    if len(tokenizers) != 1:
        raise DataError(f"{path}: expected one Tokenizer in the graph, found {len(tokenizers)}; is it a text model?")
    tokenizer = tokenizers[0]
    attributes = {a.name: helper.get_attribute_value(a) for a in tokenizer.attribute}
    if attributes.get("tokenexp", b"").decode() != PATTERN:
        # The words and the unseen share would then be counted on other tokens than the model's.
        raise DataError(f"{path}: the graph splits texts with another pattern than this code's tokeniser; retrain the model")
    encoders = [
        n
        for n in graph.node
        if n.op_type == "LabelEncoder" and n.domain == ML_DOMAIN and list(n.input[:1]) == [tokenizer.output[0]]
    ]
    if len(encoders) != 1:
        raise DataError(f"{path}: no LabelEncoder of the Tokenizer's tokens in the graph; is it a text model?")
    keys: list[bytes] = next((helper.get_attribute_value(a) for a in encoders[0].attribute if a.name == "keys_strings"), [])
    lowercase = any(
        n.op_type == "StringNormalizer"
        and n.output[0] == tokenizer.input[0]
        and any(a.name == "case_change_action" and helper.get_attribute_value(a) == b"LOWER" for a in n.attribute)
        for n in graph.node
    )
    return ModelVocabulary(frozenset(key.decode() for key in keys) - {PAD}, lowercase)


def predict_labels(onnx_path: str | Path, texts: Sequence[str]) -> np.ndarray:
    """The exported model's labels for raw texts, in batches of ``SCORING_BATCH``."""
    session = ort_session(onnx_path)
    labels = [
        session.run([LABEL], {TEXT_INPUT: np.array(texts[i : i + SCORING_BATCH], dtype=object)})[0]
        for i in range(0, len(texts), SCORING_BATCH)
    ]
    return np.concatenate(labels) if labels else np.array([], dtype=object)


def frame_texts(frame: pd.DataFrame, text_column: str) -> pd.Series:
    """Each row's text (object: str, or None when missing): the source's text column, else the log's ``"text"``."""
    texts = pd.Series(None, index=frame.index, dtype=object)
    for name in dict.fromkeys((text_column, TEXT_INPUT)):
        if name in frame.columns:
            texts = texts.where(texts.notna(), as_texts(frame[name]))
    return texts


def unseen_shares(tokens: Sequence[list[str] | None], vocabulary: frozenset[str]) -> np.ndarray:
    """Per text the share of its tokens not in ``vocabulary`` (NaN: no text, or no token)."""
    shares = np.full(len(tokens), np.nan)
    for i, row in enumerate(tokens):
        if row:
            shares[i] = sum(token not in vocabulary for token in row) / len(row)
    return shares


def predicted_classes(frame: pd.DataFrame, texts: pd.Series, model: Path) -> pd.Series:
    """The class of each row: the service's answer where the log has one, else the model's (missing: no text)."""
    if LOGGED_LABEL in frame.columns:
        predicted = category_text(frame[LOGGED_LABEL])
    else:
        predicted = pd.Series(pd.NA, index=frame.index, dtype="string")
    todo = predicted.isna() & texts.notna()
    if todo.any():
        predicted = predicted.copy()
        predicted[todo] = predict_labels(model, texts[todo].tolist()).astype(str)
    return predicted


def text_columns(frame: pd.DataFrame, text_column: str, model: Path | None = None) -> pd.DataFrame:
    """The drift frame of ``frame``'s texts: ``chars`` and ``words``, and with ``model`` ``oov_share`` and ``predicted``."""
    texts = frame_texts(frame, text_column)
    vocabulary = model_vocabulary(model) if model is not None else None
    lowercase = vocabulary.lowercase if vocabulary is not None else False
    tokens = [split_tokens(text, lowercase) if isinstance(text, str) else None for text in texts]
    columns: dict[str, object] = {
        CHARS: np.array([len(text) if isinstance(text, str) else np.nan for text in texts], dtype=np.float64),
        WORDS: np.array([np.nan if row is None else len(row) for row in tokens], dtype=np.float64),
    }
    if model is not None and vocabulary is not None:
        columns[OOV_SHARE] = unseen_shares(tokens, vocabulary.tokens)
        columns[PREDICTED] = predicted_classes(frame, texts, model)
    return pd.DataFrame(columns, index=frame.index)
