"""The sequence kind's drift frame (no torch): the distribution of the steps' inputs and target.

Rows are long-table steps (landed batches, or the training split the registry keeps as the reference). The
columns are the model's window inputs (a forecaster's target first) as float64, cleaned with
``clean.valid_ranges`` as training rows were (impossible values and infinities missing); a classifier's
label is compared as a category when the rows carry it. Drift is judged over all series together:
Evidently compares columns, and a column per series would multiply the tests by the series count.
The monitor also checks the largest series one by one, each against its own training steps
(``runtime.drift_groups`` names the series column; ``pipeline.lifecycle.monitoring.group_drift``), as one
series' shift is diluted among the others in the pooled check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.canon import category_text
from pipeline.onnxio.card import SequenceCard
from pipeline.params import SequenceClean


def step_columns(frame: pd.DataFrame, card: SequenceCard, clean: SequenceClean) -> pd.DataFrame:
    """The card's window inputs of ``frame`` as float64 (a missing column all-missing), and a classifier's label."""
    columns: dict[str, pd.Series] = {}
    for name in card.features:
        column = frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)
        values = pd.to_numeric(column, errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
        low, high = clean.valid_ranges.get(name, (None, None))
        if low is not None:
            values = values.mask(values < low)
        if high is not None:
            values = values.mask(values > high)
        columns[name] = values
    if card.sequence_task == "classify" and card.target in frame.columns:
        columns[card.target] = category_text(frame[card.target], clean.missing_tokens)
    return pd.DataFrame(columns, index=frame.index)
