"""Image prepare: fit the normaliser on the real training images, encode the splits as tensors, size the CNN."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import ParamsError
from pipeline.engine import Prepared, Tensors, keeps_encoder
from pipeline.kinds.image import encoder as image_encoder
from pipeline.kinds.image.data import ImageSchema, read_image_schema, read_images, split_path
from pipeline.kinds.image.encoder import ImageNormaliser, label_codes
from pipeline.models import CNNConfig
from pipeline.params import CNNParams, ImageFeatures, Paths, TrainParams

# The code that turns images into tensors: a change to it must not resume an earlier run's checkpoint.
ENCODING_CODE = [Path(__file__), Path(image_encoder.__file__)]


def encode(x: np.ndarray, y: np.ndarray, encoder: ImageNormaliser, channels_last: bool = False) -> Tensors:
    """Tensors for the training loop: inputs (normalised images float32 [N, C, H, W],), labels int64 [N]."""
    images = torch.from_numpy(encoder.transform(x))
    if channels_last:  # once here; index slices of it keep the NHWC order
        images = images.contiguous(memory_format=torch.channels_last)
    return Tensors((images,), torch.from_numpy(label_codes(y, encoder.classes)))


def cnn_config(schema: ImageSchema, cfg: TrainParams) -> CNNConfig:
    """The CNN sized for the images and classes; other architectures are not image models."""
    model = cfg.model
    if not isinstance(model, CNNParams):
        raise ParamsError(
            f"train.model.architecture = {model.architecture!r} is not an image model; use cnn for ingest.kind 'image'"
        )
    return CNNConfig(
        in_channels=schema.channels,
        height=schema.height,
        width=schema.width,
        n_classes=len(schema.classes),
        **model.model_dump(exclude={"architecture"}),
    )


def prepare(features: ImageFeatures, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    """Fit the normaliser on the real training images (or keep a warm start's ``encoder``), encode
    the augmented training and the validation images."""
    schema = read_image_schema(paths.split)
    config = cnn_config(schema, cfg)
    old = ImageNormaliser.from_dict(encoder) if encoder is not None else None
    inputs = ((schema.channels, schema.height, schema.width), tuple(schema.value_range))
    if old is not None and keeps_encoder(old.classes, schema.classes, (tuple(old.shape), tuple(old.value_range)), inputs):
        normaliser = old
    else:
        real_x, _ = read_images(split_path(paths.split, "train"))
        normaliser = ImageNormaliser.fit(real_x, schema, features)
    train_x, train_y = read_images(split_path(paths.augmented, "train"))
    val_x, val_y = read_images(split_path(paths.split, "val"))
    files = [split_path(paths.split, "train"), split_path(paths.split, "val"), split_path(paths.augmented, "train")]
    return Prepared(
        train=encode(train_x, train_y, normaliser, config.channels_last),
        val=encode(val_x, val_y, normaliser, config.channels_last),
        config=config,
        encoder=normaliser.to_dict(),
        config_for=functools.partial(cnn_config, schema),
        data_files=[*files, *ENCODING_CODE],
        task="classification",
    )
