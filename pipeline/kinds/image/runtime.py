"""The image kind's torch-free runtime: gate scores of an exported model, and the service's hooks
(records -> feed, outputs -> answers, what the log keeps: ``pipeline.kinds.image.records``).

Landing and the drift monitor take tabular data only for now: those ``KindRuntime`` steps refuse in one
line, where they are first reached."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import Answers, NotSupportedYet
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


def landing_screen(params: Params) -> NoReturn:
    raise NotSupportedYet(f"ingest.kind = {params.ingest.kind!r}: landed data is not screened yet (landing takes tables only)")


def drift_frame(frame: pd.DataFrame, card: ModelCard, params: Params) -> NoReturn:
    raise NotSupportedYet("the drift monitor cannot check image data yet: it checks tables only")
