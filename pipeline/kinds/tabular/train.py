"""Tabular prepare: fit the encoder on the training split, encode every split, describe the network to build.

Memory: the fit reads the training split one column at a time (text columns counted chunk by chunk) and
the splits are encoded a chunk of rows at a time into arrays of the encoded size (memory-mapped,
``host_array``), so the table is never held whole: memory holds one numeric column or one chunk of rows,
beside the encoded splits.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import iter_table, read_column, split_file, table_rows
from pipeline.engine import Prepared, Tensors, keeps_encoder
from pipeline.engine.data import host_array
from pipeline.kinds.tabular import encoder as tabular_encoder
from pipeline.kinds.tabular.encoder import MISSING_TEXT, Preprocessor, category_counts
from pipeline.kinds.tabular.schema import read_schema
from pipeline.models import FTTransformerConfig, ModelConfig
from pipeline.params import FTTransformerParams, MLPParams, Paths, TabularFeatures, TrainParams


def tabular_config(preprocessor: Preprocessor, cfg: TrainParams) -> ModelConfig | FTTransformerConfig:
    """The network ``train.model`` describes, sized for the fitted encoder's inputs and classes (or one output)."""
    shape: dict[str, Any] = dict(
        n_numeric=preprocessor.n_numeric_inputs,
        cardinalities=tuple(preprocessor.cardinalities),
        n_classes=preprocessor.n_outputs,  # a regressor's one value
    )
    model = cfg.model
    if isinstance(model, MLPParams):
        return ModelConfig(
            **shape,
            hidden=model.hidden,
            dropout=model.dropout,
            batch_norm=model.batch_norm,
            categorical_encoding=model.categorical_encoding,
            embedding_dim=model.embedding_dim,
        )
    if isinstance(model, FTTransformerParams):
        return FTTransformerConfig(**shape, **model.model_dump(exclude={"architecture"}))
    raise ParamsError(
        f"train.model.architecture = {model.architecture!r} is not a tabular model; choose mlp or ft_transformer"
    )


def input_columns(preprocessor: Preprocessor) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The numeric and categorical columns an encoder reads, in its order."""
    return tuple(c.name for c in preprocessor.numeric), tuple(c.name for c in preprocessor.categorical)


# Rows encoded at a time: encoding a split of any size holds this many rows of the table (~10 MB of GSS).
ENCODE_ROWS = 65_536


@dataclass(frozen=True)
class FileColumns:
    """A Parquet file's columns as ``Preprocessor.fit`` reads them: each when asked for, so memory holds one
    numeric column (8 bytes a row), never the table; a text column is counted chunk by chunk in Arrow, so
    memory holds its distinct values, never a Python string per row (~80 bytes each in pandas)."""

    path: Path
    rows: int = ENCODE_ROWS

    def column(self, name: str) -> pd.Series:
        return read_column(self.path, name)

    def category_counts(self, name: str) -> dict[str, int]:
        file = pq.ParquetFile(self.path)
        if name not in file.schema_arrow.names:
            raise DataError(f"{self.path}: no column {name!r}")
        kind = file.schema_arrow.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            return category_counts(read_column(self.path, name))  # numbers, categoricals: as pandas writes them
        counts: collections.Counter[str] = collections.Counter()
        for batch in file.iter_batches(batch_size=self.rows, columns=[name]):
            for entry in pc.value_counts(batch.column(0)).to_pylist():
                if entry["values"] is not None and entry["values"] != MISSING_TEXT:
                    counts[entry["values"]] += entry["counts"]
        return dict(counts)


def encoded(frame: pd.DataFrame, preprocessor: Preprocessor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows -> (x_num float32 [N, F], x_cat int64 [N, C], y): class indices int64 [N], or a regression
    target float32 [N, 1] in training stds."""
    x_num, x_cat = preprocessor.transform(frame)
    target = frame[preprocessor.target]
    y = preprocessor.encode_target(target) if preprocessor.regression else preprocessor.encode_labels(target)
    return x_num, x_cat, y


def encode(frame: pd.DataFrame, preprocessor: Preprocessor) -> Tensors:
    """Rows -> tensors (``encoded``)."""
    x_num, x_cat, y = encoded(frame, preprocessor)
    return Tensors.from_numpy((x_num, x_cat), y)


def encode_file(path: Path, preprocessor: Preprocessor, rows: int = ENCODE_ROWS) -> Tensors:
    """A split's Parquet file -> tensors, ``rows`` rows at a time into ``host_array``s of the encoded size.

    Every encoding is row by row, so the tensors equal ``encode`` of the whole file read at once."""
    n = table_rows(path)
    x_num = host_array((n, preprocessor.n_numeric_inputs), np.float32)
    x_cat = host_array((n, len(preprocessor.categorical)), np.int64)
    y = host_array((n, 1), np.float32) if preprocessor.regression else host_array((n,), np.int64)
    start = 0
    for frame in iter_table(path, rows):
        stop = start + len(frame)
        x_num[start:stop], x_cat[start:stop], y[start:stop] = encoded(frame, preprocessor)
        start = stop
    assert start == n, f"{path}: {start} rows read, its footer says {n}"
    return Tensors.from_numpy((x_num, x_cat), y)


def prepare(features: TabularFeatures, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    """Fit the encoder on the real training rows (augmented rows are training-time noise), encode.

    ``encoder``: a warm start's encoder, kept when it still fits (``keeps_encoder``)."""
    schema = read_schema(paths.split)
    old = Preprocessor.from_dict(encoder) if encoder is not None else None
    inputs = (tuple(schema.numeric), tuple(schema.categorical))
    # A regressor's encoder also holds the target scaling; a warm start keeps it only for the same task.
    if old is not None and old.task == schema.task and keeps_encoder(old.classes, schema.classes, input_columns(old), inputs):
        preprocessor = old
    else:
        preprocessor = Preprocessor.fit(FileColumns(split_file(paths.split, "train")), schema, features)
    return Prepared(
        train=encode_file(split_file(paths.augmented, "train"), preprocessor),
        val=encode_file(split_file(paths.split, "val"), preprocessor),
        task=schema.task,
        config=tabular_config(preprocessor, cfg),
        encoder=preprocessor.to_dict(),
        # The encoding code too, so a change to it must not resume an earlier run's checkpoint.
        data_files=[
            split_file(paths.split, "train"),
            split_file(paths.split, "val"),
            split_file(paths.augmented, "train"),
            Path(tabular_encoder.__file__),
            Path(__file__),
        ],
        config_for=functools.partial(tabular_config, preprocessor),
    )
