"""The tabular kind's torch-free runtime: raw records -> ONNX feed, an ONNX model wrapper, gate scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.canon import category_array, category_text
from pipeline.core.errors import DataError
from pipeline.core.io import read_table, split_file
from pipeline.kinds.tabular.encoder import MISSING_TEXT
from pipeline.onnxio.card import ModelCard, TabularCard, TabularInput
from pipeline.onnxio.session import ort_session
from pipeline.shared.metrics import label_scores


def onnx_feed(frame: pd.DataFrame, inputs: Sequence[TabularInput]) -> dict[str, np.ndarray]:
    """One [N, 1] array per model input, typed as the model card says (float32 / string).

    Per-column pandas machinery costs ~130 us even for one row, so it is used only where the
    dtype needs it: numbers go straight to float32 and categories take ``category_array`` (the
    training rule; text columns value by value, number columns vectorised for 441.0 -> "441").
    """
    missing = [spec.name for spec in inputs if spec.name not in frame.columns]
    if missing:
        raise DataError(f"data lacks the model's input column(s) {missing}")
    feed = {}
    for spec in inputs:
        column = frame[spec.name]
        if spec.kind == "numeric":
            # numpy or nullable numbers go straight through; bools and text are parsed
            source = column if column.dtype.kind in "iuf" else pd.to_numeric(column, errors="coerce")
            values = source.to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            values = category_array(column, MISSING_TEXT)
        feed[spec.name] = values.reshape(-1, 1)
    return feed


@dataclass
class OnnxModel:
    """A raw-input ONNX model and its card."""

    path: Path
    card: TabularCard
    session: Any

    @classmethod
    def load(cls, onnx_path: str | Path, card_path: str | Path, threads: int | None = None) -> OnnxModel:
        path = Path(onnx_path)
        if not path.exists():
            raise DataError(f"{path}: model not found")
        return cls(path, TabularCard.load(card_path), ort_session(path, threads))

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def predict_proba(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [N, K], labels [N]) for raw rows."""
        probabilities, labels = self.session.run(["probabilities", "label"], onnx_feed(frame, self.card.inputs))
        return probabilities, labels


def labelled_rows(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows that carry a usable label (as canonical text)."""
    if target not in frame.columns:
        return frame.iloc[:0]
    labels = category_text(frame[target])
    return frame.loc[labels.notna()].assign(**{target: labels[labels.notna()]})


def score(model: OnnxModel, frame: pd.DataFrame) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 of the model on labelled rows.

    Labels the model does not know count as errors (it cannot predict them).
    """
    target = model.card.target
    rows = labelled_rows(frame, target)
    if rows.empty:
        raise DataError(f"no labelled rows (column {target!r}) to score the model on")
    _, predicted = model.predict_proba(rows)
    return label_scores(rows[target].to_numpy(), predicted, model.classes)


def score_split(onnx_path: str | Path, card: ModelCard, split_dir: str | Path) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 of an exported tabular model on ``split_dir``'s test rows."""
    path = Path(onnx_path)
    if not path.exists():
        raise DataError(f"{path}: model not found")
    if not isinstance(card, TabularCard):
        raise DataError(f"{path}: the card is of a {card.KIND} model, not a tabular one")
    model = OnnxModel(path, card, ort_session(path))
    return score(model, read_table(split_file(split_dir, "test")))
