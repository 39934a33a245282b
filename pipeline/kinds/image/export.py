"""Image export: the CNN with its normaliser and label lookup as one ONNX graph that takes raw pixels, verified.

Inputs:  ``paths.split``/test.npz, ``paths.model``, ``paths.preprocessor``, ``paths.eval_metrics``.
Outputs: ``paths.onnx`` (+ its int8 twin), ``paths.model_card``, ``paths.export_report`` (PyTorch/ONNX parity).
Params:  ``export``.
"""

from __future__ import annotations

from typing import Any

import onnx
import torch

from pipeline.core.io import SPLITS, file_sha256, read_json
from pipeline.kinds.image.data import IMAGE_INPUT, read_images, split_path
from pipeline.kinds.image.encoder import ImageNormaliser, load_normaliser
from pipeline.kinds.image.evaluate import predict_images
from pipeline.models import load_model
from pipeline.onnxio.build import NET_PREFIX, PROBABILITIES, finish_graph, postprocessing_graph, torch_graph
from pipeline.onnxio.card import ImageCard, ImageInput, Normalisation
from pipeline.onnxio.describe import CardFields, card_fields
from pipeline.onnxio.verify import publish, save_models, verify_feed
from pipeline.params import ExportParams, Paths


class RawImages(torch.nn.Module):
    """The normaliser's arithmetic inside the graph, so callers feed pixels as stored."""

    mean: torch.Tensor  # [1, C, 1, 1] buffers
    std: torch.Tensor

    def __init__(self, model: torch.nn.Module, encoder: ImageNormaliser):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(encoder.mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(encoder.std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model((image - self.mean) / self.std), dim=1)


def build_image_onnx(model: torch.nn.Module, encoder: ImageNormaliser, opset: int) -> onnx.ModelProto:
    """One graph: raw images float32 [N, C, H, W] -> per-channel normalisation -> CNN -> softmax ->
    ``probabilities`` [N, K] and ``label`` [N] (the class names)."""
    example = torch.zeros(2, *encoder.shape, dtype=torch.float32)
    net = torch_graph(RawImages(model, encoder), (example,), [IMAGE_INPUT], [f"{NET_PREFIX}{PROBABILITIES}"], opset)
    post = postprocessing_graph(encoder.classes, opset, net.ir_version)
    merged = onnx.compose.merge_models(net, post, io_map=[(f"{NET_PREFIX}{PROBABILITIES}",) * 2])
    return finish_graph(merged, "Raw images [N, C, H, W] -> class probabilities and label (Evergreen)")


def image_card(encoder: ImageNormaliser, common: CardFields) -> ImageCard:
    """The model card of an image model: the shared fields plus the kind, the target and the one input."""
    channels, height, width = encoder.shape
    image = ImageInput(
        name=IMAGE_INPUT,
        kind="image",
        onnx_type="float32",
        shape=("N", channels, height, width),
        layout="NCHW",
        value_range=encoder.value_range,
        channels="grayscale" if channels == 1 else "rgb",
        # Applied inside the graph: feed raw pixels.
        normalisation=Normalisation(mean=encoder.mean, std=encoder.std),
    )
    return ImageCard(**common, kind="image", target=encoder.target, inputs=(image,))


def run(cfg: ExportParams, paths: Paths) -> dict[str, Any]:
    """Export the CNN with its normaliser and label lookup, verify it against PyTorch on the raw test
    images, and write the model (and its int8 twin), the card and the parity report."""
    encoder = load_normaliser(paths.preprocessor)
    model = load_model(paths.model)
    checkpoint = torch.load(paths.model, map_location="cpu", weights_only=True)
    test_x, test_y = read_images(split_path(paths.split, "test"))

    model_bytes = build_image_onnx(model, encoder, cfg.opset).SerializeToString()
    feed = {IMAGE_INPUT: test_x}
    parity = verify_feed(model_bytes, predict_images(model, encoder, test_x), feed, encoder.classes, cfg.tolerance)
    int8, hashes = save_models(model_bytes, cfg, paths, feed, test_y)
    hashes |= {
        **{f"{name}_data_sha256": file_sha256(split_path(paths.split, name)) for name in SPLITS},
        "preprocessor_sha256": file_sha256(paths.preprocessor),
    }
    common = card_fields(encoder.classes, checkpoint, read_json(paths.eval_metrics), hashes, parity, int8)
    return publish(image_card(encoder, common).to_dict(), parity, len(model_bytes), cfg, paths)
