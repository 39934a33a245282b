"""pipeline.kinds.tabular.clean: row-level cleaning of labels, types, ranges and duplicates; every change counted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.canon import category_text
from pipeline.core.errors import DataError
from pipeline.kinds.tabular.clean import clean
from pipeline.kinds.tabular.schema import Feature, Schema
from pipeline.params import TabularClean

SCHEMA = Schema(
    target="label",
    features=(Feature("age", "numeric"), Feature("income", "numeric"), Feature("occ", "categorical")),
)


def small(**keys) -> TabularClean:
    """These tables have a row or two per class: the per-class minimum (its own tests below) is off."""
    return TabularClean(min_class_rows=1, **keys)


def frame(**columns) -> pd.DataFrame:
    """Four valid rows with two classes; keyword arguments replace whole columns."""
    base = {
        "age": [25.0, 35.0, 45.0, 55.0],
        "income": [1000.0, 2000.0, 3000.0, 4000.0],
        "occ": ["a", "b", "a", "b"],
        "label": ["x", "y", "x", "y"],
    }
    base.update(columns)
    return pd.DataFrame(base)


# ---------------------------------------------------------------- labels


def test_missing_and_token_labels_are_dropped_and_counted():
    raw = pd.DataFrame(
        {
            "age": [20.0, 30.0, 40.0, 50.0, 60.0, 70.0],
            "income": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "occ": ["a"] * 6,
            "label": ["x", None, "", " NA ", "y", "x"],
        }
    )

    out, schema, report = clean(raw, SCHEMA, small())

    assert out["label"].tolist() == ["x", "y", "x"]
    assert out["age"].tolist() == [20.0, 60.0, 70.0]
    assert report["dropped"]["missing_label"] == 3
    assert report["dropped"]["invalid_label"] == 0
    assert report["rows_in"] == 6
    assert report["rows_out"] == 3


def test_labels_outside_the_allow_list_are_dropped_and_counted():
    raw = frame(label=["x", "y", "maybe", "x"])

    out, schema, report = clean(raw, SCHEMA, small(labels=("x", "y")))

    assert out["label"].tolist() == ["x", "y", "x"]
    assert report["dropped"]["invalid_label"] == 1
    assert report["dropped"]["missing_label"] == 0
    assert schema.classes == ("x", "y")


def test_numeric_labels_become_canonical_text():
    raw = frame(label=[1.0, 0.0, 1.0, 0.0])

    out, schema, _ = clean(raw, SCHEMA, small(labels=("0", "1")))

    assert out["label"].tolist() == ["1", "0", "1", "0"]
    assert schema.classes == ("0", "1")


# ---------------------------------------------------------------- duplicates


def test_exact_duplicates_are_dropped_and_counted():
    raw = pd.concat([frame(), frame().iloc[[0, 0, 3]]], ignore_index=True)

    out, _, report = clean(raw, SCHEMA, small())

    pd.testing.assert_frame_equal(out[["age", "income"]], frame()[["age", "income"]])
    assert report["dropped"]["duplicate"] == 3
    assert report["rows_out"] == 4


def test_near_duplicates_are_kept():
    raw = pd.concat([frame(), frame().iloc[[0]].assign(income=1000.5)], ignore_index=True)

    out, _, report = clean(raw, SCHEMA, small())

    assert len(out) == 5
    assert report["dropped"]["duplicate"] == 0


def test_duplicates_are_kept_when_switched_off():
    raw = pd.concat([frame(), frame().iloc[[0]]], ignore_index=True)

    out, _, report = clean(raw, SCHEMA, small(drop_duplicates=False))

    assert len(out) == 5
    assert report["dropped"]["duplicate"] == 0


# ---------------------------------------------------------------- types


def test_numeric_text_is_coerced_and_unparseable_values_counted():
    raw = frame(income=["1000", " 2000 ", "lots", "4e3"])

    out, _, report = clean(raw, SCHEMA, small())

    assert out["income"].dtype == "float64"
    np.testing.assert_array_equal(out["income"].to_numpy(), [1000.0, 2000.0, np.nan, 4000.0])
    assert report["set_missing"]["unparseable_or_infinite"] == {"income": 1}
    assert report["missing_share_after"] == {"income": 0.25}


def test_infinities_become_missing_and_are_counted():
    raw = frame(age=[25.0, np.inf, -np.inf, 55.0])

    out, _, report = clean(raw, SCHEMA, small())

    assert out["age"].isna().tolist() == [False, True, True, False]
    assert report["set_missing"]["unparseable_or_infinite"] == {"age": 2}


def test_values_already_missing_are_not_counted_as_changes():
    raw = frame(age=[25.0, np.nan, 45.0, 55.0], occ=["a", None, "a", "b"])

    _, _, report = clean(raw, SCHEMA, small())

    assert report["set_missing"]["unparseable_or_infinite"] == {}


def test_categorical_missing_tokens_become_missing():
    raw = frame(occ=["a", "?", " b ", "N/A"])

    out, _, report = clean(raw, SCHEMA, small())

    assert out["occ"].tolist()[0] == "a"
    assert out["occ"].tolist()[2] == "b"
    assert out["occ"].isna().tolist() == [False, True, False, True]
    assert report["set_missing"]["unparseable_or_infinite"] == {"occ": 2}


def test_categorical_numbers_become_canonical_text():
    raw = frame(occ=[441.0, 5620.0, 441.0, np.nan])

    out, _, _ = clean(raw, SCHEMA, small())

    assert out["occ"].tolist()[:3] == ["441", "5620", "441"]
    assert pd.isna(out["occ"].iloc[3])


def test_category_text_keeps_fractions_and_drops_trailing_zero():
    text = category_text(pd.Series([441.0, 1.5, np.nan, -3.0]))

    assert text.tolist()[:2] == ["441", "1.5"]
    assert pd.isna(text.iloc[2])
    assert text.iloc[3] == "-3"


def test_category_text_of_integers_and_text():
    assert category_text(pd.Series([441, 7])).tolist() == ["441", "7"]
    assert category_text(pd.Series([" a ", "b"])).tolist() == ["a", "b"]


def test_category_text_of_very_large_integral_codes():
    # Beyond 2**53 a float is no longer an exact integer: it keeps float notation instead of crashing.
    text = category_text(pd.Series([1e20, 2.0, 2.5]))

    assert text.tolist() == ["1e+20", "2", "2.5"]


# ---------------------------------------------------------------- ranges


def test_values_outside_valid_ranges_become_missing_and_are_counted():
    raw = frame(age=[10.0, 35.0, 89.0, 120.0], income=[-5.0, 0.0, 3000.0, 4000.0])
    cfg = small(valid_ranges={"age": (18.0, 89.0), "income": (0.0, None)})

    out, _, report = clean(raw, SCHEMA, cfg)

    assert out["age"].isna().tolist() == [True, False, False, True]
    assert out["age"].iloc[2] == 89.0  # bounds are inclusive
    assert out["income"].isna().tolist() == [True, False, False, False]
    assert report["set_missing"]["out_of_range"] == {"age": 2, "income": 1}


def test_valid_range_on_a_non_numeric_column_is_refused_by_name():
    cfg = small(valid_ranges={"occ": (0.0, 10.0)})

    with pytest.raises(DataError) as info:
        clean(frame(), SCHEMA, cfg)

    assert "clean.valid_ranges" in str(info.value)
    assert "'occ'" in str(info.value)
    assert "['age', 'income']" in str(info.value)


def test_valid_range_on_an_unknown_column_is_refused_by_name():
    cfg = small(valid_ranges={"childs": (0.0, 8.0)})

    with pytest.raises(DataError) as info:
        clean(frame(), SCHEMA, cfg)

    assert "'childs'" in str(info.value)


# ---------------------------------------------------------------- classes and the caller's frame


def test_fewer_than_two_classes_is_refused():
    raw = frame(label=["x", "x", None, "NA"])

    with pytest.raises(DataError) as info:
        clean(raw, SCHEMA, small())

    assert "'label'" in str(info.value)
    assert "1 class(es)" in str(info.value)
    assert "at least 2" in str(info.value)


def test_classes_in_the_schema_are_sorted():
    raw = frame(label=["zebra", "ant", "mole", "ant"])

    _, schema, report = clean(raw, SCHEMA, small())

    assert schema.classes == ("ant", "mole", "zebra")
    assert report["classes"] == ["ant", "mole", "zebra"]
    assert schema.features == SCHEMA.features


def test_clean_does_not_mutate_its_input():
    raw = frame(age=[10.0, np.inf, 45.0, 55.0], income=["1", "x", "3", "4"], occ=[1.0, 2.0, 1.0, 2.0])
    raw = pd.concat([raw, raw.iloc[[0]], raw.iloc[[1]].assign(label="NA")], ignore_index=True)
    before = raw.copy(deep=True)

    clean(raw, SCHEMA, small(valid_ranges={"age": (18.0, 89.0)}))

    pd.testing.assert_frame_equal(raw, before)
