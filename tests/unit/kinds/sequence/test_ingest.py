"""Sequence ingest (pipeline/kinds/sequence/ingest.py): elecdemand's time column, long tables, errors naming the key."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.core.errors import DataError, ParamsError
from pipeline.kinds.sequence import ingest
from pipeline.kinds.sequence.data import read_sequence
from tests.unit.kinds.sequence.conftest import long_table, sequence_params


def test_elecdemand_ingest_builds_the_time_column(tmp_path):
    params = sequence_params(tmp_path, ingest={"max_rows": 200})
    report = ingest.run(params.ingest, params.paths, params.seed)
    frame, schema = read_sequence(params.paths.ingested)
    assert report["rows"] == 200 and report["series"] == 1
    assert frame["time"].iloc[0] == pd.Timestamp("2014-01-01 00:00") and frame["time"].iloc[1] == pd.Timestamp(
        "2014-01-01 00:30"
    )
    assert frame["time"].iloc[-1] == pd.Timestamp("2014-01-01") + 199 * pd.Timedelta(minutes=30)
    assert schema.features == ("Demand", "WorkDay", "Temperature")  # the target's history first, then every numeric column
    assert schema.series_column == "series" and set(frame["series"]) == {"elecdemand"}
    assert (
        schema.frequency == "30min" and json.loads((tmp_path / "data/ingested/schema.json").read_text())["kind"] == "sequence"
    )


def test_long_table_ingest_with_two_series(tmp_path):
    table = long_table(30).assign(
        t=lambda f: (pd.Timestamp("2024-03-01") + f["t"] * pd.Timedelta(hours=1)).astype(str), note="x"
    )
    source = tmp_path / "data/raw/long.csv"
    source.parent.mkdir(parents=True)
    table.sample(frac=1.0, random_state=0).to_csv(source, index=False)  # row order does not matter
    params = sequence_params(
        tmp_path,
        ingest={"source": str(source), "target": "y", "time_column": "t", "series_column": "id", "lookback": 4},
    )
    ingest.run(params.ingest, params.paths, params.seed)
    frame, schema = read_sequence(params.paths.ingested)
    assert schema.features == ("y", "x") and schema.frequency == "h"  # the text column is not an input
    assert list(frame.columns) == ["id", "t", "y", "x"]
    assert frame.groupby("id")["t"].apply(lambda t: t.is_monotonic_increasing).all()
    assert frame["id"].value_counts().to_dict() == {"a": 30, "b": 30}


def test_data_errors_name_the_column_or_key(tmp_path):
    params = sequence_params(tmp_path, ingest={"max_rows": 300, "features": ["Demand", "Humidity"]})
    with pytest.raises(DataError, match=r"ingest.features: column\(s\) \['Humidity'\] not in the data"):
        ingest.run(params.ingest, params.paths, params.seed)
    params = sequence_params(tmp_path, ingest={"max_rows": 300, "frequency": "fortnightly-ish"})
    with pytest.raises(ParamsError, match="ingest.frequency = 'fortnightly-ish' is not a pandas frequency"):
        ingest.run(params.ingest, params.paths, params.seed)
