"""The text data layout: ``TextSchema`` and the Parquet tables every stage reads and writes (no torch).

Every stage's folder holds one table (``texts.parquet``, or ``train/val/test.parquet`` after split)
with the columns ``ingest`` named (the text, the label, the time when there is one) and a
``schema.json`` with ``"kind": "text"``, those names and, from clean on, the classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.io import SCHEMA_FILE, read_json, read_table, split_file, write_json, write_table

KIND = "text"
TEXTS_FILE = "texts.parquet"
TEXT_INPUT = "text"  # the ONNX model's one input: string [N]
SCORING_BATCH = 1024


@dataclass(frozen=True)
class TextSchema:
    """What a stage's texts are: the text, label and time columns, and the classes (after clean)."""

    text_column: str
    target: str
    time_column: str | None
    classes: tuple[str, ...] = ()
    kind: str = KIND

    @property
    def columns(self) -> list[str]:
        return [self.text_column, self.target, *([self.time_column] if self.time_column else [])]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextSchema:
        return cls(**{**data, "classes": tuple(data.get("classes", ()))})


def read_text_schema(directory: str | Path) -> TextSchema:
    return TextSchema.from_dict(read_json(Path(directory) / SCHEMA_FILE))


def write_dataset(directory: str | Path, frame: pd.DataFrame, schema: TextSchema) -> None:
    write_table(Path(directory) / TEXTS_FILE, frame[schema.columns])
    write_json(Path(directory) / SCHEMA_FILE, schema.to_dict())


def read_dataset(directory: str | Path) -> tuple[pd.DataFrame, TextSchema]:
    return read_table(Path(directory) / TEXTS_FILE), read_text_schema(directory)


def read_split(directory: str | Path, split: str, schema: TextSchema) -> tuple[list[str], list[str]]:
    """The texts and labels of one split (``split_file``: train, val or test)."""
    frame = read_table(split_file(directory, split))
    return frame[schema.text_column].astype(str).tolist(), frame[schema.target].astype(str).tolist()


def class_balance(labels: pd.Series | list[str]) -> dict[str, int]:
    counts = pd.Series(labels, dtype=object).astype(str).value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items())}
