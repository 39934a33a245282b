"""pipeline.kinds.sequence.records: a window's numeric time steps, checked before any int64 arithmetic."""

from __future__ import annotations

import pytest

from pipeline.kinds.base import RecordError
from pipeline.kinds.sequence.records import WindowSchema, check_grid, parse_times

NUMERIC = WindowSchema("series", "t", ("y",), lookback=3, horizon=1, frequency=1, classes=(), forecast=True)


def test_whole_number_steps_on_the_grid_are_taken():
    times = parse_times([7, 8, 9.0], NUMERIC, "record 0")
    check_grid(times, NUMERIC, "record 0")
    assert times.tolist() == [7, 8, 9]


@pytest.mark.parametrize("huge", [2**63 + 5, -(2**64), 1e30])
def test_a_step_beyond_int64_is_a_record_error_not_an_overflow(huge):
    with pytest.raises(RecordError, match=r"record 0: row 1: field 't' = .* is out of range for a time step"):
        parse_times([1, huge, 3], NUMERIC, "record 0")
