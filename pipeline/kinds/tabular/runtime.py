"""The tabular kind's torch-free runtime (``KindRuntime``): raw records -> ONNX feed, an ONNX model wrapper,
gate scores, the check of a landed batch, and the drift frame."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.canon import category_array, category_text
from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import read_table, split_file
from pipeline.kinds.base import BatchScreen
from pipeline.kinds.tabular.encoder import MISSING_TEXT
from pipeline.kinds.tabular.landing import batch_problems, expected_source_columns
from pipeline.kinds.tabular.records import FeedSchema
from pipeline.kinds.tabular.records import build_feed as build_feed  # KindRuntime.build_feed, as it is (the hot path)
from pipeline.kinds.tabular.schema import FORECAST
from pipeline.onnxio.card import ModelCard, NumericInput, TabularCard, TabularInput
from pipeline.onnxio.session import ort_session
from pipeline.params import Params, TabularClean, TabularParams
from pipeline.shared.metrics import label_scores, regression_scores


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
            with np.errstate(over="ignore"):  # beyond float32 is infinite: the graph's rules make it missing
                values = source.to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            values = category_array(column, MISSING_TEXT)
        feed[spec.name] = values.reshape(-1, 1)
    return feed


def coerced_values(
    frame: pd.DataFrame, feed: dict[str, np.ndarray], inputs: Sequence[TabularInput], missing_tokens: Sequence[str] = ()
) -> dict[str, int]:
    """Per input, how many present raw values the model takes as missing, by training's rules: text that
    is no number, numbers not finite in float32 or outside the column's valid range (the graph's rules),
    and missing-value tokens. Batch scoring reports these counts, so coercion is never silent."""
    tokens = np.array([t for t in missing_tokens if t], dtype=object)
    counts = {}
    for spec in inputs:
        values = feed[spec.name][:, 0]
        if isinstance(spec, NumericInput):
            bad = ~np.isfinite(values)  # NaN: unparseable text; inf: beyond float32
            low, high = spec.valid_range or (None, None)
            with np.errstate(invalid="ignore"):
                if low is not None:
                    bad |= values < np.float32(low)
                if high is not None:
                    bad |= values > np.float32(high)
            count = int((bad & frame[spec.name].notna().to_numpy()).sum())
        else:
            count = int(np.isin(values, tokens).sum()) if len(tokens) else 0
        if count:
            counts[spec.name] = count
    return counts


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


def score_values(model: OnnxModel, frame: pd.DataFrame) -> dict[str, float]:
    """MAE, RMSE and R^2 (in the target's units) of a regressor on the rows whose target is a number."""
    target = model.card.target
    actual = pd.to_numeric(frame[target], errors="coerce") if target in frame.columns else pd.Series(dtype="float64")
    rows = frame.loc[actual.notna()] if target in frame.columns else frame.iloc[:0]
    if rows.empty:
        raise DataError(f"no rows with a numeric target (column {target!r}) to score the model on")
    (predicted,) = model.session.run([FORECAST], onnx_feed(rows, model.card.inputs))
    return regression_scores(actual[actual.notna()].to_numpy(dtype=np.float64), predicted)


def score_split(onnx_path: str | Path, card: ModelCard, split_dir: str | Path) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 of an exported tabular model on ``split_dir``'s test rows
    (a regressor: MAE, RMSE and R^2)."""
    path = Path(onnx_path)
    if not path.exists():
        raise DataError(f"{path}: model not found")
    if not isinstance(card, TabularCard):
        raise DataError(f"{path}: the card is of a {card.KIND} model, not a tabular one")
    model = OnnxModel(path, card, ort_session(path))
    test = read_table(split_file(split_dir, "test"))
    return score_values(model, test) if card.task == "regression" else score(model, test)


def _tabular_card(card: ModelCard) -> TabularCard:
    if not isinstance(card, TabularCard):
        raise DataError(f"the card is of a {card.KIND} model, not a tabular one")
    return card


def _tabular_params(params: Params) -> TabularParams:
    if not isinstance(params, TabularParams):
        raise ParamsError(f"ingest.kind = {params.ingest.kind!r}: these params are not a tabular pipeline's")
    return params


def feed_schema(card: ModelCard) -> FeedSchema:
    """The card's inputs as ``build_feed`` checks records against them (once, when the service loads the model)."""
    return FeedSchema.of(_tabular_card(card))


def landing_screen(params: Params) -> BatchScreen:
    """A landed table's problems against ``ingest.source``'s columns and types (the source is read once, here)."""
    tabular = _tabular_params(params)
    cfg = tabular.ingest
    columns, numeric = expected_source_columns(cfg)

    def problems(path: Path) -> list[str]:
        return batch_problems(path, columns, numeric, cfg, tabular.clean)

    return problems


def as_model_inputs(frame: pd.DataFrame, inputs: Sequence[TabularInput], clean: TabularClean | None = None) -> pd.DataFrame:
    """The model's input columns cleaned as the training rows were: floats (impossible values and
    infinities missing), categories as canonical text (missing-value tokens missing)."""
    clean = clean or TabularClean()
    columns = {}
    for spec in inputs:
        name = spec.name
        column = frame[name] if name in frame.columns else pd.Series(pd.NA, index=frame.index)
        if spec.kind == "numeric":
            values = pd.to_numeric(column, errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
            low, high = clean.valid_ranges.get(name, (None, None))
            if low is not None:
                values = values.mask(values < low)
            if high is not None:
                values = values.mask(values > high)
            columns[name] = values
        else:
            columns[name] = category_text(column, clean.missing_tokens)
    return pd.DataFrame(columns, index=frame.index)


def drift_frame(frame: pd.DataFrame, card: ModelCard, params: Params, model: Path | None = None) -> pd.DataFrame:
    """The model's input columns of ``frame``, cleaned with ``params.clean`` as the training rows were (a table's
    drift is judged on its inputs; ``model`` adds nothing here: accuracy on labelled rows is ``score_rows``)."""
    return as_model_inputs(frame, _tabular_card(card).inputs, _tabular_params(params).clean)


def score_rows(onnx_path: Path, card: ModelCard, frame: pd.DataFrame, params: Params) -> dict[str, float]:
    """The production model on the labelled rows of ``frame``: a classifier's accuracy (balanced accuracy,
    macro F1), a regressor's MAE (RMSE, R^2), with ``rows``; empty when no row carries a usable label."""
    model = OnnxModel(Path(onnx_path), _tabular_card(card), ort_session(onnx_path))
    if model.card.task == "regression":
        actual = pd.to_numeric(frame[card.target], errors="coerce") if card.target in frame.columns else None
        rows = 0 if actual is None else int(actual.notna().sum())
        return {**score_values(model, frame), "rows": float(rows)} if rows else {}
    rows = len(labelled_rows(frame, card.target))
    return {**score(model, frame), "rows": float(rows)} if rows else {}


# ---------------------------------------------------------------- the service's hooks (KindRuntime)
# The per-request hooks live in records.py beside build_feed (one module for the hot path); re-exported as KindRuntime's.
from pipeline.kinds.tabular.records import answer as answer  # noqa: E402
from pipeline.kinds.tabular.records import log_inputs as log_inputs  # noqa: E402


def drift_groups(card: ModelCard) -> str | None:
    """No per-group drift check: rows are compared all together (``KindRuntime.drift_groups``)."""
    return None
