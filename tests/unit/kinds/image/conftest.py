"""The image kind's fixtures: params for 600 digits in a temp dir, and a small CNN trained on them (and
exported) once per package."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.engine import fit
from pipeline.kinds.image import evaluate, export, stages
from pipeline.kinds.image.ingest import load_digits_images
from pipeline.onnxio.card import ImageCard
from pipeline.params import ImageParams
from tests.conftest import REPO, make_params

QUICK_INGEST = {"min_rows": 100, "max_rows": 600}
QUICK = {
    "model": {"architecture": "cnn", "channels": (8, 16)},
    "epochs": 3,
    "batch_size": 64,
    "lr": 0.01,
    "warmup_epochs": 0,
    "early_stopping": {"metric": "val_loss", "patience": 5, "min_delta": 0.0},
}


@functools.cache
def digits_raw() -> dict:
    """examples/digits/params.yaml, the complete params of an image run (make_params copies it before changing it)."""
    return yaml.safe_load((REPO / "examples/digits/params.yaml").read_text())


def image_params(tmp_path: Path, ingest: dict | None = None, **sections) -> ImageParams:
    """The digits example with its paths under ``tmp_path``, a 600-image slice and some sections overridden."""
    params = make_params(digits_raw(), tmp_path, ingest={**QUICK_INGEST, **(ingest or {})}, **sections)
    assert isinstance(params, ImageParams)
    return params


def data_stages(params: ImageParams) -> None:
    stages.ingest(params.ingest, params.paths, params.seed)
    stages.clean(params.clean, params.paths)
    stages.split(params.split, params.paths, params.seed)
    stages.augment(params.augment, params.paths, params.seed)


@pytest.fixture(scope="package")
def trained(tmp_path_factory):
    """600 digits through the data stages, a small CNN trained 3 epochs and saved as the train stage does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    params = image_params(tmp_path_factory.mktemp("digits"), train=QUICK)
    data_stages(params)
    prepared = stages.prepare(params.features, params.train, params.paths)
    model, best, history = fit(prepared.train, prepared.val, prepared.config, params.train, params.seed, task=prepared.task)
    torch.set_num_threads(threads)
    Path(params.paths.model).parent.mkdir(parents=True, exist_ok=True)
    torch.save(best, params.paths.model)
    Path(params.paths.preprocessor).write_text(json.dumps(prepared.encoder))
    return params, prepared, model, history


@pytest.fixture(scope="package")
def exported(trained, tmp_path_factory) -> tuple[ImageParams, Path, ImageCard]:
    """The trained CNN evaluated and exported as the stages do (a verified ONNX file and its card), copied
    aside so a test that exports again cannot change it: (params, model.onnx, card)."""
    params = trained[0]
    paths = params.paths
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if not Path(paths.eval_metrics).exists():
            evaluate.run(params.evaluate, paths, params.seed)
        export.run(params.export, paths)
    finally:
        torch.set_num_threads(threads)
    aside = tmp_path_factory.mktemp("exported")
    (aside / "model.onnx").write_bytes(Path(paths.onnx).read_bytes())
    return params, aside / "model.onnx", ImageCard.load(paths.model_card)


@pytest.fixture
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits_images()
    return x[:50], y[:50]
