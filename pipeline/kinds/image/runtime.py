"""The image kind's torch-free runtime: gate scores of an exported model.

The service, landing and the drift monitor take tabular data only for now: the other ``KindRuntime``
steps refuse in one line, where they are first reached (the service: when it loads the model)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import FeedSchema, NotSupportedYet
from pipeline.kinds.image.data import IMAGE_INPUT, SCORING_BATCH, read_images, split_path
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


def feed_schema(card: ModelCard) -> NoReturn:
    raise NotSupportedYet("the service cannot score image models yet: it takes tabular models only")


def build_feed(records: Sequence[Any], schema: FeedSchema) -> NoReturn:
    raise NotSupportedYet("the service cannot score image models yet: it takes tabular models only")


def landing_screen(params: Params) -> NoReturn:
    raise NotSupportedYet(f"ingest.kind = {params.ingest.kind!r}: landed data is not screened yet (landing takes tables only)")


def drift_frame(frame: pd.DataFrame, card: ModelCard, params: Params) -> NoReturn:
    raise NotSupportedYet("the drift monitor cannot check image data yet: it checks tables only")
