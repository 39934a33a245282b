"""The text kind's encoder: a tokeniser fitted on the training texts only, saved as JSON (no torch).

A text becomes tokens by one regular expression that means the same in Python's ``re`` and in RE2
(the engine of onnxruntime's ``Tokenizer`` operator), so the ONNX graph (``graph.py``) splits every
string exactly as training did: only ASCII character classes and explicit white space, no ``\\w``,
``\\s`` or case folding (both engines read those differently outside ASCII). Lower-casing is ASCII only
for the same reason (onnxruntime's ``StringNormalizer`` in the "C" locale maps A-Z alone). Each code
point outside the classes (an emoji, a non-Latin letter, punctuation) is a token of its own.

Ids: 0 padding, 1 unknown, 2 [CLS] (first in every text), then the vocabulary by training frequency.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.io import read_json
from pipeline.kinds.text.data import KIND, TextSchema
from pipeline.params import TextFeatures

if TYPE_CHECKING:
    from pipeline.kinds.base import Encoder

# A URL's scheme and host (the random path after it is a token of its own, nearly always unknown), a
# word (letters, digits, _ and ', with an @ or # in front for handles and hashtags), or any other
# single code point but white space.
PATTERN = r"[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.\-]+/?|[@#]?[A-Za-z0-9_']+|[^A-Za-z0-9_' \t\n\r\f]"
PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"  # no text splits into these: "<" is a token of its own
SPECIALS = (PAD, UNK, CLS)
PAD_ID, UNK_ID, CLS_ID = 0, 1, 2
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SPLIT = re.compile(PATTERN)


def split_tokens(text: str, lowercase: bool = False) -> list[str]:
    """The tokens of one text, in order (A-Z lower-cased first when ``lowercase``)."""
    return _SPLIT.findall(text.translate(_ASCII_LOWER) if lowercase else text)


@dataclass(frozen=True)
class TextTokenizer:
    """The vocabulary of the (real, not augmented) training texts and how texts are cut: reused unchanged
    by training, evaluate, export (inside the ONNX graph) and a warm start."""

    target: str
    text_column: str
    classes: tuple[str, ...]
    lowercase: bool
    max_length: int  # ids per text, [CLS] included
    vocab: tuple[str, ...]  # ids 3.. in order
    pattern: str = PATTERN

    @classmethod
    def fit(cls, train: Sequence[str], schema: TextSchema, features: TextFeatures) -> TextTokenizer:
        """Count the training texts' tokens; keep those seen ``min_count`` times, the ``max_vocab`` most
        frequent (ties by the token, so the vocabulary is a pure function of the texts)."""
        counts = Counter(token for text in train for token in split_tokens(text, features.lowercase))
        kept = sorted((token for token, n in counts.items() if n >= features.min_count), key=lambda t: (-counts[t], t))
        return cls(
            target=schema.target,
            text_column=schema.text_column,
            classes=tuple(schema.classes),
            lowercase=features.lowercase,
            max_length=features.max_length,
            vocab=tuple(kept[: features.max_vocab]),
        )

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.vocab)

    def tokens(self, text: str) -> list[str]:
        return split_tokens(text, self.lowercase)

    def ids(self, text: str) -> list[int]:
        """[CLS] and the text's token ids (unknown: 1), cut to ``max_length``; no padding."""
        index = self._index
        return [CLS_ID, *(index.get(token, UNK_ID) for token in self.tokens(text))][: self.max_length]

    def transform(self, data: Iterable[str]) -> np.ndarray:
        """Texts -> ids int64 [N, max_length], padded with 0 (the ONNX graph cuts and pads the same way)."""
        rows = [self.ids(text) for text in data]
        out = np.zeros((len(rows), self.max_length), dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    @property
    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {token: i for i, token in enumerate(self.vocab, start=len(SPECIALS))}
            object.__setattr__(self, "_index_cache", cached)  # a frozen dataclass's lazy lookup table
        return cached

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "target": self.target,
            "text_column": self.text_column,
            "classes": list(self.classes),
            "lowercase": self.lowercase,
            "max_length": self.max_length,
            "pattern": self.pattern,
            "specials": list(SPECIALS),
            "vocab": list(self.vocab),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextTokenizer:
        if data.get("kind") != KIND:
            raise DataError(f"preprocessor: kind {data.get('kind')!r} is not a text tokeniser")
        if data.get("pattern") != PATTERN or tuple(data.get("specials", ())) != SPECIALS:
            # Another pattern would cut texts differently from the graph this code builds.
            raise DataError("preprocessor: the tokeniser was saved with another pattern or special tokens; retrain")
        return cls(
            target=data["target"],
            text_column=data["text_column"],
            classes=tuple(data["classes"]),
            lowercase=bool(data["lowercase"]),
            max_length=int(data["max_length"]),
            vocab=tuple(data["vocab"]),
        )


def load_tokenizer(path: str | Path) -> TextTokenizer:
    return TextTokenizer.from_dict(read_json(path))


def label_codes(y: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Class indices int64 [N]; a label outside the classes is a data error naming it."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(y) - set(index))
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not among the classes {list(classes)}")
    return np.array([index[v] for v in y], dtype=np.int64)


if TYPE_CHECKING:
    _contract: type[Encoder] = TextTokenizer  # mypy: the kind contract's encoder
