"""The learned half of clean/impute: imputation, missing indicators, rare-category grouping, scaling.

``Preprocessor.fit`` learns every statistic from the training split only (the kind contract's
``Encoder``, scikit-learn's: fit learns, transform applies, nothing is re-fitted later). The fitted
``Preprocessor`` is plain data, saved as JSON (no pickle) and reused unchanged by evaluate, by export
(which writes the same arithmetic into the ONNX graph) and by serving.

Encoding, per column:
- first clean's row rules, so that raw values meet the same rules in every consumer (the exported
  graph writes them out too): a numeric value that is not finite in float32 or lies outside its
  ``clean.valid_ranges`` bounds is missing, and so is a category equal to a ``clean.missing_tokens`` text;
- numeric: ``x -> (where(isnan(x), fill, x) - mean) / std`` in float32, plus a 0/1 missing
  indicator for columns that had missing values in training;
- categorical: index 0 = rare or unseen category, 1..K = the K categories seen at least
  ``features.rare_min_count`` times, and missing -> K+1 (``constant``) or the most frequent
  category's index (``most_frequent``);
- a regression target: ``y -> (y - target_mean) / target_std`` (training rows' statistics), so the
  network learns values near 0 whatever the units; the exported graph undoes it after the network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.io import read_json
from pipeline.kinds.tabular.schema import Schema, Task
from pipeline.params import TabularFeatures

if TYPE_CHECKING:
    from pipeline.kinds.base import Encoder

RARE_INDEX = 0
# Missing categories travel as empty strings through ONNX (string tensors have no null).
MISSING_TEXT = ""


class Columns(Protocol):
    """The training rows as ``fit`` reads them, one column at a time: a whole numeric column (medians and
    means need every value) or a categorical column's counts (which a file can count chunk by chunk). A
    DataFrame is read through ``FrameColumns``; a Parquet file's reader keeps one column, not the table."""

    def column(self, name: str) -> pd.Series: ...

    def category_counts(self, name: str) -> dict[str, int]:
        """How often each category occurs, missing values and empty text left out (``category_counts``)."""
        ...


@dataclass(frozen=True)
class FrameColumns:
    """The columns of training rows already in memory."""

    frame: pd.DataFrame

    def column(self, name: str) -> pd.Series:
        return self.frame[name]

    def category_counts(self, name: str) -> dict[str, int]:
        return category_counts(self.frame[name])


@dataclass(frozen=True)
class NumericColumn:
    name: str
    fill: float
    mean: float
    std: float
    indicator: bool
    low: float | None = None  # clean.valid_ranges: values outside [low, high] are missing
    high: float | None = None

    def valid(self, x: np.ndarray) -> np.ndarray:
        """float32 values with clean's rules applied: non-finite or out-of-range values become NaN."""
        bad = ~np.isfinite(x)
        with np.errstate(invalid="ignore"):
            if self.low is not None:
                bad |= x < np.float32(self.low)
            if self.high is not None:
                bad |= x > np.float32(self.high)
        return np.where(bad, np.float32(np.nan), x)


@dataclass(frozen=True)
class CategoricalColumn:
    name: str
    vocabulary: tuple[str, ...]
    missing_index: int

    @property
    def cardinality(self) -> int:
        """Rare/unseen + the vocabulary + an own slot for missing (unused under most_frequent)."""
        return len(self.vocabulary) + 2


@dataclass(frozen=True)
class Preprocessor:
    """A fitted, immutable feature encoder; ``transform`` never learns anything."""

    numeric: tuple[NumericColumn, ...]
    categorical: tuple[CategoricalColumn, ...]
    classes: tuple[str, ...]
    target: str
    missing_tokens: tuple[str, ...] = ()  # clean.missing_tokens: a category equal to one is missing
    task: Task = "classification"
    target_mean: float = 0.0  # a regression target's training mean and std (identity for classes)
    target_std: float = 1.0

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def n_outputs(self) -> int:
        """The network's output width: one logit per class, or the one scaled value."""
        return 1 if self.regression else len(self.classes)

    @property
    def n_numeric_inputs(self) -> int:
        return len(self.numeric) + sum(col.indicator for col in self.numeric)

    @property
    def cardinalities(self) -> list[int]:
        return [col.cardinality for col in self.categorical]

    @property
    def input_columns(self) -> list[str]:
        return [col.name for col in self.numeric] + [col.name for col in self.categorical]

    @classmethod
    def fit(cls, train: pd.DataFrame | Columns, schema: Schema, features: TabularFeatures) -> Preprocessor:
        """Learn every encoding statistic from the training rows only, one column at a time."""
        if not schema.classes and not schema.regression:
            raise DataError("schema has no classes; run the clean stage first")
        columns = FrameColumns(train) if isinstance(train, pd.DataFrame) else train
        ranges = {name: (low, high) for name, low, high in schema.valid_ranges}
        target_mean, target_std = fit_target(columns.column(schema.target)) if schema.regression else (0.0, 1.0)
        return cls(
            numeric=tuple(
                fit_numeric(columns.column(name), features, *ranges.get(name, (None, None))) for name in schema.numeric
            ),
            categorical=tuple(fit_vocabulary(name, columns.category_counts(name), features) for name in schema.categorical),
            classes=schema.classes,
            target=schema.target,
            missing_tokens=tuple(dict.fromkeys(t for t in schema.missing_tokens if t != MISSING_TEXT)),
            task=schema.task,
            target_mean=target_mean,
            target_std=target_std,
        )

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Raw columns -> (x_num float32 [N, n_numeric_inputs], x_cat int64 [N, n_categorical])."""
        missing = [name for name in self.input_columns if name not in frame.columns]
        if missing:
            raise DataError(f"input is missing feature column(s) {missing}")
        n = len(frame)
        blocks, indicators = [], []
        for col in self.numeric:
            # float32 first, exactly as the ONNX graph receives it, so both paths round alike.
            with np.errstate(over="ignore"):
                x = col.valid(frame[col.name].to_numpy(dtype=np.float32, na_value=np.nan))
            isnan = np.isnan(x)
            filled = np.where(isnan, np.float32(col.fill), x)
            blocks.append((filled - np.float32(col.mean)) / np.float32(col.std))
            if col.indicator:
                indicators.append(isnan.astype(np.float32))
        x_num = np.stack(blocks + indicators, axis=1).astype(np.float32) if blocks else np.zeros((n, 0), np.float32)
        x_cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, category in enumerate(self.categorical):
            values = frame[category.name].astype("string")
            is_missing = values.isna() | (values == MISSING_TEXT) | values.isin(self.missing_tokens)
            codes = pd.Categorical(values.fillna(MISSING_TEXT), categories=list(category.vocabulary)).codes + 1
            x_cat[:, j] = np.where(is_missing.to_numpy(), category.missing_index, codes)
        return x_num, x_cat

    def encode_labels(self, labels: pd.Series) -> np.ndarray:
        """Class names -> int64 indices into ``classes``; an unknown label is an error."""
        codes = pd.Categorical(labels.astype("string"), categories=list(self.classes)).codes
        if (codes < 0).any():
            unknown = sorted(set(labels[codes < 0].astype(str)))[:5]
            raise DataError(f"labels {unknown} of {self.target!r} are not among the model's classes")
        return codes.astype(np.int64)

    def encode_target(self, values: pd.Series) -> np.ndarray:
        """Regression target values -> float32 [N, 1] in training stds around the training mean."""
        y = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(y).any():
            raise DataError(f"target {self.target!r} has {int(np.isnan(y).sum())} missing or non-numeric value(s)")
        return ((y - self.target_mean) / self.target_std).astype(np.float32).reshape(-1, 1)

    def decode_target(self, scaled: np.ndarray) -> np.ndarray:
        """The network's scaled outputs [N, 1] -> values [N] in the target's units (float32, as the graph computes)."""
        return (scaled.reshape(-1) * np.float32(self.target_std) + np.float32(self.target_mean)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.regression:
            # A classifier's preprocessor.json stays as it was before tasks existed (same bytes, same hashes).
            for key in ("task", "target_mean", "target_std"):
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        return cls(
            numeric=tuple(NumericColumn(**c) for c in data["numeric"]),
            categorical=tuple(
                CategoricalColumn(c["name"], tuple(c["vocabulary"]), c["missing_index"]) for c in data["categorical"]
            ),
            classes=tuple(data["classes"]),
            target=data["target"],
            missing_tokens=tuple(data.get("missing_tokens", ())),
            task=data.get("task", "classification"),
            target_mean=float(data.get("target_mean", 0.0)),
            target_std=float(data.get("target_std", 1.0)),
        )


def fit_target(values: pd.Series) -> tuple[float, float]:
    """A regression target's mean and std on the training rows (std 1 for a constant target)."""
    y = values.astype("float64")
    mean, std = float(y.mean()), float(y.std(ddof=0))
    if not np.isfinite(std) or std < 1e-12:
        std = 1.0
    return mean, std


def _numeric_fill(values: pd.Series, cfg: TabularFeatures) -> float:
    present = values.dropna()
    if present.empty or cfg.numeric_impute == "constant":
        return float(cfg.numeric_fill_value)
    if cfg.numeric_impute == "median":
        return float(present.median())
    if cfg.numeric_impute == "mean":
        return float(present.mean())
    return float(present.mode().iloc[0])  # most_frequent; mode() is sorted, so ties pick the smallest


def fit_numeric(values: pd.Series, cfg: TabularFeatures, low: float | None = None, high: float | None = None) -> NumericColumn:
    """Imputation value, scaling statistics (of the imputed column) and whether to add an indicator;
    ``low`` and ``high`` (clean.valid_ranges) travel with the column so serving applies them."""
    as_float = values.astype("float64")
    fill = _numeric_fill(as_float, cfg)
    imputed = as_float.fillna(fill)
    mean, std = (float(imputed.mean()), float(imputed.std(ddof=0))) if cfg.scale else (0.0, 1.0)
    if not np.isfinite(std) or std < 1e-12:
        std = 1.0  # a constant column carries no information; avoid dividing by zero
    indicator = bool(cfg.missing_indicators and as_float.isna().any())
    return NumericColumn(str(values.name), fill, mean, std, indicator, low, high)


def category_counts(values: pd.Series) -> dict[str, int]:
    """How often each category of a column occurs (as text), missing values and empty text left out."""
    text = values.astype("string")
    return {str(v): int(n) for v, n in text[text.notna() & (text != MISSING_TEXT)].value_counts().items()}


def fit_categorical(values: pd.Series, cfg: TabularFeatures) -> CategoricalColumn:
    """Vocabulary of categories seen often enough; the rest share the rare slot."""
    return fit_vocabulary(str(values.name), category_counts(values), cfg)


def fit_vocabulary(name: str, counts: dict[str, int], cfg: TabularFeatures) -> CategoricalColumn:
    """A categorical column's encoding from its training counts (``category_counts``): the categories seen
    at least ``rare_min_count`` times, and the index a missing value takes."""
    vocabulary = tuple(sorted(v for v, n in counts.items() if n >= cfg.rare_min_count))
    if cfg.categorical_impute == "most_frequent" and counts:
        # The most frequent category; ties go to the first in sorted order, so they resolve the same way every run.
        top = min(counts, key=lambda v: (-counts[v], v))
        missing_index = vocabulary.index(top) + 1 if top in vocabulary else RARE_INDEX
    else:
        missing_index = len(vocabulary) + 1
    return CategoricalColumn(name, vocabulary, missing_index)


def load_preprocessor(path: str | Path) -> Preprocessor:
    return Preprocessor.from_dict(read_json(path))


if TYPE_CHECKING:
    _contract: type[Encoder] = Preprocessor  # mypy: the kind contract's encoder
