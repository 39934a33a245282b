"""Sequence training inputs (``prepare``): the encoder fitted on the training split's rows only, the
windows normalised, and the LSTM, GRU or Transformer encoder that ``train.model.architecture`` names.

Inputs:  ``paths.split`` (train, val, schema), ``paths.augmented``/train_windows.npz
Outputs: the encoder (saved by the train stage at ``paths.preprocessor``)
Params:  ``features``, ``train``
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import read_table, split_file
from pipeline.engine import Prepared, Tensors, keeps_encoder
from pipeline.kinds.sequence import encoder as encoder_module
from pipeline.kinds.sequence import windows as windows_module
from pipeline.kinds.sequence.data import WINDOWS_FILE, SequenceSchema, read_sequence_schema
from pipeline.kinds.sequence.encoder import SequenceEncoder
from pipeline.kinds.sequence.windows import read_split_windows
from pipeline.models import RNNConfig, SeqTransformerConfig
from pipeline.params import Paths, RNNParams, SeqTransformerParams, SequenceFeatures, TrainParams

SEQUENCE_ARCHITECTURES = ("lstm", "gru", "seq_transformer")


def sequence_config(cfg: TrainParams, schema: SequenceSchema) -> RNNConfig | SeqTransformerConfig:
    """The network ``train.model`` describes, sized for the windows and the outputs."""
    n_outputs = schema.horizon if schema.forecast else len(schema.classes)
    model = cfg.model
    if isinstance(model, RNNParams):
        return RNNConfig(
            input_size=len(schema.features),
            n_outputs=n_outputs,
            cell=model.architecture,
            **model.model_dump(exclude={"architecture"}),
        )
    if isinstance(model, SeqTransformerParams):
        return SeqTransformerConfig(
            input_size=len(schema.features),
            n_outputs=n_outputs,
            lookback=schema.lookback,
            **model.model_dump(exclude={"architecture"}),
        )
    raise ParamsError(
        f"train.model.architecture = {model.architecture!r} is not a sequence model; choose one of {list(SEQUENCE_ARCHITECTURES)}"
    )


def encode_windows(windows_x: np.ndarray, windows_y: np.ndarray, encoder: SequenceEncoder) -> Tensors:
    """Raw windows -> training tensors: inputs (x float32 [N, L, F],), y float32 [N, H] normalised or int64 [N]."""
    y = encoder.encode_target(windows_y) if encoder.schema.forecast else windows_y.astype(np.int64)
    return Tensors((torch.from_numpy(encoder.transform(windows_x)),), torch.from_numpy(y))


def prepare(features: SequenceFeatures, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    """Fit the encoder on the training split's rows (not the augmented windows), or keep a warm
    start's ``encoder``; encode the augmented training windows and the validation windows."""
    schema = read_sequence_schema(paths.split)
    config = sequence_config(cfg, schema)  # fails fast on a tabular architecture
    old = SequenceEncoder.from_dict(encoder) if encoder is not None else None
    # Everything about the windows but the classes: features, lookback, horizon, task, series.
    if old is not None and keeps_encoder(
        old.classes, schema.classes, replace(old.schema, classes=()), replace(schema, classes=())
    ):
        fitted = old
    else:
        fitted = SequenceEncoder.fit(read_table(split_file(paths.split, "train")), schema, features)
    windows_file = Path(paths.augmented) / WINDOWS_FILE
    if not windows_file.exists():
        raise DataError(f"{windows_file}: file not found (run the upstream stage first: dvc repro)")
    with np.load(windows_file) as saved:
        train = encode_windows(saved["x"], saved["y"], fitted)
    val = read_split_windows(paths.split, "val", schema)
    return Prepared(
        train=train,
        val=encode_windows(val.x, val.y, fitted),
        task="regression" if schema.forecast else "classification",
        config=config,
        encoder=fitted.to_dict(),
        config_for=lambda other: sequence_config(other, schema),
        # The code that turns the split into tensors is part of what a resumed run must match.
        data_files=[
            split_file(paths.split, "train"),
            split_file(paths.split, "val"),
            windows_file,
            Path(windows_module.__file__),
            Path(encoder_module.__file__),
            Path(__file__),
        ],
    )
