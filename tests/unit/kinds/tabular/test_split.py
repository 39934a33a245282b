"""pipeline.kinds.tabular.split: every row in exactly one split, by class, by time or by group; errors name the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import DataError
from pipeline.core.io import SPLITS
from pipeline.kinds.tabular.schema import Feature, Schema
from pipeline.kinds.tabular.split import split, summarise
from pipeline.params import SplitParams

SCHEMA = Schema(target="label", features=(Feature("x", "numeric"), Feature("store", "categorical")))
TIME_SCHEMA = Schema(target="label", features=SCHEMA.features, time_column="year", extra_columns=("year",))


def params(method: str = "stratified", **overrides) -> SplitParams:
    values = {"method": method, "train": 0.7, "val": 0.15, "test": 0.15}
    if method == "group":
        values["group_column"] = "store"
    values.update(overrides)
    return SplitParams(**values)


def table(n: int = 200) -> pd.DataFrame:
    """``n`` rows: a row id, 75% / 25% classes, ten years of equal size, twenty stores of unequal size."""
    rng = np.random.default_rng(123)
    return pd.DataFrame(
        {
            "rid": np.arange(n),
            "x": rng.normal(size=n),
            "store": [f"s{i:02d}" for i in rng.integers(0, 20, size=n)],
            "year": 2000 + np.arange(n) * 10 // n,
            "label": np.where(np.arange(n) % 4 == 0, "b", "a"),
        }
    )


def row_ids(parts: dict[str, pd.DataFrame]) -> dict[str, set[int]]:
    return {name: set(part["rid"]) for name, part in parts.items()}


def assert_partition(parts: dict[str, pd.DataFrame], frame: pd.DataFrame) -> None:
    assert set(parts) == set(SPLITS)
    ids = row_ids(parts)
    assert sum(len(part) for part in parts.values()) == len(frame)
    assert not ids["train"] & ids["val"]
    assert not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    assert ids["train"] | ids["val"] | ids["test"] == set(frame["rid"])
    for part in parts.values():
        assert not part.empty
        # Rows are unchanged copies of input rows.
        pd.testing.assert_frame_equal(part, frame.set_index("rid").loc[part["rid"]].reset_index()[frame.columns])


SPLIT_CASES = [
    ("stratified", SCHEMA),
    ("time", TIME_SCHEMA),
    ("group", SCHEMA),
]


@pytest.mark.parametrize(("method", "schema"), SPLIT_CASES)
def test_every_row_lands_in_exactly_one_split(method, schema):
    frame = table()

    parts = split(frame, schema, params(method), seed=7)

    assert_partition(parts, frame)


@pytest.mark.parametrize(("method", "schema"), SPLIT_CASES)
def test_split_is_deterministic_for_a_seed(method, schema):
    frame = table()

    first = split(frame, schema, params(method), seed=7)
    again = split(frame, schema, params(method), seed=7)

    for name in SPLITS:
        pd.testing.assert_frame_equal(first[name], again[name])


@pytest.mark.parametrize(("method", "schema"), [("stratified", SCHEMA), ("group", SCHEMA)])
def test_another_seed_gives_another_split(method, schema):
    frame = table()

    first = row_ids(split(frame, schema, params(method), seed=7))
    other = row_ids(split(frame, schema, params(method), seed=8))

    assert first["train"] != other["train"]


def test_split_does_not_mutate_its_input():
    frame = table()
    before = frame.copy(deep=True)

    for method, schema in SPLIT_CASES:
        split(frame, schema, params(method), seed=7)

    pd.testing.assert_frame_equal(frame, before)


# ---------------------------------------------------------------- stratified


def test_stratified_keeps_class_proportions():
    frame = table(400)

    parts = split(frame, SCHEMA, params(), seed=3)

    assert len(parts["train"]) == pytest.approx(0.7 * 400, abs=2)
    assert len(parts["val"]) == pytest.approx(0.15 * 400, abs=2)
    assert len(parts["test"]) == pytest.approx(0.15 * 400, abs=2)
    for part in parts.values():
        assert (part["label"] == "b").mean() == pytest.approx(0.25, abs=0.02)


def test_stratified_with_too_few_rows_leaves_an_empty_split():
    frame = table(4).assign(label=["a", "a", "b", "b"])

    with pytest.raises(DataError) as info:
        split(frame, SCHEMA, params(), seed=0)

    assert "['test']" in str(info.value)
    assert "empty" in str(info.value)
    assert "4 rows" in str(info.value)


# ---------------------------------------------------------------- time


def test_time_split_puts_recent_periods_in_test_and_old_in_train():
    frame = table()

    parts = split(frame, TIME_SCHEMA, params("time"), seed=0)

    assert parts["train"]["year"].max() < parts["val"]["year"].min()
    assert parts["val"]["year"].max() < parts["test"]["year"].min()
    assert parts["test"]["year"].max() == frame["year"].max()
    assert parts["train"]["year"].min() == frame["year"].min()
    assert sorted(parts["test"]["year"].unique()) == [2008, 2009]
    assert sorted(parts["val"]["year"].unique()) == [2006, 2007]


def test_time_split_never_cuts_a_period():
    rng = np.random.default_rng(5)
    years = rng.choice(np.arange(1990, 2002), size=300)  # unequal periods
    frame = table(300).assign(year=years)

    parts = split(frame, TIME_SCHEMA, params("time"), seed=0)

    assert_partition(parts, frame)
    periods = [set(part["year"]) for part in parts.values()]
    assert not periods[0] & periods[1] and not periods[0] & periods[2] and not periods[1] & periods[2]


def test_time_split_with_dates():
    frame = table().assign(year=lambda f: pd.to_datetime(f["year"].astype(str) + "-07-01"))

    parts = split(frame, TIME_SCHEMA, params("time"), seed=0)

    assert_partition(parts, frame)
    assert parts["val"]["year"].max() < parts["test"]["year"].min()


def test_time_split_needs_a_time_column():
    with pytest.raises(DataError) as info:
        split(table(), SCHEMA, params("time"), seed=0)

    assert "split.method 'time'" in str(info.value)
    assert "ingest.time_column" in str(info.value)


def test_time_split_needs_three_periods():
    frame = table().assign(year=[2000, 2001] * 100)

    with pytest.raises(DataError) as info:
        split(frame, TIME_SCHEMA, params("time"), seed=0)

    assert "at least 3 distinct time values" in str(info.value)
    assert "found 2" in str(info.value)


def test_time_split_that_leaves_train_empty_is_refused():
    # The two recent one-row periods fill test; the big old period is all that is left and goes to val.
    frame = table(12).assign(year=[2000] * 10 + [2001, 2002])

    with pytest.raises(DataError) as info:
        split(frame, TIME_SCHEMA, params("time"), seed=0)

    assert "['train']" in str(info.value)
    assert "empty" in str(info.value)


# ---------------------------------------------------------------- group


def test_group_split_keeps_each_group_in_one_split():
    frame = table(300)

    parts = split(frame, SCHEMA, params("group"), seed=11)

    stores = {name: set(part["store"]) for name, part in parts.items()}
    assert not stores["train"] & stores["val"]
    assert not stores["train"] & stores["test"]
    assert not stores["val"] & stores["test"]
    assert stores["train"] | stores["val"] | stores["test"] == set(frame["store"])


def test_group_split_with_integer_groups():
    frame = table().assign(store=lambda f: f["rid"] % 9)

    parts = split(frame, SCHEMA, params("group"), seed=1)

    assert_partition(parts, frame)
    groups = [set(part["store"]) for part in parts.values()]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]


def test_group_column_must_exist():
    with pytest.raises(DataError) as info:
        split(table(), SCHEMA, params("group", group_column="shop"), seed=0)

    assert "split.group_column 'shop'" in str(info.value)
    assert "not a column" in str(info.value)


def test_group_column_may_not_have_missing_values():
    frame = table()
    frame.loc[[3, 5], "store"] = None

    with pytest.raises(DataError) as info:
        split(frame, SCHEMA, params("group"), seed=0)

    assert "'store'" in str(info.value)
    assert "2 missing values" in str(info.value)


def test_group_split_needs_three_groups():
    frame = table().assign(store=["s1", "s2"] * 100)

    with pytest.raises(DataError) as info:
        split(frame, SCHEMA, params("group"), seed=0)

    assert "at least 3 groups" in str(info.value)
    assert "'store'" in str(info.value)
    assert "found 2" in str(info.value)


# ---------------------------------------------------------------- report


def test_summary_counts_rows_shares_and_classes():
    frame = table()
    parts = split(frame, TIME_SCHEMA, params("time"), seed=0)

    report = summarise(parts, TIME_SCHEMA, params("time"))

    assert report["method"] == "time"
    assert report["rows"] == 200
    assert sum(entry["rows"] for entry in report["splits"].values()) == 200
    assert report["splits"]["test"]["time_range"] == ["2008", "2009"]
    for name, entry in report["splits"].items():
        assert entry["share"] == pytest.approx(len(parts[name]) / 200)
        assert sum(entry["class_balance"].values()) == len(parts[name])


def test_group_column_kept_as_id_is_not_a_feature_and_still_splits():
    from pipeline.kinds.tabular.ingest import ingest
    from pipeline.params import TabularIngest

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "patient": np.repeat([f"p{i}" for i in range(40)], 5),
            "x": rng.normal(size=200),
            "label": rng.choice(["a", "b"], size=200),
        }
    )
    out, schema = ingest(frame, TabularIngest(target="label", id_columns=("patient",), min_rows=10), seed=0)
    assert "patient" not in schema.feature_names and "patient" in schema.extra_columns
    parts = split(
        out,
        schema.with_classes(("a", "b")),
        SplitParams(method="group", train=0.6, val=0.2, test=0.2, group_column="patient"),
        seed=0,
    )
    groups = [set(part["patient"]) for part in parts.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
