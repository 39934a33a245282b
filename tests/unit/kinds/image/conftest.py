"""The image kind's fixtures: params for 600 digits in a temp dir, and a small CNN trained on them once per package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.engine import fit
from pipeline.kinds.image import stages
from pipeline.kinds.image.ingest import load_digits_images
from pipeline.params import Params
from tests.conftest import make_params

IMAGE_INGEST = {
    "kind": "image", "source": "default", "target": "digit", "time_column": None, "time_cutoff": None,
    "drop_columns": [], "categorical": [], "min_rows": 100, "max_rows": 600,
}
QUICK = {
    "architecture": "cnn", "cnn": {"channels": (8, 16)}, "epochs": 3, "batch_size": 64, "lr": 0.01, "warmup_epochs": 0,
    "early_stopping": {"metric": "val_loss", "patience": 5, "min_delta": 0.0},
}


def image_params(raw: dict, tmp_path: Path, ingest: dict | None = None, **sections) -> Params:
    defaults = {"clean": {"valid_ranges": {}}, "split": {"method": "stratified"}}
    return make_params(raw, tmp_path, ingest={**IMAGE_INGEST, **(ingest or {})}, **{**defaults, **sections})


def data_stages(params: Params) -> None:
    stages.ingest(params.ingest, params.paths, params.seed)
    stages.clean(params.clean, params.paths)
    stages.split(params.split, params.paths, params.seed)
    stages.augment(params.augment, params.paths, params.seed)


@pytest.fixture(scope="package")
def trained(raw_params, tmp_path_factory):
    """600 digits through the data stages, a small CNN trained 3 epochs and saved as the train stage does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    params = image_params(raw_params, tmp_path_factory.mktemp("digits"), train=QUICK)
    data_stages(params)
    prepared = stages.prepare(params.features, params.train, params.paths)
    model, best, history = fit(prepared.train, prepared.val, prepared.config, params.train, params.seed, task=prepared.task)
    torch.set_num_threads(threads)
    Path(params.paths.model).parent.mkdir(parents=True, exist_ok=True)
    torch.save(best, params.paths.model)
    Path(params.paths.preprocessor).write_text(json.dumps(prepared.encoder))
    return params, prepared, model, history


@pytest.fixture
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits_images()
    return x[:50], y[:50]
