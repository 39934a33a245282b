"""The tabular data layout: what each column means (``Schema``) and the ``data.parquet`` + ``schema.json`` pair a stage writes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from pipeline.core.io import DATA_FILE, SCHEMA_FILE, read_json, read_table, write_json, write_table
from pipeline.onnxio.card import FORECAST as FORECAST  # a forecast's or regression's output; graph names live with the card

FeatureKind = Literal["numeric", "categorical"]

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Feature:
    name: str
    kind: FeatureKind


@dataclass(frozen=True)
class Schema:
    """What the columns of a table mean: the label, the time column, the features, the task and the classes
    (a regression target has none)."""

    target: str
    features: tuple[Feature, ...]
    time_column: str | None = None
    classes: tuple[str, ...] = ()
    extra_columns: tuple[str, ...] = field(default=())  # kept for splitting (time, group), not features
    # clean's row rules, written by clean so that the encoder and the exported graph apply them to raw
    # inputs too (serving cannot skew): (column, min, max) per valid range, and the missing-value tokens.
    valid_ranges: tuple[tuple[str, float | None, float | None], ...] = ()
    missing_tokens: tuple[str, ...] = ()
    task: Task = "classification"  # decided by ingest (ingest.task), read by every later stage

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def with_classes(self, classes: tuple[str, ...]) -> Schema:
        return replace(self, classes=classes)

    def without(self, columns: list[str]) -> Schema:
        """The schema less some feature columns (clean drops features left without a value)."""
        return replace(self, features=tuple(f for f in self.features if f.name not in columns))

    def with_rules(
        self, valid_ranges: dict[str, tuple[float | None, float | None]], missing_tokens: tuple[str, ...]
    ) -> Schema:
        kept = set(self.numeric)
        ranges = tuple((name, low, high) for name, (low, high) in sorted(valid_ranges.items()) if name in kept)
        return replace(self, valid_ranges=ranges, missing_tokens=tuple(missing_tokens))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.regression:
            # A classifier's schema.json stays as it was before tasks existed (same bytes, same DVC hashes).
            del data["task"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        return cls(
            target=data["target"],
            features=tuple(Feature(**f) for f in data["features"]),
            time_column=data.get("time_column"),
            classes=tuple(data.get("classes", ())),
            extra_columns=tuple(data.get("extra_columns", ())),
            valid_ranges=tuple((name, low, high) for name, low, high in data.get("valid_ranges", ())),
            missing_tokens=tuple(data.get("missing_tokens", ())),
            task=data.get("task", "classification"),
        )


def write_dataset(directory: str | Path, frame: pd.DataFrame, schema: Schema) -> None:
    """A stage's data output: ``data.parquet`` plus the ``schema.json`` that describes it."""
    directory = Path(directory)
    write_table(directory / DATA_FILE, frame)
    write_json(directory / SCHEMA_FILE, schema.to_dict())


def read_dataset(directory: str | Path) -> tuple[pd.DataFrame, Schema]:
    directory = Path(directory)
    return read_table(directory / DATA_FILE), read_schema(directory)


def read_schema(directory: str | Path) -> Schema:
    return Schema.from_dict(read_json(Path(directory) / SCHEMA_FILE))
