"""The image kind's torch-free runtime: gate scores of an exported model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError
from pipeline.kinds.image.data import IMAGE_INPUT, SCORING_BATCH, read_images, split_path
from pipeline.onnxio.card import ImageCard, ModelCard
from pipeline.onnxio.session import ort_session
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
