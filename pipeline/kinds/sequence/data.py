"""The sequence data layout: a long table's column roles and windowing (``SequenceSchema``) and the
``data.parquet`` + ``schema.json`` pair each stage writes; the names every module of the kind shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from pipeline.core.io import DATA_FILE, SCHEMA_FILE, read_json, read_table, write_json, write_table
from pipeline.onnxio.card import FORECAST as FORECAST  # a forecast's or regression's output; graph names live with the card

KIND = "sequence"
DEFAULT_SERIES = "series"  # the series column added when ingest.series_column is null
WINDOWS_FILE = "train_windows.npz"  # in paths.augmented: the (augmented) training windows
WINDOW_INPUT = "window"  # the ONNX model's input


@dataclass(frozen=True)
class SequenceSchema:
    """The column roles and the windowing of a long table; ``schema.json`` in every stage folder."""

    series_column: str
    time_column: str
    target: str  # the forecast column, or the class label (classify)
    features: tuple[str, ...]  # the window's input columns, in order (forecast: the target first)
    task: Literal["forecast", "classify"]
    lookback: int
    horizon: int
    stride: int
    season_length: int
    frequency: str | int  # a pandas offset alias for datetimes, a number of units for numeric times
    classes: tuple[str, ...] = ()

    @property
    def forecast(self) -> bool:
        return self.task == "forecast"

    @property
    def columns(self) -> list[str]:
        """The long table's columns: series, time, inputs, and the label when it is not an input."""
        return [self.series_column, self.time_column, *self.features] + ([] if self.forecast else [self.target])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceSchema:
        values = {k: v for k, v in data.items() if k != "kind"}
        return cls(**{**values, "features": tuple(values["features"]), "classes": tuple(values.get("classes", ()))})


def read_sequence(directory: str | Path) -> tuple[pd.DataFrame, SequenceSchema]:
    directory = Path(directory)
    return read_table(directory / DATA_FILE), read_sequence_schema(directory)


def read_sequence_schema(directory: str | Path) -> SequenceSchema:
    return SequenceSchema.from_dict(read_json(Path(directory) / SCHEMA_FILE))


def write_sequence(directory: str | Path, frame: pd.DataFrame, schema: SequenceSchema) -> None:
    directory = Path(directory)
    write_table(directory / DATA_FILE, frame)
    write_json(directory / SCHEMA_FILE, schema.to_dict())
