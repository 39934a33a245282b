"""Canonical text of category values: the one rule training, scoring and serving share, so a category means the same everywhere.

The rule (clean writes it into the training data, so the exported model was trained on it):

* a number (int or float, not bool) is taken as float64: a whole number below 2**53 in magnitude is
  written as an integer ("441" for 441 and 441.0), any other number as Python writes the float64
  ("1.5", "1e+20", "inf"); NaN is missing;
* anything else (text, bools, the values of an object, string or categorical column) is its ``str``
  with surrounding whitespace stripped; None, NaN, NaT and pd.NA are missing;
* in both branches, a text equal to one of ``missing_tokens`` is missing.

Which branch applies is decided by a column's dtype (``category_text``, ``category_array``) or by a
value's own type (``category_value``, for JSON fields). The two agree on every column pandas infers
from the values themselves (values of one type, or one value); only an object column that mixes
numbers with text differs: the column is text, so its 3.0 is "3.0" where the JSON number 3.0 is "3".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

_EXACT = 2**53  # beyond this float64 does not hold every integer, so "whole" means nothing
_EXACT_FLOAT = float(_EXACT)  # float-to-float comparisons are the fast ones
# What pandas builds from a Python int: int64 or uint64 (numbers, compared as float64), else an object column (text).
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def is_number_column(column: pd.Series) -> bool:
    """Whether ``column`` takes the number rule: numpy or nullable ints, floats, complex; bools do not."""
    return column.dtype.kind in "iufc"  # what pandas calls numeric, minus bool, without its ~4 us dispatch


def category_text(column: pd.Series, missing_tokens: tuple[str, ...] = ()) -> pd.Series:
    """Canonical text for a categorical column (StringDtype, pd.NA for missing): the rule, vectorised."""
    if is_number_column(column):
        numbers = column.astype("float64")
        integral = np.isfinite(numbers) & (numbers == np.round(numbers)) & (numbers.abs() < _EXACT)
        as_int = numbers.where(integral).astype("Int64").astype("string")
        text = as_int.fillna(numbers.where(~integral & numbers.notna()).astype("string"))
        # A sentinel code ("-1", "999") listed as a missing token is missing in a number column too.
        return text.mask(text.isin(missing_tokens)) if missing_tokens else text
    text = column.astype("string").str.strip()
    if missing_tokens:
        text = text.mask(text.isin(missing_tokens))
    return text


def number_text(number: float) -> str | None:
    """One value of a number column (float64) as ``category_text`` writes it; None for NaN."""
    if -_EXACT_FLOAT < number < _EXACT_FLOAT:  # False for NaN and infinities
        return str(int(number)) if number.is_integer() else str(number)
    return None if number != number else str(number)


def text_value(value: Any, missing_tokens: tuple[str, ...] = ()) -> str | None:
    """One value of a text (object, string, bool, categorical) column as ``category_text`` writes it; None if missing."""
    if isinstance(value, str):
        text = value.strip()
    elif value is None or value is pd.NA or value != value:  # value != value: NaN, NaT
        return None
    else:
        text = str(value).strip()
    return None if text in missing_tokens else text


def category_value(value: Any, missing_tokens: tuple[str, ...] = ()) -> str | None:
    """One value (a JSON field) as ``category_text`` writes the one-value column holding it; None if missing."""
    kind = type(value)  # exact types first: this runs for every field of every request
    if kind is str:
        text: str | None = value.strip()
    elif kind is int and -_EXACT < value < _EXACT:
        text = str(value)
    elif kind is float:
        text = number_text(value)
    elif isinstance(value, float | np.floating):
        text = number_text(float(value))
    elif isinstance(value, int | np.integer) and not isinstance(value, bool) and _INT64_MIN <= int(value) <= _UINT64_MAX:
        number = int(value)
        text = str(number) if -_EXACT < number < _EXACT else number_text(float(number))
    else:
        return text_value(value, missing_tokens)
    return None if text in missing_tokens else text


def category_array(column: pd.Series, missing: str, missing_tokens: tuple[str, ...] = ()) -> np.ndarray:
    """``category_text(column)`` as an object array with ``missing`` in place of missing values.

    A text column is converted value by value: pandas' per-column machinery costs ~130 us even for
    one row, and this feeds single records to the model.
    """
    if is_number_column(column):
        return category_text(column, missing_tokens).fillna(missing).to_numpy(dtype=object)
    return np.array(
        [missing if (text := text_value(value, missing_tokens)) is None else text for value in column.tolist()], dtype=object
    )
