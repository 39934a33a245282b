"""Score raw rows with an exported ONNX model, using only onnxruntime and the model card.

The gate scores champion and challenger with it, the drift monitor scores newly labelled data,
and serving builds on it: nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common import read_json, read_table, split_file
from pipeline.errors import DataError
from pipeline.features import MISSING_TEXT


def ort_session(model: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session with telemetry off and only warnings logged."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is first imported
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _raw_text(value: Any) -> str:
    """One raw category from a text/object column as the model's text (category_text's rule)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return MISSING_TEXT
    return str(value).strip()


def onnx_feed(frame: pd.DataFrame, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One [N, 1] array per model input, typed as the model card says (float32 / string).

    Per-column pandas machinery costs ~130 us even for one row, so it is used only where the
    dtype needs it: numbers go straight to float32, text categories are converted element-wise,
    and number-typed categories keep ``category_text`` for its whole-number rule (441.0 -> "441").
    """
    from pipeline.clean import category_text

    missing = [spec["name"] for spec in inputs if spec["name"] not in frame.columns]
    if missing:
        raise DataError(f"data lacks the model's input column(s) {missing}")
    feed = {}
    for spec in inputs:
        column = frame[spec["name"]]
        numeric_dtype = column.dtype.kind in "iuf"  # numpy or nullable numbers; not bool, not text
        if spec["kind"] == "numeric":
            source = column if numeric_dtype else pd.to_numeric(column, errors="coerce")
            values = source.to_numpy(dtype=np.float32, na_value=np.nan)
        elif numeric_dtype:
            values = category_text(column).fillna(MISSING_TEXT).to_numpy(dtype=object)
        else:
            values = np.array([_raw_text(v) for v in column.tolist()], dtype=object)
        feed[spec["name"]] = values.reshape(-1, 1)
    return feed


@dataclass
class OnnxModel:
    """A raw-input ONNX model and its card."""

    path: Path
    card: dict[str, Any]
    session: Any

    @classmethod
    def load(cls, onnx_path: str | Path, card_path: str | Path, threads: int | None = None) -> OnnxModel:
        path = Path(onnx_path)
        if not path.exists():
            raise DataError(f"{path}: model not found")
        return cls(path, read_json(card_path), ort_session(path, threads))

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    def predict_proba(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [N, K], labels [N]) for raw rows."""
        probabilities, labels = self.session.run(["probabilities", "label"], onnx_feed(frame, self.card["inputs"]))
        return probabilities, labels


def labelled_rows(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows that carry a usable label (as canonical text)."""
    if target not in frame.columns:
        return frame.iloc[:0]
    from pipeline.clean import category_text

    labels = category_text(frame[target])
    return frame.loc[labels.notna()].assign(**{target: labels[labels.notna()]})


def score(model: OnnxModel, frame: pd.DataFrame) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 of the model on labelled rows.

    Labels the model does not know count as errors (it cannot predict them).
    """
    target = model.card["target"]
    rows = labelled_rows(frame, target)
    if rows.empty:
        raise DataError(f"no labelled rows (column {target!r}) to score the model on")
    _, predicted = model.predict_proba(rows)
    return label_scores(rows[target].to_numpy(), predicted, model.classes)


def label_scores(truth, predicted, classes: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and rows of predicted against true labels (text, any data
    kind). Labels the model does not know count as errors (it cannot predict them)."""
    from pipeline.metrics import classification_scores

    names = list(classes) + sorted(set(truth) - set(classes))
    index = {name: i for i, name in enumerate(names)}
    y_true = np.array([index[v] for v in truth], dtype=np.int64)
    y_pred = np.array([index[v] for v in predicted], dtype=np.int64)
    scores = classification_scores(y_true, y_pred, len(names))
    return {"accuracy": scores["accuracy"], "balanced_accuracy": scores["balanced_accuracy"], "macro_f1": scores["macro_f1"], "rows": int(len(truth))}


def score_test(onnx_path: str | Path, card_path: str | Path, split_dir: str | Path) -> dict[str, float]:
    """A model's scores on the test split in ``split_dir``, for the data kind its card names."""
    from pipeline.kinds import TABULAR, kind_module

    card = read_json(card_path)
    if (kind := card.get("kind", TABULAR)) != TABULAR:
        return kind_module(kind).score_split(onnx_path, card, split_dir)
    return score(OnnxModel.load(onnx_path, card_path), read_table(split_file(split_dir, "test")))
