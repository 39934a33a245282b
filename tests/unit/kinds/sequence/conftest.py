"""The sequence kind's test helpers: params for elecdemand (or a long table) in a temp dir, small synthetic series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.kinds.sequence import stages
from pipeline.kinds.sequence.data import SequenceSchema
from pipeline.params import Params
from tests.conftest import make_params

SEQUENCE_INGEST = {
    "kind": "sequence", "source": "default", "target": "Demand", "time_column": "time", "time_cutoff": None,
    "drop_columns": [], "categorical": [], "min_rows": 10, "max_rows": None,
}
QUICK = {"epochs": 2, "batch_size": 32, "lr": 0.01, "warmup_epochs": 0, "num_threads": 1, "early_stopping": {"metric": "val_mae"}}


def sequence_params(raw_params: dict, tmp_path: Path, ingest: dict | None = None, **sections) -> Params:
    clean = {"valid_ranges": {}, **sections.pop("clean", {})}
    return make_params(raw_params, tmp_path, ingest={**SEQUENCE_INGEST, **(ingest or {})}, clean=clean, **sections)


def schema_for(**overrides) -> SequenceSchema:
    values = dict(series_column="id", time_column="t", target="y", features=("y", "x"), task="forecast",
                  lookback=3, horizon=2, stride=1, season_length=4, frequency=1)
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


def stage_data(raw_params: dict, tmp_path: Path, rows: int = 700, **sections) -> Params:
    """elecdemand's first ``rows`` steps through ingest, clean, split and augment."""
    params = sequence_params(
        raw_params, tmp_path, ingest={"max_rows": rows, "sequence": {"lookback": 24, "horizon": 2, "stride": 2}},
        split={"method": "time", "train": 0.6, "val": 0.2, "test": 0.2}, **sections,
    )
    p = params.paths
    stages.ingest(params.ingest, p, params.seed)
    stages.clean(params.clean, p)
    stages.split(params.split, p, params.seed)
    stages.augment(params.augment, p, params.seed)
    return params
