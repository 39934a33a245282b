"""Sequence clean (pipeline/kinds/sequence/clean.py): gaps filled within a series, bad series named or dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import DataError
from pipeline.kinds.sequence.clean import clean_frame, series_labels
from pipeline.params import SequenceClean
from tests.unit.kinds.sequence.conftest import long_table, schema_for


def _clean(frame, **clean):
    schema = schema_for(frequency=1)
    return clean_frame(frame, schema, SequenceClean.model_validate(clean))


def test_clean_imputes_within_each_series_and_reports():
    frame = long_table(20)
    frame.loc[5, "y"] = np.nan  # a gap inside series a
    frame = frame.drop(index=9)  # a missing time step in series a
    frame = pd.concat([frame, frame.iloc[[3]].assign(y=99.0)])  # a duplicate timestamp: the later row wins
    frame.loc[20, "y"] = np.nan  # series b starts with a missing value: nothing before it to fill from
    frame["x"] = frame["x"].astype(object)
    frame.loc[12, "x"] = "oops"
    out, _, report = _clean(frame)
    a = out[out["id"] == "a"].set_index("t")
    assert a.loc[5, "y"] == pytest.approx((a.loc[4, "y"] + a.loc[6, "y"]) / 2)  # linear in time
    assert list(a.index) == list(range(20)) and a.loc[3, "y"] == 99.0
    assert report["duplicate_timestamps"] == 1 and report["inserted_steps"] == 1
    assert report["set_missing"]["unparseable_or_infinite"] == {"x": 1}
    assert report["imputed"] == {"y": 2, "x": 2}  # y: the gap and the inserted step; x: "oops" and the inserted step
    assert report["trimmed_steps"] == 1 and out[out["id"] == "b"]["t"].min() == 1  # never filled across series
    assert not out[["y", "x"]].isna().any().any()


def test_a_series_with_too_many_missing_values_is_named_or_dropped():
    frame = long_table(20)
    frame.loc[frame["id"] == "b", "y"] = np.where(np.arange(20) % 2, np.nan, 1.0)
    with pytest.raises(DataError, match=r"series 'b': 50\.0% of its steps miss a value"):
        _clean(frame, max_missing_share=0.2)
    out, _, report = _clean(frame, max_missing_share=0.2, bad_series="drop")
    assert set(out["id"]) == {"a"} and "b" in report["dropped_series"]
    with pytest.raises(DataError, match=r"series 'b': a gap of 3 steps is longer than clean.limit = 2"):
        gappy = long_table(20)
        gappy.loc[(gappy["id"] == "b") & gappy["t"].between(5, 7), "y"] = np.nan
        _clean(gappy, limit=2)


def test_a_class_label_must_be_constant_per_series():
    with pytest.raises(DataError, match=r"series 'b' has 2 labels \['p', 'q'\] in 'y'"):
        frame = long_table(10).assign(y=lambda f: np.where((f["id"] == "b") & (f["t"] > 4), "q", "p"))
        series_labels(frame, schema_for(task="classify", features=("x",), horizon=0), SequenceClean())
