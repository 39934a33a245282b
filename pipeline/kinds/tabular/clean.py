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

Streams: two passes over the ingested table in chunks (``clean_table``); memory holds one chunk and about
20 bytes per row (a row hash for exact duplicates, a label code or a target value).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.canon import category_text, is_number_column
from pipeline.core.errors import DataError
from pipeline.core.io import DATA_FILE, SCHEMA_FILE, iter_table, write_json
from pipeline.core.stream import CHUNK_ROWS, FrameSink, ParquetSink, Sink, first_occurrences, row_hashes
from pipeline.kinds.tabular.schema import Schema, read_schema
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


def empty_features(present: dict[str, bool], schema: Schema, cfg: TabularClean) -> list[str]:
    """Features with no value left (all missing, unparseable, infinite or out of range): nothing to learn or
    impute from. Dropped with a warning, or refused (``clean.empty_columns``). ``present``: whether each
    feature has a value left in some row."""
    empty = [name for name in schema.feature_names if not present[name]]
    if empty and cfg.empty_columns == "refuse":
        raise DataError(f"feature column(s) {empty} have no usable value after cleaning (clean.empty_columns = refuse)")
    if len(empty) == len(schema.feature_names):
        raise DataError(f"every feature column {empty} is empty after cleaning; nothing to learn from")
    for name in empty:
        log.warning("feature column %r has no usable value after cleaning: dropped", name)
    return empty


def class_rules(counts: pd.Series, target: str, numeric_target: bool, cfg: TabularClean) -> dict[str, int]:
    """A classification target (``counts``: rows per label): at most ``clean.max_classes`` labels, each with
    ``clean.min_class_rows`` rows (or rare classes dropped, by ``clean.rare_classes``: returned with their
    row counts), and at least two classes."""
    if len(counts) > cfg.max_classes:
        hint = "its values are numbers: it looks continuous, and " if numeric_target else ""
        raise DataError(
            f"target {target!r} has {len(counts)} distinct values after cleaning; {hint}a classification target"
            f" has at most clean.max_classes = {cfg.max_classes} classes"
        )
    rare = counts[counts < cfg.min_class_rows].sort_index()
    if len(rare) and cfg.rare_classes == "refuse":
        shown = ", ".join(f"{label!r} ({n})" for label, n in list(rare.items())[:5])
        raise DataError(
            f"target {target!r}: class(es) {shown} have fewer than clean.min_class_rows = {cfg.min_class_rows} rows,"
            " too few to appear in train, val and test; keep the others with clean.labels or set clean.rare_classes: drop"
        )
    dropped = {str(label): int(n) for label, n in rare.items()}
    if dropped:
        log.warning("dropped the rows of rare class(es) %s (clean.rare_classes = drop)", dropped)
    left = len(counts) - len(rare)
    if left < 2:
        raise DataError(f"target {target!r} has {left} class(es) after cleaning; need at least 2")
    return dropped


def check_values(values: pd.Series, target: str) -> None:
    """A regression target needs rows and more than one value to learn from."""
    if values.nunique() < 2:
        raise DataError(
            f"regression target {target!r} has {values.nunique()} distinct value(s) in {len(values)} rows after cleaning;"
            " need at least 2"
        )


def clean_rows(frame: pd.DataFrame, schema: Schema, cfg: TabularClean) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """The row-level rules on one chunk: labels (or target values), types, ranges; with what each changed."""
    if schema.regression:
        out, dropped = clean_target_values(frame, schema, cfg)
    else:
        out, dropped = clean_labels(frame, schema, cfg)
    out, coerced = coerce_types(out, schema, cfg)
    out, out_of_range = apply_ranges(out, schema, cfg)
    return out, {"dropped": dropped, "coerced": coerced, "out_of_range": out_of_range}


class LabelCodes:
    """Labels as small integer codes, assigned chunk by chunk (4 bytes a row instead of a string)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def encode(self, labels: pd.Series) -> np.ndarray:
        for label in pd.unique(labels.to_numpy()):
            self.codes.setdefault(str(label), len(self.codes))
        return labels.astype(str).map(self.codes).to_numpy(dtype=np.int32)

    def counts(self, codes: np.ndarray) -> pd.Series:
        """Rows per label, as ``value_counts`` gives them."""
        labels = np.array(list(self.codes), dtype=object)
        counts = np.bincount(codes, minlength=len(labels))
        present = counts > 0
        return pd.Series(counts[present], index=labels[present]).sort_values(ascending=False, kind="stable")


def add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for name, n in counts.items():
        total[name] = total.get(name, 0) + n


def clean_table(
    chunks: Callable[[], Iterable[pd.DataFrame]], schema: Schema, cfg: TabularClean, sink: Sink
) -> tuple[Schema, dict[str, Any]]:
    """All row-level cleaning over a table read twice in chunks (``chunks()`` starts a pass); the clean rows
    go to ``sink``; returns the schema with the classes and row rules, and the report of every change.

    Pass one cleans every chunk and keeps what the whole-table rules need: a 128-bit hash per row (exact
    duplicates), a label code per row (class counts), whether each feature has a value left. Pass two
    cleans again (the rules are deterministic) and writes the rows those rules keep."""
    rows_in, numeric_target = 0, False
    totals: dict[str, dict[str, int]] = {"dropped": {}, "coerced": {}, "out_of_range": {}}
    present = dict.fromkeys(schema.feature_names, False)
    hashes, codes, values = [], [], []
    labels = LabelCodes()
    for chunk in chunks():
        numeric_target = numeric_target or is_number_column(chunk[schema.target])
        rows_in += len(chunk)
        out, counts = clean_rows(chunk, schema, cfg)
        for key, part in counts.items():
            add_counts(totals[key], part)
        for name in schema.feature_names:
            present[name] = present[name] or bool(out[name].notna().any())
        if cfg.drop_duplicates:
            hashes.append(row_hashes(out))
        if schema.regression:
            values.append(out[schema.target].to_numpy(dtype="float64"))
        else:
            codes.append(labels.encode(out[schema.target]))
    empty = empty_features(present, schema, cfg)
    rows = sum(len(c) for c in (values if schema.regression else codes))
    keep = first_occurrences(np.concatenate(hashes)) if cfg.drop_duplicates and rows else np.ones(rows, dtype=bool)
    duplicates = int(rows - keep.sum())
    rare: dict[str, int] = {}
    classes: tuple[str, ...] = ()
    target_values = pd.Series(np.concatenate(values)[keep] if values else np.zeros(0))
    if schema.regression:
        check_values(target_values, schema.target)  # no classes: the class rules (max_classes, min_class_rows) do not apply
    else:
        counts = labels.counts(np.concatenate(codes)[keep] if codes else np.zeros(0, dtype=np.int32))
        rare = class_rules(counts, schema.target, numeric_target, cfg)
        classes = tuple(sorted(label for label in counts.index if label not in rare))
    out_schema = schema.without(empty) if empty else schema

    missing = dict.fromkeys(out_schema.feature_names, 0)
    rows_out, offset = 0, 0
    for chunk in chunks():
        out, _ = clean_rows(chunk, schema, cfg)
        mask = keep[offset : offset + len(out)]
        offset += len(out)
        out = out.loc[mask].drop(columns=empty)
        if rare:
            out = out.loc[~out[schema.target].isin(list(rare))]
        out = out.reset_index(drop=True)
        if len(out) or rows_out == 0:  # an empty first chunk still fixes the columns and types
            sink.write(out)
        rows_out += len(out)
        for name in missing:
            missing[name] += int(out[name].isna().sum())

    report: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": {**totals["dropped"], "duplicate": duplicates},
        "set_missing": {
            "unparseable_or_infinite": {k: v for k, v in totals["coerced"].items() if v},
            "out_of_range": totals["out_of_range"],
        },
        "missing_share_after": {name: round(n / rows_out, 6) for name, n in missing.items() if n},
        "classes": list(classes),
    }
    if schema.regression:
        report["task"] = "regression"
        report["target_summary"] = {k: float(v) for k, v in target_values.describe().items()}
    if empty:
        report["dropped_columns"] = {name: "no usable value after cleaning" for name in empty}
    if rare:
        report["dropped"]["rare_class"] = rare
    return out_schema.with_classes(classes).with_rules(cfg.valid_ranges, cfg.missing_tokens), report


def clean(frame: pd.DataFrame, schema: Schema, cfg: TabularClean) -> tuple[pd.DataFrame, Schema, dict[str, Any]]:
    """``clean_table`` of a frame in memory: the clean frame, its schema with the classes and row rules, the counts."""
    sink = FrameSink()
    out_schema, report = clean_table(lambda: [frame], schema, cfg, sink)
    return sink.frame(), out_schema, report


def run(cfg: TabularClean, paths: Paths, rows: int = CHUNK_ROWS) -> dict[str, Any]:
    """Clean the ingested table chunk by chunk and write it with its schema and a report of every change."""
    source = Path(paths.ingested) / DATA_FILE
    schema = read_schema(paths.ingested)
    with ParquetSink(Path(paths.clean) / DATA_FILE) as sink:
        out_schema, report = clean_table(lambda: iter_table(source, rows), schema, cfg, sink)
    write_json(Path(paths.clean) / SCHEMA_FILE, out_schema.to_dict())
    write_json(paths.clean_report, report)
    log.info(
        "clean (%s): %d -> %d rows, dropped %s", out_schema.task, report["rows_in"], report["rows_out"], report["dropped"]
    )
    return report
