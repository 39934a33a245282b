"""Tabular prepare: fit the encoder on the training split, encode every split, describe the network to build."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pipeline.core.errors import ParamsError
from pipeline.core.io import read_table, split_file
from pipeline.engine import Prepared, Tensors, keeps_encoder
from pipeline.kinds.tabular import encoder as tabular_encoder
from pipeline.kinds.tabular.encoder import Preprocessor
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


def encode(frame: pd.DataFrame, preprocessor: Preprocessor) -> Tensors:
    """Rows -> tensors: class indices int64 [N], or a regression target float32 [N, 1] in training stds."""
    if not preprocessor.regression:
        return Tensors.encode(frame, preprocessor)
    x_num, x_cat = preprocessor.transform(frame)
    y = preprocessor.encode_target(frame[preprocessor.target])
    return Tensors((torch.from_numpy(x_num), torch.from_numpy(x_cat)), torch.from_numpy(y))


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
        preprocessor = Preprocessor.fit(read_table(split_file(paths.split, "train")), schema, features)
    return Prepared(
        train=encode(read_table(split_file(paths.augmented, "train")), preprocessor),
        val=encode(read_table(split_file(paths.split, "val")), preprocessor),
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
