"""The image encoder: the per-channel normaliser fitted on the training images, and the label codes (no torch)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.errors import DataError
from pipeline.kinds.image.data import KIND, ImageSchema


def fit_normaliser(x: np.ndarray, schema: ImageSchema) -> dict[str, Any]:
    """Per-channel mean and standard deviation of (real, not augmented) training images: the encoder."""
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    return {
        "kind": KIND, "target": schema.target, "classes": list(schema.classes), "shape": list(schema.shape),
        "value_range": list(schema.value_range), "mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist(),
    }


def normalise(x: np.ndarray, encoder: dict[str, Any]) -> np.ndarray:
    """Raw images [N, C, H, W] -> (x - mean) / std per channel, float32 (the ONNX graph does the same)."""
    mean = np.asarray(encoder["mean"], dtype=np.float32)[None, :, None, None]
    std = np.asarray(encoder["std"], dtype=np.float32)[None, :, None, None]
    return (np.asarray(x, dtype=np.float32) - mean) / std


def label_codes(y: np.ndarray, classes: list[str] | tuple[str, ...]) -> np.ndarray:
    """Class indices int64 [N]; a label outside the classes is a data error."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(y.tolist()) - set(index))
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not among the classes {list(classes)}")
    return np.array([index[v] for v in y.tolist()], dtype=np.int64)
