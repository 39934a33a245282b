"""Sequence split (pipeline/kinds/sequence/split.py): chronological per series, no overlap, context from before."""

from __future__ import annotations

import pytest

from pipeline.core.errors import DataError, ParamsError
from pipeline.kinds.sequence.split import split_frame
from pipeline.kinds.sequence.windows import split_windows
from pipeline.params import SplitParams
from tests.unit.kinds.sequence.conftest import long_table, schema_for


def test_chronological_split_has_no_overlap_and_test_windows_take_context_from_val():
    frame = long_table(100)
    schema = schema_for(lookback=6, horizon=2)
    parts = split_frame(frame, schema, SplitParams(method="time", train=0.6, val=0.2, test=0.2), seed=0)
    for name in ("a", "b"):
        times = {s: parts[s].loc[parts[s]["id"] == name, "t"] for s in parts}
        assert times["train"].max() < times["val"].min() and times["val"].max() < times["test"].min()
        assert sum(len(t) for t in times.values()) == 100
    test = split_windows(parts, "test", schema, stride=1)
    assert len(test) == 2 * (20 - 2 + 1)  # every test origin whose two targets fit, per series
    assert test.time.min() == parts["test"]["t"].min()  # the first window's inputs are the last 6 validation steps
    with pytest.raises(ParamsError, match="split.method = 'stratified' does not apply to sequence forecast data; choose time"):
        split_frame(frame, schema, SplitParams(method="stratified", train=0.6, val=0.2, test=0.2), seed=0)
    with pytest.raises(DataError, match="series 'a' is too short"):
        split_frame(frame, schema_for(lookback=70), SplitParams(method="time", train=0.6, val=0.2, test=0.2), seed=0)
