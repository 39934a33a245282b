"""Tabular clean: row-level cleaning that learns nothing from the data.

Drops rows with a missing or invalid label (a regression target: missing, not a number, or outside
its ``clean.valid_ranges`` bounds) and exact duplicates, coerces every feature to its
schema type (numbers to float, categories to text), and turns impossible values (outside
``clean.valid_ranges``, infinities, missing-value tokens) into missing. The learned half of
clean/impute - imputation values, rare-category grouping, scaling - is fitted on the training
split only (``pipeline.kinds.tabular.encoder``, inside train), so no statistic comes from validation or test rows.

Inputs:  ``paths.ingested``
Outputs: ``paths.clean`` (data.parquet, schema.json with the classes: none for a regression), ``paths.clean_report``
Params:  ``clean``
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from pipeline.core.canon import category_text, is_number_column
from pipeline.core.errors import DataError
from pipeline.core.io import write_json
from pipeline.kinds.tabular.schema import Schema, read_dataset, write_dataset
from pipeline.params import Paths, TabularClean
from pipeline.shared.tables import outside_range, to_numbers

log = logging.getLogger(__name__)


def clean_labels(frame: pd.DataFrame, schema: Schema, cfg: TabularClean) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop rows whose label is missing, a missing-value token, or outside ``clean.labels``."""
    labels = category_text(frame[schema.target], cfg.missing_tokens)
    missing = labels.isna()
    invalid = ~missing & ~labels.isin(cfg.labels) if cfg.labels is not None else pd.Series(False, index=labels.index)
    keep = ~(missing | invalid)
    out = frame.loc[keep].assign(**{schema.target: labels[keep]})
    return out, {"missing_label": int(missing.sum()), "invalid_label": int(invalid.sum())}


def clean_target_values(frame: pd.DataFrame, schema: Schema, cfg: TabularClean) -> tuple[pd.DataFrame, dict[str, int]]:
    """A regression target: drop rows whose value is missing, not a number (or infinite), or outside its
    ``clean.valid_ranges`` bounds; the rest become float64. Each reason is counted."""
    raw = frame[schema.target]
    values, not_a_number = to_numbers(raw, cfg.missing_tokens)
    low, high = cfg.valid_ranges.get(schema.target, (None, None))
    outside = outside_range(values, low, high)
    missing = values.isna()
    keep = ~(missing | outside)
    counts = {
        "missing_target": int(missing.sum()) - not_a_number,
        "not_a_number_target": not_a_number,
        "out_of_range_target": int(outside.sum()),
    }
    return frame.loc[keep].assign(**{schema.target: values[keep]}), counts


def coerce_types(frame: pd.DataFrame, schema: Schema, cfg: TabularClean) -> tuple[pd.DataFrame, dict[str, int]]:
    """Numbers to float64 (unparseable text and infinities become missing), categories to text."""
    changed: dict[str, int] = {}
    columns = {}
    for name in schema.numeric:
        columns[name], changed[name] = to_numbers(frame[name], cfg.missing_tokens)
    for name in schema.categorical:
        before = frame[name]
        text = category_text(before, cfg.missing_tokens)
        changed[name] = int((text.isna() & before.notna()).sum())
        columns[name] = text
    return frame.assign(**columns), {k: v for k, v in changed.items() if v}


def apply_ranges(frame: pd.DataFrame, schema: Schema, cfg: TabularClean) -> tuple[pd.DataFrame, dict[str, int]]:
    """Values outside ``clean.valid_ranges`` are impossible: make them missing, count them (a regression
    target's range drops its rows instead: ``clean_target_values``)."""
    numeric = set(schema.numeric)
    allowed = numeric | ({schema.target} if schema.regression else set())
    for name in cfg.valid_ranges:
        if name not in allowed:
            raise DataError(f"clean.valid_ranges: {name!r} is not a numeric feature; numeric features are {sorted(numeric)}")
    columns, counts = {}, {}
    for name, (low, high) in cfg.valid_ranges.items():
        if name not in numeric:
            continue  # the regression target
        outside = outside_range(frame[name], low, high)
        columns[name] = frame[name].mask(outside)
        counts[name] = int(outside.sum())
    return frame.assign(**columns), counts


def empty_features(frame: pd.DataFrame, schema: Schema, cfg: TabularClean) -> list[str]:
    """Features with no value left (all missing, unparseable, infinite or out of range): nothing to learn or
    impute from. Dropped with a warning, or refused (``clean.empty_columns``)."""
    empty = [name for name in schema.feature_names if not frame[name].notna().any()]
    if empty and cfg.empty_columns == "refuse":
        raise DataError(f"feature column(s) {empty} have no usable value after cleaning (clean.empty_columns = refuse)")
    if len(empty) == len(schema.feature_names):
        raise DataError(f"every feature column {empty} is empty after cleaning; nothing to learn from")
    for name in empty:
        log.warning("feature column %r has no usable value after cleaning: dropped", name)
    return empty


def check_classes(
    frame: pd.DataFrame, target: str, numeric_target: bool, cfg: TabularClean
) -> tuple[pd.DataFrame, dict[str, int]]:
    """A classification target: at most ``clean.max_classes`` labels, each with ``clean.min_class_rows`` rows
    (or rare classes dropped, by ``clean.rare_classes``), and at least two classes."""
    counts = frame[target].value_counts()
    if len(counts) > cfg.max_classes:
        hint = "its values are numbers: it looks continuous, and " if numeric_target else ""
        raise DataError(
            f"target {target!r} has {len(counts)} distinct values after cleaning; {hint}a classification target"
            f" has at most clean.max_classes = {cfg.max_classes} classes"
        )
    rare = counts[counts < cfg.min_class_rows].sort_index()
    dropped: dict[str, int] = {}
    if len(rare) and cfg.rare_classes == "refuse":
        shown = ", ".join(f"{label!r} ({n})" for label, n in list(rare.items())[:5])
        raise DataError(
            f"target {target!r}: class(es) {shown} have fewer than clean.min_class_rows = {cfg.min_class_rows} rows,"
            " too few to appear in train, val and test; keep the others with clean.labels or set clean.rare_classes: drop"
        )
    if len(rare):
        dropped = {str(label): int(n) for label, n in rare.items()}
        log.warning("dropped the rows of rare class(es) %s (clean.rare_classes = drop)", dropped)
        frame = frame.loc[~frame[target].isin(list(rare.index))]
    if frame[target].nunique() < 2:
        raise DataError(f"target {target!r} has {frame[target].nunique()} class(es) after cleaning; need at least 2")
    return frame, dropped


def check_values(frame: pd.DataFrame, target: str) -> None:
    """A regression target needs rows and more than one value to learn from."""
    if frame[target].nunique() < 2:
        raise DataError(
            f"regression target {target!r} has {frame[target].nunique()} distinct value(s) in {len(frame)} rows after cleaning;"
            " need at least 2"
        )


def clean(frame: pd.DataFrame, schema: Schema, cfg: TabularClean) -> tuple[pd.DataFrame, Schema, dict[str, Any]]:
    """All row-level cleaning; returns the clean table, its schema with the classes and row rules, and the counts."""
    rows_in = len(frame)
    numeric_target = is_number_column(frame[schema.target])
    if schema.regression:
        out, dropped = clean_target_values(frame, schema, cfg)
    else:
        out, dropped = clean_labels(frame, schema, cfg)
    out, coerced = coerce_types(out, schema, cfg)
    out, out_of_range = apply_ranges(out, schema, cfg)
    empty = empty_features(out, schema, cfg)
    if empty:
        out, schema = out.drop(columns=empty), schema.without(empty)
    duplicates = int(out.duplicated().sum()) if cfg.drop_duplicates else 0
    if duplicates:
        out = out.drop_duplicates()
    rare: dict[str, int] = {}
    if schema.regression:
        check_values(out, schema.target)  # no classes: the class rules (max_classes, min_class_rows) do not apply
    else:
        out, rare = check_classes(out, schema.target, numeric_target, cfg)
    out = out.reset_index(drop=True)
    classes = () if schema.regression else tuple(sorted(out[schema.target].unique()))
    report: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": len(out),
        "dropped": {**dropped, "duplicate": duplicates},
        "set_missing": {"unparseable_or_infinite": coerced, "out_of_range": out_of_range},
        "missing_share_after": {
            name: round(float(out[name].isna().mean()), 6) for name in schema.feature_names if out[name].isna().any()
        },
        "classes": list(classes),
    }
    if schema.regression:
        report["task"] = "regression"
        report["target_summary"] = {k: float(v) for k, v in out[schema.target].describe().items()}
    if empty:
        report["dropped_columns"] = {name: "no usable value after cleaning" for name in empty}
    if rare:
        report["dropped"]["rare_class"] = rare
    return out, schema.with_classes(classes).with_rules(cfg.valid_ranges, cfg.missing_tokens), report


def run(cfg: TabularClean, paths: Paths) -> dict[str, Any]:
    """Clean the ingested table and write it with its schema and a report of every change."""
    frame, schema = read_dataset(paths.ingested)
    out, schema, report = clean(frame, schema, cfg)
    write_dataset(paths.clean, out, schema)
    write_json(paths.clean_report, report)
    log.info("clean (%s): %d -> %d rows, dropped %s", schema.task, report["rows_in"], report["rows_out"], report["dropped"])
    return report
