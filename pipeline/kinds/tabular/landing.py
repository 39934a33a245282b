"""The tabular kind's check of a landed batch: readable, the source's columns, numbers where the source has them (no torch).

Moving a bad batch to quarantine, and when a screening runs, is the lifecycle's (``pipeline.lifecycle.landing``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core.canon import category_text
from pipeline.core.errors import DataError
from pipeline.kinds.tabular.ingest import check_batch_columns, read_source
from pipeline.params import MISSING_TOKENS, TabularClean, TabularIngest
from pipeline.shared.tables import looks_numeric, outside_range, read_table_file, time_filter, to_numbers


def batch_problems(
    path: Path, expected_columns: list[str], numeric: list[str], cfg: TabularIngest, clean: TabularClean | None = None
) -> list[str]:
    """Why a landed file cannot be used (empty list: it can).

    With ``clean``, a column that has values but none left once cleaned as training rows are (every number
    outside ``clean.valid_ranges``, every category a missing-value token) makes the batch unusable too:
    the drift monitor would compare an empty column, and a retrain would learn nothing from it."""
    try:
        frame = read_table_file(path)
    except DataError as exc:
        return [str(exc).removeprefix(f"{path}: ")]
    problems = check_batch_columns(path, frame, expected_columns, cfg)
    tokens = clean.missing_tokens if clean is not None else MISSING_TOKENS
    text = [
        n
        for n in numeric
        if n in frame.columns and frame[n].notna().any() and not looks_numeric(frame[n], cfg.min_numeric_share, tokens)
    ]
    problems += [f"column {name!r} should be numeric but is mostly text (ingest.min_numeric_share)" for name in text]
    optional = {cfg.target, *cfg.drop_columns}
    checked = [c for c in expected_columns if c in frame.columns and c not in optional]
    empty = [c for c in checked if frame[c].isna().all()]
    if empty:
        problems.append(f"column(s) {empty} have no values at all")
    if clean is not None:  # a column already named above is not named twice
        rest = [c for c in checked if c not in {*text, *empty} and c != cfg.time_column]
        problems += cleaned_away(frame, rest, numeric, clean)
    if cfg.time_column is not None and cfg.time_column in frame.columns:
        try:
            time_filter(frame[[cfg.time_column]], cfg.time_column, time_format=cfg.time_format)
        except DataError as exc:
            problems.append(str(exc))
    return problems


def cleaned_away(frame: pd.DataFrame, columns: list[str], numeric: list[str], clean: TabularClean) -> list[str]:
    """One problem per column of ``columns`` with no value left after clean's row rules (as ``clean`` and
    the drift frame apply them: numbers parsed and range-checked, categories canonical, tokens missing)."""
    problems = []
    for name in columns:
        if name in numeric:
            values, _ = to_numbers(frame[name])
            low, high = clean.valid_ranges.get(name, (None, None))
            if values.mask(outside_range(values, low, high)).isna().all():
                bounds = f"outside clean.valid_ranges [{low}, {high}]" if name in clean.valid_ranges else "not numbers"
                problems.append(f"column {name!r} has no usable value after cleaning (all {len(frame)} {bounds} or missing)")
        elif category_text(frame[name], clean.missing_tokens).isna().all():
            problems.append(f"column {name!r} has no usable value after cleaning (all {len(frame)} are clean.missing_tokens)")
    return problems


def expected_source_columns(cfg: TabularIngest) -> tuple[list[str], list[str]]:
    """Columns a batch must have (those of ingest.source) and those that must be numeric."""
    source = read_source(cfg.source)
    numeric = [
        c
        for c in source.columns
        if c not in cfg.categorical
        and (c in cfg.numeric or looks_numeric(source[c], cfg.min_numeric_share, MISSING_TOKENS))
        and c != cfg.target
    ]
    return list(map(str, source.columns)), numeric
