"""The image encoder: the per-channel normaliser fitted on the training images, and the label codes (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.io import read_json
from pipeline.kinds.image.data import KIND, ImageSchema
from pipeline.params import ImageFeatures

if TYPE_CHECKING:
    from pipeline.kinds.base import Encoder


@dataclass(frozen=True)
class ImageNormaliser:
    """Per-channel mean and std of the (real, not augmented) training images, with what the images are:
    reused unchanged by evaluate and by export (inside the ONNX graph, so callers feed raw pixels)."""

    target: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]  # channels, height, width
    value_range: tuple[float, float]  # the raw pixel scale
    mean: tuple[float, ...]  # [C]
    std: tuple[float, ...]  # [C], 1 for a constant channel

    @classmethod
    def fit(cls, train: np.ndarray, schema: ImageSchema, features: ImageFeatures) -> ImageNormaliser:
        """Per-channel statistics of the training images ``train`` float32 [N, C, H, W] (``features``: no knobs)."""
        mean = train.mean(axis=(0, 2, 3), dtype=np.float64)
        std = train.std(axis=(0, 2, 3), dtype=np.float64)
        return cls(
            target=schema.target,
            classes=tuple(schema.classes),
            shape=schema.shape,
            value_range=schema.value_range,
            mean=tuple(mean.tolist()),
            std=tuple(np.where(std > 0, std, 1.0).tolist()),
        )

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Raw images [N, C, H, W] -> (x - mean) / std per channel, float32 (the ONNX graph does the same)."""
        mean = np.asarray(self.mean, dtype=np.float32)[None, :, None, None]
        std = np.asarray(self.std, dtype=np.float32)[None, :, None, None]
        return (np.asarray(data, dtype=np.float32) - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "target": self.target,
            "classes": list(self.classes),
            "shape": list(self.shape),
            "value_range": list(self.value_range),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageNormaliser:
        channels, height, width = data["shape"]
        low, high = data["value_range"]
        return cls(
            target=data["target"],
            classes=tuple(data["classes"]),
            shape=(channels, height, width),
            value_range=(low, high),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
        )


def load_normaliser(path: str | Path) -> ImageNormaliser:
    return ImageNormaliser.from_dict(read_json(path))


def label_codes(y: np.ndarray, classes: list[str] | tuple[str, ...]) -> np.ndarray:
    """Class indices int64 [N]; a label outside the classes is a data error."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(y.tolist()) - set(index))
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not among the classes {list(classes)}")
    return np.array([index[v] for v in y.tolist()], dtype=np.int64)


if TYPE_CHECKING:
    _contract: type[Encoder] = ImageNormaliser  # mypy: the kind contract's encoder
