"""Sequence clean: every series sorted, de-duplicated, numeric, on its regular time grid, gaps filled.

Sorts by (series, time), drops duplicate timestamps (the later row wins), coerces numbers, puts every
series on its regular time grid, fills gaps within a series (``clean.impute``, ``clean.limit``) and refuses (or
drops) a series with too many missing values; every change is counted in the report.

Inputs:  ``paths.ingested``
Outputs: ``paths.clean``/data.parquet and schema.json, ``paths.clean_report``
Params:  ``clean``
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.canon import category_text
from pipeline.core.errors import DataError
from pipeline.core.io import write_json
from pipeline.kinds.sequence.data import KIND, SequenceSchema, read_sequence, write_sequence
from pipeline.params import Paths, SequenceClean
from pipeline.shared.tables import outside_range, to_numbers

log = logging.getLogger(__name__)


def step_of(frequency: str | int):
    """The grid step: a Timedelta for an offset alias, the number itself for numeric times."""
    return pd.Timedelta(pd.tseries.frequencies.to_offset(frequency)) if isinstance(frequency, str) else frequency


def fill_gaps(values: pd.DataFrame, method: str, limit: int | None) -> pd.DataFrame:
    """Fill missing values of one series (rows in time order): linear interpolation between known
    neighbours or the last value carried forward, at most ``limit`` steps in a row."""
    if method == "interpolate":
        return values.interpolate(method="linear", limit=limit, limit_area="inside")
    return values.ffill(limit=limit)


def clean_series(part: pd.DataFrame, schema: SequenceSchema, cfg: SequenceClean) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """One series on its regular grid with gaps filled; ``None`` and the reason when it is unusable."""
    time = schema.time_column
    step = step_of(schema.frequency)
    start, end = part[time].iloc[0], part[time].iloc[-1]
    grid = pd.date_range(start, end, freq=step) if isinstance(step, pd.Timedelta) else np.arange(start, end + step, step)
    indexed = part.set_index(time)
    off_grid = int((~indexed.index.isin(grid)).sum())
    regular = indexed.reindex(grid)
    regular.index.name = time
    counts: dict[str, Any] = {"off_grid_rows": off_grid, "inserted_steps": int(len(grid) - (len(indexed) - off_grid))}
    values = regular[list(schema.features)]
    missing = values.isna().any(axis=1)
    counts["missing_share"] = round(float(missing.mean()), 6)
    if counts["missing_share"] > cfg.max_missing_share:
        share = f"{counts['missing_share']:.1%} of its steps miss a value"
        return None, {**counts, "reason": f"{share} (clean.max_missing_share = {cfg.max_missing_share})"}
    filled = fill_gaps(values, cfg.impute, cfg.limit)
    counts["imputed"] = {c: int(n) for c, n in (values.isna() & filled.notna()).sum().items() if n}
    # Missing steps at either end cannot be filled from both sides: trim them.
    complete = filled.notna().all(axis=1).to_numpy()
    if not complete.any():
        return None, {**counts, "reason": "no step has every value"}
    first, last = int(np.argmax(complete)), int(len(complete) - np.argmax(complete[::-1]) - 1)
    counts["trimmed_steps"] = int(first + len(complete) - 1 - last)
    inner = filled.iloc[first : last + 1]
    if inner.isna().any().any():
        gap = _longest_run(missing.to_numpy()[first : last + 1])  # the whole gap, not what limit left of it
        return None, {**counts, "reason": f"a gap of {gap} steps is longer than clean.limit = {cfg.limit}"}
    out = inner.reset_index()
    out.insert(0, schema.series_column, part[schema.series_column].iloc[0])
    if not schema.forecast:
        out[schema.target] = part[schema.target].iloc[0]
    return out[schema.columns], counts


def _longest_run(flags: np.ndarray) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def series_labels(frame: pd.DataFrame, schema: SequenceSchema, cfg: SequenceClean) -> pd.Series:
    """Each series' class label (classify): exactly one distinct label per series, or a one-line error."""
    labels = category_text(frame[schema.target], cfg.missing_tokens)
    per_series = labels.groupby(frame[schema.series_column], sort=True).agg(lambda v: sorted(set(v.dropna())))
    for name, found in per_series.items():
        if len(found) != 1:
            problem = "has no label" if not found else f"has {len(found)} labels {found[:5]}"
            raise DataError(
                f"series {name!r} {problem} in {schema.target!r}; a sequence class label must be constant per series"
            )
    return per_series.map(lambda found: found[0])


def _set_impossible_missing(
    frame: pd.DataFrame, schema: SequenceSchema, cfg: SequenceClean
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Inputs as numbers; unparseable, infinite and out-of-range (``clean.valid_ranges``) values missing, counted."""
    coerced, columns = {}, {}
    for name in schema.features:
        columns[name], coerced[name] = to_numbers(frame[name])
    frame = frame.assign(**columns)
    out_of_range = {}
    for name, (low, high) in cfg.valid_ranges.items():
        if name not in schema.features:
            raise DataError(f"clean.valid_ranges: {name!r} is not an input feature; features are {list(schema.features)}")
        outside = outside_range(frame[name], low, high)
        out_of_range[name] = int(outside.sum())
        frame = frame.assign(**{name: frame[name].mask(outside)})
    return frame, {"unparseable_or_infinite": {k: v for k, v in coerced.items() if v}, "out_of_range": out_of_range}


def _clean_each_series(
    frame: pd.DataFrame, schema: SequenceSchema, cfg: SequenceClean, dropped_series: dict[str, str]
) -> tuple[list[pd.DataFrame], dict[str, Any]]:
    """The usable series, cleaned, and each one's counts; a bad series fails or joins ``dropped_series``."""
    parts, per_series = [], {}
    for name, part in frame.groupby(schema.series_column, sort=True):
        if str(name) in dropped_series:
            continue
        cleaned, counts = clean_series(part, schema, cfg)
        per_series[str(name)] = counts
        if cleaned is None:
            if cfg.bad_series == "fail":
                raise DataError(
                    f"series {name!r}: {counts['reason']}; fix the data, relax clean's gap settings, or set clean.bad_series: drop"
                )
            dropped_series[str(name)] = counts["reason"]
            continue
        parts.append(cleaned)
    if not parts:
        raise DataError(f"no usable series left after cleaning: {dropped_series}")
    return parts, per_series


def clean_frame(
    frame: pd.DataFrame, schema: SequenceSchema, cfg: SequenceClean
) -> tuple[pd.DataFrame, SequenceSchema, dict[str, Any]]:
    """Sort, de-duplicate timestamps, coerce numbers, regular grid, fill gaps; every change counted."""
    series, time = schema.series_column, schema.time_column
    rows_in = len(frame)
    frame = frame.sort_values([series, time], kind="stable")
    duplicate = frame.duplicated([series, time], keep="last")  # a later (landed) row corrects an earlier one
    frame = frame.loc[~duplicate]
    frame, set_missing = _set_impossible_missing(frame, schema, cfg)

    dropped_series: dict[str, str] = {}
    if not schema.forecast:
        labels = series_labels(frame, schema, cfg)
        if cfg.labels is not None:
            for name in labels.index[~labels.isin(cfg.labels)]:
                dropped_series[str(name)] = f"label {labels[name]!r} is not in clean.labels"
        frame = frame.assign(**{schema.target: frame[series].map(labels)})

    parts, per_series = _clean_each_series(frame, schema, cfg, dropped_series)
    out = pd.concat(parts, ignore_index=True)
    classes: tuple[str, ...] = ()
    if not schema.forecast:
        classes = tuple(sorted(out[schema.target].unique()))
        if len(classes) < 2:
            raise DataError(f"target {schema.target!r} has {len(classes)} class(es) after cleaning; need at least 2")
    imputed: dict[str, int] = {}
    for counts in per_series.values():
        for name, n in counts.get("imputed", {}).items():
            imputed[name] = imputed.get(name, 0) + n
    report = {
        "kind": KIND,
        "rows_in": rows_in,
        "rows_out": len(out),
        "series_in": int(frame[series].nunique()),
        "series_out": int(out[series].nunique()),
        "duplicate_timestamps": int(duplicate.sum()),
        "set_missing": set_missing,
        "inserted_steps": sum(c["inserted_steps"] for c in per_series.values()),
        "off_grid_rows": sum(c["off_grid_rows"] for c in per_series.values()),
        "trimmed_steps": sum(c.get("trimmed_steps", 0) for c in per_series.values()),
        "imputed": imputed,
        "impute": cfg.impute,
        "dropped_series": dropped_series,
        "per_series": dict(list(per_series.items())[:100]),
        "classes": list(classes),
    }
    return out, SequenceSchema(**{**asdict(schema), "classes": classes}), report


def run(cfg: SequenceClean, paths: Paths) -> dict[str, Any]:
    """Clean the ingested long table; write it with its schema and the report of every change."""
    frame, schema = read_sequence(paths.ingested)
    out, schema, report = clean_frame(frame, schema, cfg)
    write_sequence(paths.clean, out, schema)
    write_json(paths.clean_report, report)
    log.info(
        "clean: %d -> %d rows, %d duplicate timestamps, %d steps inserted, %s imputed, %d series dropped",
        report["rows_in"],
        report["rows_out"],
        report["duplicate_timestamps"],
        report["inserted_steps"],
        report["imputed"],
        len(report["dropped_series"]),
    )
    return report
