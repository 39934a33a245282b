"""The sequence kind's test helpers: params for elecdemand (or a long table) in a temp dir, small synthetic series."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.kinds.sequence import stages
from pipeline.kinds.sequence.data import SequenceSchema
from pipeline.params import SequenceParams
from tests.conftest import REPO, make_params

QUICK_INGEST = {"min_rows": 10}
QUICK = {
    "epochs": 2,
    "batch_size": 32,
    "lr": 0.01,
    "warmup_epochs": 0,
    "num_threads": 1,
    "early_stopping": {"metric": "val_mae"},
}


@functools.cache
def elecdemand_raw() -> dict:
    """examples/elecdemand/params.yaml, the complete params of a sequence run (make_params copies it before changing it)."""
    return yaml.safe_load((REPO / "examples/elecdemand/params.yaml").read_text())


def sequence_params(tmp_path: Path, ingest: dict | None = None, **sections) -> SequenceParams:
    """The elecdemand example with its paths under ``tmp_path`` and some sections overridden; no
    ``clean.valid_ranges`` unless given (the example's name elecdemand's columns)."""
    clean = {"valid_ranges": {}, **sections.pop("clean", {})}
    params = make_params(elecdemand_raw(), tmp_path, ingest={**QUICK_INGEST, **(ingest or {})}, clean=clean, **sections)
    assert isinstance(params, SequenceParams)
    return params


def schema_for(**overrides) -> SequenceSchema:
    values = dict(
        series_column="id",
        time_column="t",
        target="y",
        features=("y", "x"),
        task="forecast",
        lookback=3,
        horizon=2,
        stride=1,
        season_length=4,
        frequency=1,
    )
    return SequenceSchema(**{**values, **overrides})


def long_table(n: int = 120, series=("a", "b"), seed: int = 0) -> pd.DataFrame:
    """Series with a period-8 pattern plus noise, and a covariate that leads the value by one step."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, name in enumerate(series):
        t = np.arange(n)
        y = 10 + k + np.sin(2 * np.pi * t / 8) + 0.1 * rng.normal(size=n)
        frames.append(pd.DataFrame({"id": name, "t": t, "y": y, "x": np.roll(y, -1)}))
    return pd.concat(frames, ignore_index=True)


def stage_data(tmp_path: Path, rows: int = 700, **sections) -> SequenceParams:
    """elecdemand's first ``rows`` steps through ingest, clean, split and augment."""
    params = sequence_params(
        tmp_path,
        ingest={"max_rows": rows, "lookback": 24, "horizon": 2, "stride": 2},
        split={"method": "time", "train": 0.6, "val": 0.2, "test": 0.2},
        **sections,
    )
    p = params.paths
    stages.ingest(params.ingest, p, params.seed)
    stages.clean(params.clean, p)
    stages.split(params.split, p, params.seed)
    stages.augment(params.augment, p, params.seed)
    return params
