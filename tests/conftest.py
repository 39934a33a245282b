"""Shared fixtures: a small learnable table, its schema, and params whose paths point into a temp dir."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.common import Feature, Schema
from pipeline.config import Params, parse_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def raw_params() -> dict:
    """The committed params.yaml as a plain dict (copy before changing it)."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def make_params(raw: dict, tmp_path: Path, **sections) -> Params:
    """The committed params with every path moved under ``tmp_path`` and some sections overridden."""
    data = copy.deepcopy(raw)
    data["paths"] = {key: str(tmp_path / value) for key, value in data["paths"].items()}
    for name, override in sections.items():
        data[name] = {**data.get(name, {}), **override} if isinstance(override, dict) else override
    return parse_params(data)


def make_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Three classes that depend on a numeric and a categorical column, with missing values of both."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue", "violet"], size=n, p=[0.4, 0.3, 0.28, 0.02])
    score = x + np.where(colour == "red", 1.5, 0.0) - np.where(colour == "blue", 1.5, 0.0)
    label = np.where(score > 0.7, "high", np.where(score < -0.7, "low", "mid"))
    noise = rng.uniform(0, 100, size=n)
    frame = pd.DataFrame({"x": x, "noise": noise, "colour": colour, "period": np.repeat(np.arange(10), n // 10 + 1)[:n], "label": label})
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
