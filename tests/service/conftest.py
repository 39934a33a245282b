"""A real small model for the service tests: the pipeline run on a slice, promoted as v0001."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.kinds import training_split_file
from pipeline.lifecycle.registry import Registry
from pipeline.params import load_params
from tests.conftest import copy_repo, edit_params, tool_env

SLICE = {"ingest": {"max_rows": 4000}, "train": {"epochs": 3}, "evaluate": {"baseline_max_iter": 30}}


# Built once per test session, whichever suite asks first: tests/reliability imports the fixture too,
# and pytest would otherwise run the pipeline once per place the fixture is defined.
_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def served_workspace(tmp_path_factory) -> Path:
    """A workspace whose registry has the slice model promoted (v0001) and registered again, int8 served (v0002)."""
    if "root" not in _BUILT:
        _BUILT["root"] = build_served_workspace(tmp_path_factory.mktemp("service"))
    return _BUILT["root"]


def build_served_workspace(destination: Path) -> Path:
    root = copy_repo(destination, **SLICE)
    result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    paths = load_params(root / "params.yaml").paths
    registry = Registry(root / paths.registry)
    files = dict(
        onnx=root / paths.onnx,
        model_card=root / paths.model_card,
        metrics=root / paths.eval_metrics,
        params=root / "params.yaml",
        dvc_lock=root / "dvc.lock",
        reference=root / paths.split / "train.parquet",
    )
    registry.promote(registry.register(**files).number, reason="test fixture")
    # v0002: the same model with its int8 variant chosen for serving, to promote in reload tests.
    registry.register(**files, onnx_int8=root / paths.onnx_int8 / "model.onnx", extra={"serve": "int8"})
    return root


# The other kinds and the tabular regressor: their documented examples on slices (as tests/pipeline/test_*_repro.py),
# promoted as v0001. Built once per session, whichever test asks first.
KIND_EXAMPLES = {
    "image": ("examples/digits/params.yaml", {"ingest": {"max_rows": 600, "min_rows": 100}, "train": {"epochs": 2}}),
    "sequence": (
        "examples/elecdemand/params.yaml",
        {
            "ingest": {"max_rows": 1200, "min_rows": 100},
            "train": {
                "epochs": 2,
                "model": {"architecture": "lstm", "hidden": 16, "layers": 1, "dropout": 0.0, "bidirectional": False},
            },
        },
    ),
    # House prices (a tabular regressor, one value per row) and tweets by device (a small Transformer on raw
    # strings), as tests/pipeline/test_regression_repro.py and test_text_repro.py run them, smaller still.
    "regression": (
        "examples/ames/params.yaml",
        {"ingest": {"max_rows": 800, "min_rows": 100}, "train": {"epochs": 5}, "evaluate": {"baseline_max_iter": 30}},
    ),
    "text": (
        "examples/tweets/params.yaml",
        {
            "ingest": {"max_rows": 1500, "min_rows": 100},
            "features": {"max_length": 32},
            "train": {
                "epochs": 2,
                "warmup_epochs": 0,
                "model": {"architecture": "text_transformer", "d_model": 16, "layers": 1, "heads": 2},
            },
            "evaluate": {"baseline_max_iter": 50},
        },
    ),
}


def kind_workspace(kind: str, tmp_path_factory) -> Path:
    if kind not in _BUILT:
        _BUILT[kind] = build_kind_workspace(tmp_path_factory.mktemp(kind), kind)
    return _BUILT[kind]


@pytest.fixture(scope="session")
def image_workspace(tmp_path_factory) -> Path:
    """A workspace whose registry serves the digits CNN (a 600-image slice, two epochs) as v0001."""
    return kind_workspace("image", tmp_path_factory)


@pytest.fixture(scope="session")
def sequence_workspace(tmp_path_factory) -> Path:
    """A workspace whose registry serves the elecdemand LSTM forecaster (1,200 steps, two epochs) as v0001."""
    return kind_workspace("sequence", tmp_path_factory)


@pytest.fixture(scope="session")
def regression_workspace(tmp_path_factory) -> Path:
    """A workspace whose registry serves the ames house-price MLP regressor (800 rows, five epochs) as v0001."""
    return kind_workspace("regression", tmp_path_factory)


@pytest.fixture(scope="session")
def text_workspace(tmp_path_factory) -> Path:
    """A workspace whose registry serves a tweets-by-device Transformer (1,500 tweets, two epochs) as v0001."""
    return kind_workspace("text", tmp_path_factory)


def build_kind_workspace(destination: Path, kind: str) -> Path:
    example, overrides = KIND_EXAMPLES[kind]
    root = copy_repo(destination)
    shutil.copy(root / example, root / "params.yaml")
    edit_params(root, **overrides)
    result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    paths = load_params(root / "params.yaml").paths
    registry = Registry(root / paths.registry)
    version = registry.register(
        onnx=root / paths.onnx,
        model_card=root / paths.model_card,
        metrics=root / paths.eval_metrics,
        params=root / "params.yaml",
        dvc_lock=root / "dvc.lock",
        reference=training_split_file(root / paths.split),
    )
    registry.promote(version.number, reason="test fixture")
    return root
