"""The image kind's torch-free half (pipeline/kinds/image/runtime.py) and what the lifecycle reads of image splits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.kinds import training_split_file
from pipeline.kinds.image import runtime
from pipeline.kinds.image.data import split_path, write_images
from pipeline.onnxio.card import parse_card
from tests.unit.onnxio.fixtures import old_card_data


def test_runtime_and_data_layout_import_no_torch():
    code = "import sys, pipeline.kinds.image.runtime, pipeline.kinds.image.data, pipeline.kinds.image.encoder; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_score_split_refuses_images_of_another_shape(tmp_path):
    write_images(split_path(tmp_path, "test"), np.zeros((2, 1, 8, 8), np.float32), np.array(["0", "1"]))
    data = old_card_data("image")
    data["inputs"][0]["shape"] = ["N", 3, 8, 8]
    with pytest.raises(DataError, match=r"test\.npz: images are \[1, 8, 8\], the model model\.onnx takes \[3, 8, 8\]"):
        runtime.score_split("model.onnx", parse_card(data), tmp_path)


def test_score_split_refuses_the_card_of_another_kind(tmp_path):
    with pytest.raises(DataError, match=r"model\.onnx: the card is of a tabular model, not an image one"):
        runtime.score_split("model.onnx", parse_card(old_card_data("tabular")), tmp_path)


def test_the_registry_reference_is_the_training_split_whatever_its_format(tmp_path):
    (tmp_path / "schema.json").write_text("{}")
    (tmp_path / "train.npz").write_bytes(b"")
    (tmp_path / "test.npz").write_bytes(b"")
    assert training_split_file(tmp_path) == tmp_path / "train.npz"
    (tmp_path / "train.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="expected one train"):
        training_split_file(tmp_path)
