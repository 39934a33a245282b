"""The image kind's torch-free runtime: gate scores of an exported model, and the service's hooks
(records -> feed, outputs -> answers, what the log keeps: ``pipeline.kinds.image.records``).

Landing and the drift monitor: ``pipeline.kinds.image.landing`` (landed .npz files and ImageFolder folders)
and ``pipeline.kinds.image.drift`` (per-image statistics and, given the production model, its predicted
class); ``score_rows`` measures the production model's accuracy on landed images that carry labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError, ParamsError
from pipeline.kinds.base import PREDICTED, Answers, LandingScreen
from pipeline.kinds.image import landing as image_landing
from pipeline.kinds.image.data import read_images, split_path
from pipeline.kinds.image.drift import bounded, model_labels, predicted_classes, statistics_columns
from pipeline.kinds.image.records import ImageFeedSchema
from pipeline.kinds.image.records import build_feed as build_feed  # KindRuntime.build_feed
from pipeline.kinds.image.records import log_inputs as log_inputs  # KindRuntime.log_inputs
from pipeline.onnxio.card import ImageCard, ModelCard
from pipeline.onnxio.session import ort_session
from pipeline.params import ImageParams, Params
from pipeline.shared.metrics import label_scores


def score_split(onnx_path: str | Path, card: ModelCard, split_dir: str | Path) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and rows of an exported image model on ``split_dir``'s test images."""
    if not isinstance(card, ImageCard):
        raise DataError(f"{onnx_path}: the card is of a {card.KIND} model, not an image one")
    x, y = read_images(split_path(split_dir, "test"))
    expected = list(card.inputs[0].image_shape)
    if list(x.shape[1:]) != expected:
        raise DataError(
            f"{split_path(split_dir, 'test')}: images are {list(x.shape[1:])}, the model {onnx_path} takes {expected}"
        )
    return label_scores(y, model_labels(ort_session(onnx_path), x), list(card.classes))


def feed_schema(card: ModelCard) -> ImageFeedSchema:
    """The card's image shape, mode and raw pixel scale, as ``build_feed`` checks records against them."""
    if not isinstance(card, ImageCard):
        raise DataError(f"the card is of a {card.KIND} model, not an image one")
    return ImageFeedSchema.of(card)


def answer(outputs: Sequence[np.ndarray], records: Sequence[object], schema: ImageFeedSchema) -> Answers:
    """(probabilities [N, K], label [N]) -> each image's label and probabilities by class."""
    probabilities, labels = outputs
    vectors = np.asarray(probabilities).tolist()
    texts = [str(label) for label in labels]
    answers = [{"label": t, "probabilities": dict(zip(schema.classes, v))} for t, v in zip(texts, vectors)]
    return Answers(answers, texts, vectors)


# ---------------------------------------------------------------- landing and the drift monitor (KindRuntime)


def _image_params(params: Params) -> ImageParams:
    if not isinstance(params, ImageParams):
        raise ParamsError(f"ingest.kind = {params.ingest.kind!r}: these params are not an image pipeline's")
    return params


def _image_card(card: ModelCard) -> ImageCard:
    if not isinstance(card, ImageCard):
        raise DataError(f"the card is of a {card.KIND} model, not an image one")
    return card


def landing_screen(params: Params) -> LandingScreen:
    """Landed .npz files and ImageFolder folders, read as ingest reads its source and checked against the
    source's image shape and pixel scale (``pipeline.kinds.image.landing``)."""
    return image_landing.landing_screen(_image_params(params).ingest)


def drift_frame(frame: pd.DataFrame, card: ModelCard, params: Params, model: Path | None = None) -> pd.DataFrame:
    """Per-image brightness, contrast, sharpness, height and width as float64 and, given the production
    model, the class it predicts (``PREDICTED``, text: the logged answer for a logged row, the model run on
    the image for a landed or reference row); where each image lives is dropped (``pipeline.kinds.image.drift``).

    With a model, a frame of more rows than the monitor compares is sampled down to that many first
    (``monitor.reference_sample``/``current_sample``, seeded by ``seed``), so classifying the reference is
    bounded whatever the training split's size."""
    schema = ImageFeedSchema.of(_image_card(card))
    if model is None:
        return statistics_columns(frame)
    image_params = _image_params(params)
    monitor = image_params.monitor
    frame = bounded(frame, max(monitor.reference_sample, monitor.current_sample), image_params.seed)
    columns = statistics_columns(frame)
    columns[PREDICTED] = predicted_classes(frame, schema, image_params.ingest, Path(model))
    return columns


def score_rows(onnx_path: Path, card: ModelCard, frame: pd.DataFrame, params: Params) -> dict[str, float]:
    """The production model's accuracy (balanced accuracy, macro F1) and ``rows`` on the rows of ``frame``
    that carry a label in the card's target (landed .npz ``y``, an ImageFolder's class folder, a late label
    joined into the log's rows); a logged row is scored by the class the service answered. Empty when no
    row carries a label."""
    image_card = _image_card(card)
    if card.target not in frame.columns:
        return {}
    labelled = frame[frame[card.target].notna()]
    if labelled.empty:
        return {}
    schema = ImageFeedSchema.of(image_card)
    predicted = predicted_classes(labelled, schema, _image_params(params).ingest, Path(onnx_path))
    known = predicted.notna().to_numpy()
    if not known.any():
        return {}
    truth = labelled[card.target].astype(str).to_numpy()[known]
    scores = label_scores(truth, predicted.to_numpy(dtype=object)[known], list(image_card.classes))
    return {**scores, "rows": float(scores["rows"])}


def drift_groups(card: ModelCard) -> str | None:
    """No per-group drift check: rows are compared all together (``KindRuntime.drift_groups``)."""
    return None
