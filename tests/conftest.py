"""Shared fixtures: a small learnable table, its schema, and params whose paths point into a temp dir."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.kinds.tabular.schema import Feature, Schema
from pipeline.params import Params, parse_params

REPO = Path(__file__).resolve().parents[1]

# Sealed from the developer's shell: a test's retrain must never push to a real DVC remote or register test
# models in a shared registry (the tests that use these set them themselves, to folders of their own).
for _shared in ("EVERGREEN_DVC_REMOTE", "EVERGREEN_REGISTRY", "EVERGREEN_DATABASE_URL", "EVERGREEN_TUNE_STORAGE"):
    os.environ.pop(_shared, None)


@pytest.fixture(scope="session")
def raw_params() -> dict:
    """The committed params.yaml as a plain dict (copy before changing it)."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def make_params(raw: dict, tmp_path: Path, **sections) -> Params:
    """The committed params with every path moved under ``tmp_path`` and some sections overridden."""
    data = copy.deepcopy(raw)
    data["paths"] = {key: str(tmp_path / value) for key, value in data["paths"].items()}
    for name, override in sections.items():
        data[name] = merge_section(data.get(name), override)
    return parse_params(data)


def merge_section(base, override):
    """A params section with some keys overridden. ``train.model`` merges key by key for the same
    architecture and is replaced by another architecture's (its keys differ)."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    merged = {**base, **override}
    model, new_model = base.get("model"), override.get("model")
    if (
        isinstance(model, dict)
        and isinstance(new_model, dict)
        and new_model.get("architecture", model.get("architecture")) == model.get("architecture")
    ):
        merged["model"] = {**model, **new_model}
    return merged


def make_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Three classes that depend on a numeric and a categorical column, with missing values of both."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue", "violet"], size=n, p=[0.4, 0.3, 0.28, 0.02])
    score = x + np.where(colour == "red", 1.5, 0.0) - np.where(colour == "blue", 1.5, 0.0)
    label = np.where(score > 0.7, "high", np.where(score < -0.7, "low", "mid"))
    noise = rng.uniform(0, 100, size=n)
    frame = pd.DataFrame(
        {"x": x, "noise": noise, "colour": colour, "period": np.repeat(np.arange(10), n // 10 + 1)[:n], "label": label}
    )
    frame.loc[rng.choice(n, n // 10, replace=False), "x"] = np.nan
    frame.loc[rng.choice(n, n // 20, replace=False), "colour"] = None
    frame["colour"] = frame["colour"].astype("string")
    return frame


@pytest.fixture
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture
def schema() -> Schema:
    return Schema(
        target="label",
        features=(Feature("x", "numeric"), Feature("noise", "numeric"), Feature("colour", "categorical")),
        time_column="period",
        classes=("high", "low", "mid"),
        extra_columns=("period",),
    )


def copy_repo(destination: Path, **param_sections) -> Path:
    """The repo's tracked and new files (no generated outputs) in a fresh git repo, params overridden."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    edit_params(destination, **param_sections)
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qm", "copy"],
    ):
        subprocess.run(["git", *args], cwd=destination, check=True, capture_output=True)
    return destination


def clone_workspace(source: Path, destination: Path) -> Path:
    """A private copy of a prepared workspace (git, DVC cache and outputs included) for one test to change,
    so a fixture can prepare an expensive state once and every test still starts from it."""
    shutil.copytree(source, destination, symlinks=True)
    return destination


def edit_params(root: Path, **sections) -> None:
    """Override keys of params.yaml sections in a copied workspace."""
    if not sections:
        return
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        data[name] = merge_section(data.get(name), values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def tool_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first on PATH, telemetry off."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DO_NOT_TRACK="1", DVC_NO_ANALYTICS="1", ORT_DISABLE_TELEMETRY="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test, as ``train.num_threads: 1`` does in a stage; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres.py): ``postgres.database(prefix)`` gives a new
    database's URL. Skips, saying why, only where no PostgreSQL is installed; stopped and deleted at the end."""
    from tests.postgres import running_cluster, unavailable

    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto, tests/s3.py), the stand-in for object storage; stopped at the end."""
    from tests.s3 import running_server, unavailable

    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with running_server() as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server, with this process's AWS variables pointing at it for the test (s3fs reads them)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server
