"""Image export (pipeline/kinds/image/export.py) and the gate's scoring (runtime.py): a verified graph on raw pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from pipeline.kinds import score_test
from pipeline.kinds.image import evaluate, export
from pipeline.kinds.image.data import read_images, split_path
from pipeline.kinds.image.encoder import ImageNormaliser
from pipeline.kinds.image.evaluate import predict_images
from pipeline.models import load_model
from pipeline.onnxio.session import ort_session

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_export_is_verified_takes_raw_pixels_and_scores_for_the_gate(trained):
    params, prepared, _, _ = trained
    paths = params.paths
    if not Path(paths.eval_metrics).exists():
        evaluate.run(params.evaluate, paths, params.seed)
    report = export.run(params.export, paths)
    assert report["label_mismatches"] == 0 and report["max_abs_probability_diff"] <= params.export.tolerance

    graph = onnx.load(paths.onnx)
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == ["image"]
    assert [o.name for o in graph.graph.output] == ["probabilities", "label"]
    card = json.loads(Path(paths.model_card).read_text())
    assert card["kind"] == "image" and card["target"] == "digit" and card["inputs"][0]["shape"] == ["N", 1, 8, 8]
    assert card["inputs"][0]["value_range"] == [0.0, 16.0]

    x, y = read_images(split_path(paths.split, "test"))
    probabilities, labels = ort_session(paths.onnx).run(None, {"image": x})
    expected = predict_images(
        load_model(paths.model), ImageNormaliser.from_dict(prepared.encoder), x
    )  # normalised on the PyTorch side
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    scores = score_test(paths.onnx, paths.model_card, paths.split)
    assert scores["rows"] == len(y) and scores["accuracy"] == pytest.approx(float((labels == y).mean()))
    assert scores["accuracy"] == pytest.approx(json.loads(Path(paths.eval_metrics).read_text())["model"]["accuracy"])
    assert math.isclose(report["int8"]["fp32_accuracy"], scores["accuracy"])
