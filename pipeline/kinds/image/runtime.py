"""The image kind's torch-free runtime: gate scores of an exported model, and the service's hooks
(records -> feed, outputs -> answers, what the log keeps: ``pipeline.kinds.image.records``).

Landing and the drift monitor: ``pipeline.kinds.image.landing`` (landed .npz files and ImageFolder folders)
and ``pipeline.kinds.image.drift`` (per-image statistics)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import Answers
from pipeline.kinds.image.data import IMAGE_INPUT, SCORING_BATCH, read_images, split_path
from pipeline.kinds.image.records import ImageFeedSchema
from pipeline.kinds.image.records import build_feed as build_feed  # KindRuntime.build_feed
from pipeline.kinds.image.records import log_inputs as log_inputs  # KindRuntime.log_inputs
from pipeline.onnxio.card import ImageCard, ModelCard
from pipeline.onnxio.session import ort_session
from pipeline.params import Params
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
    session = ort_session(onnx_path)
    labels = [session.run(["label"], {IMAGE_INPUT: x[i : i + SCORING_BATCH]})[0] for i in range(0, len(x), SCORING_BATCH)]
    predicted = np.concatenate(labels) if labels else np.array([], dtype=object)
    return label_scores(y, predicted, list(card.classes))


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
# Imported here, not at the top: the service's hooks above are edited by others at the same time.
from pipeline.core.errors import ParamsError  # noqa: E402
from pipeline.kinds.base import LandingScreen  # noqa: E402
from pipeline.kinds.image import landing as image_landing  # noqa: E402
from pipeline.kinds.image.drift import statistics_columns  # noqa: E402
from pipeline.params import ImageParams  # noqa: E402


def landing_screen(params: Params) -> LandingScreen:
    """Landed .npz files and ImageFolder folders, read as ingest reads its source and checked against the
    source's image shape and pixel scale (``pipeline.kinds.image.landing``)."""
    if not isinstance(params, ImageParams):
        raise ParamsError(f"ingest.kind = {params.ingest.kind!r}: these params are not an image pipeline's")
    return image_landing.landing_screen(params.ingest)


def drift_frame(frame: pd.DataFrame, card: ModelCard, params: Params, model: Path | None = None) -> pd.DataFrame:
    """Per-image brightness, contrast, sharpness, height and width as float64 (``pipeline.kinds.image.drift``)."""
    if not isinstance(card, ImageCard):
        raise DataError(f"the card is of a {card.KIND} model, not an image one")
    return statistics_columns(frame)


def score_rows(onnx_path: Path, card: ModelCard, frame: pd.DataFrame, params: Params) -> dict[str, float]:
    """Performance on labelled landed data is not measured for this kind yet: nothing scored."""
    return {}
