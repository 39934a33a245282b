"""pipeline.core.canon: one category rule, and its column and value forms agree.

``category_text`` (clean, monitoring, scoring), ``category_array`` (the ONNX feed of a DataFrame) and
``category_value`` (the service's JSON fields) must give the same text for the same values, or a
category seen in training becomes a different one at serving time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.canon import category_array, category_text, category_value, is_number_column, number_text, text_value

TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "None", "?")  # params.yaml's clean.missing_tokens

# Lists pandas makes one column of: numbers, text (with missing values), bools.
SAME_TYPE_VALUES = [
    [441, 7, -3, 0],
    [441.0, 3.0, 1.5, -0.0, np.nan, 1e20, 0.1, 1 / 3, 2.0**53, -(2.0**53) + 1, 1e-7, np.inf, -np.inf],
    [2**53, 2**60, -(2**62)],  # an int64 column: compared as float64 like any number
    [2**63 + 5, 2**64 - 1],  # a uint64 column, the same
    [2**70, 1],  # too big for int64: pandas keeps Python ints as objects, so the text rule
    [" a ", "b", "  ", "", "?", "NA", "nan", "null", "None", "x y", "3.0", " 441 "],
    ["a", None, "b", np.nan],
    [True, False],
    [None],
    [np.nan],
    [np.float32(0.1), np.float32(3.0)],
    [np.int64(12), np.int64(-4)],
]


def value_form(values, tokens=()):
    text = [category_value(value, tokens) for value in values]
    return [None if value is None else value for value in text]


def column_form(column: pd.Series, tokens=()):
    return [None if pd.isna(value) else value for value in category_text(column, tokens).tolist()]


@pytest.mark.parametrize("values", SAME_TYPE_VALUES, ids=lambda v: type(v[0]).__name__ + f"x{len(v)}")
@pytest.mark.parametrize("tokens", [(), TOKENS], ids=["no-tokens", "clean-tokens"])
def test_value_form_agrees_with_the_column_pandas_builds_from_the_values(values, tokens):
    column = pd.Series(values)
    assert value_form(values, tokens) == column_form(column, tokens)


@pytest.mark.parametrize("value", [v for values in SAME_TYPE_VALUES for v in values] + [pd.NA, "  x  "], ids=repr)
def test_value_form_agrees_with_its_one_value_column(value):
    assert value_form([value], TOKENS) == column_form(pd.Series([value]), TOKENS)


def test_the_rule_on_the_values_that_matter():
    numbers = pd.Series([441.0, 441, 1.5, 1e20, np.nan, -0.0])
    assert column_form(numbers) == ["441", "441", "1.5", "1e+20", None, "0"]
    assert [category_value(v) for v in (441.0, 441, 1.5, 1e20, -0.0)] == ["441", "441", "1.5", "1e+20", "0"]
    assert [category_value(v, TOKENS) for v in (" a ", "?", "", "nan", None, True)] == ["a", None, None, None, None, "True"]
    assert category_value(float("nan")) is None


def test_an_object_column_mixing_numbers_and_text_uses_the_text_rule():
    # The one case where the forms differ, documented in canon's docstring: a column's dtype decides.
    assert column_form(pd.Series([3.0, "a"], dtype=object)) == ["3.0", "a"]
    assert category_value(3.0) == "3"


@pytest.mark.parametrize(
    "column",
    [
        pd.Series([" a ", None, "?", np.nan, pd.NA, pd.NaT, True, 3.0], dtype=object),
        pd.Series(["a", None, " ?"], dtype="string"),
        pd.Series([1.5, 3.0, np.nan], dtype="category"),
        pd.Series([True, False]),
        pd.Series([True, None], dtype="boolean"),
        pd.Series([3, None], dtype="Int64"),
        pd.Series([3.0, 0.1, None], dtype="Float64"),
        pd.Series([441.0, 1.5, np.nan]),
        pd.Series([0.1, 3.0], dtype="float32"),
        pd.Series([7, 2**60]),
    ],
    ids=lambda c: str(c.dtype),
)
@pytest.mark.parametrize("tokens", [(), TOKENS], ids=["no-tokens", "clean-tokens"])
def test_the_feed_array_is_category_text_with_missing_as_empty_text(column, tokens):
    expected = category_text(column, tokens).fillna("").to_numpy(dtype=object)
    actual = category_array(column, "", tokens)
    assert actual.dtype == object and actual.tolist() == expected.tolist()


def test_text_columns_are_converted_value_by_value():
    column = pd.Series([" a ", None, 3.0, True], dtype=object)
    assert [text_value(v) for v in column] == ["a", None, "3.0", "True"]
    assert [number_text(v) for v in (3.0, 2.0**53, float("inf"), float("nan"))] == ["3", "9007199254740992.0", "inf", None]


@pytest.mark.parametrize(
    "dtype",
    [
        "int64",
        "uint8",
        "float32",
        "Int64",
        "Float64",
        "complex128",
        "bool",
        "boolean",
        "object",
        "string",
        "category",
        "datetime64[ns]",
        "timedelta64[ns]",
    ],
)
def test_number_columns_are_those_pandas_calls_numeric_except_bools(dtype):
    column = pd.Series([], dtype=dtype)
    expected = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    assert is_number_column(column) == expected
