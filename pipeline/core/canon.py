"""pipeline.core.canon"""

from __future__ import annotations

import numpy as np
import pandas as pd


def category_text(column: pd.Series, missing_tokens: tuple[str, ...] = ()) -> pd.Series:
    """Canonical text for a categorical column: integral numbers lose their '.0', blanks become missing."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        numbers = column.astype("float64")
        # Whole numbers print without '.0'; beyond 2**53 floats are not exact integers anyway.
        integral = np.isfinite(numbers) & (numbers == np.round(numbers)) & (numbers.abs() < 2**53)
        as_int = numbers.where(integral).astype("Int64").astype("string")
        return as_int.fillna(numbers.where(~integral & numbers.notna()).astype("string"))
    text = column.astype("string").str.strip()
    if missing_tokens:
        text = text.mask(text.isin(missing_tokens))
    return text
