"""The sequence encoder: per-feature mean and std fitted on the training split's rows only (numpy, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.core.io import read_json
from pipeline.kinds.sequence.data import KIND, SequenceSchema
from pipeline.params import SequenceFeatures

if TYPE_CHECKING:
    from pipeline.kinds.base import Encoder


@dataclass(frozen=True)
class SequenceEncoder:
    """Per-feature mean and std fitted on the training split's rows (``fit``), reused unchanged by
    evaluate, export (inside the ONNX graph) and serving; the target's own for de-normalising forecasts."""

    schema: SequenceSchema
    means: tuple[float, ...]
    stds: tuple[float, ...]
    target_mean: float = 0.0
    target_std: float = 1.0

    @classmethod
    def fit(cls, train: pd.DataFrame, schema: SequenceSchema, features: SequenceFeatures) -> SequenceEncoder:
        """Statistics of the training split's rows (a long table), not of its overlapping windows;
        ``features.scale`` off: the identity (mean 0, std 1)."""
        values = train[list(schema.features)].to_numpy(np.float64)
        means = values.mean(axis=0) if features.scale else np.zeros(values.shape[1])
        stds = values.std(axis=0) if features.scale else np.ones(values.shape[1])
        stds = np.where(stds > 1e-12, stds, 1.0)  # a constant feature is centred, not divided by zero
        target = {}
        if schema.forecast:
            i = schema.features.index(schema.target)
            target = {"target_mean": float(means[i]), "target_std": float(stds[i])}
        return cls(schema, tuple(map(float, means)), tuple(map(float, stds)), **target)

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Raw windows [N, L, F] -> normalised float32."""
        return ((data - np.asarray(self.means)) / np.asarray(self.stds)).astype(np.float32)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.schema.classes

    def encode_target(self, y: np.ndarray) -> np.ndarray:
        return ((y - self.target_mean) / self.target_std).astype(np.float32)

    def decode_target(self, z: np.ndarray) -> np.ndarray:
        return (z * self.target_std + self.target_mean).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "schema": self.schema.to_dict(),
            "means": list(self.means),
            "stds": list(self.stds),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceEncoder:
        return cls(
            SequenceSchema.from_dict(data["schema"]),
            tuple(data["means"]),
            tuple(data["stds"]),
            data["target_mean"],
            data["target_std"],
        )


def load_encoder(path: str | Path) -> SequenceEncoder:
    return SequenceEncoder.from_dict(read_json(path))


if TYPE_CHECKING:
    _contract: type[Encoder] = SequenceEncoder  # mypy: the kind contract's encoder
