"""The image kind's drift frame (no torch): per-image statistics, as numbers, in a fixed set of columns.

The rows come from ``pipeline.kinds.image.landing`` (landed batches and the training split) or from the
prediction log (``pipeline.kinds.image.records.log_inputs`` keeps the same statistics of every served
image). A column a source lacks (a log written before sizes were kept) is all-missing here, and the drift
check leaves it out naming it, so one absent statistic never stops the comparison of the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.kinds.image.landing import DRIFT_COLUMNS


def statistics_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``DRIFT_COLUMNS`` of ``frame`` as float64 (text that is no number and infinities missing)."""
    columns = {}
    for name in DRIFT_COLUMNS:
        column = frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)
        columns[name] = pd.to_numeric(column, errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
    return pd.DataFrame(columns, index=frame.index)
