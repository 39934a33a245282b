"""Reading tables and the row-level helpers every kind that reads tables shares (time filters, numeric coercion).

No torch and no kind-specific knowledge: the tabular and sequence kinds both read CSV/Parquet sources and batches."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import DataError
from pipeline.params import DEFAULT_SOURCE, Paths

log = logging.getLogger(__name__)


TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


# A text column is read as numeric when at least this share of its values parse as numbers;
# the rest become missing in clean (and are counted there). ``ingest.min_numeric_share`` sets it for tables.
NUMERIC_TEXT_SHARE = 0.95
# Models compute in float32: a number beyond its range would be infinite there, so it counts as unusable.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def read_table_file(path: Path) -> pd.DataFrame:
    """Read one CSV or Parquet file; every failure becomes one line naming the file and the problem."""
    kind = check_table_file(path)
    with read_errors(path, kind):
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    if kind == "csv":
        refuse_duplicate_header(path)
    if frame.empty:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def check_table_file(path: Path) -> str:
    """The file's kind (csv or parquet), or a one-line error: unsupported type, no such file, empty."""
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(TABLE_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return kind


@contextmanager
def read_errors(path: Path, kind: str) -> Iterator[None]:
    """Reading ``path`` inside the block: every failure becomes one line naming the file and the problem."""
    try:
        yield
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file has no columns") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({first_line(exc)})") from None
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises many types for corrupt files; all mean the same here
        raise DataError(f"{path}: not a readable {kind} file ({first_line(exc)})") from None


def iter_table_file(path: Path, rows: int, text_columns: Collection[str] = ()) -> Iterator[pd.DataFrame]:
    """One CSV or Parquet file in chunks of at most ``rows`` rows, with ``read_table_file``'s checks and
    messages. ``text_columns`` of a CSV are read as text (what a whole read gives a column that is not
    all numbers, even in a chunk where it happens to be)."""
    kind = check_table_file(path)
    with read_errors(path, kind):
        if kind == "csv":
            refuse_duplicate_header(path)
            chunks: Iterator[pd.DataFrame] = iter(
                pd.read_csv(path, chunksize=rows, dtype=dict.fromkeys(text_columns, str) or None)
            )
        else:
            file = pq.ParquetFile(path)
            chunks = (pa.Table.from_batches([b], schema=file.schema_arrow).to_pandas() for b in file.iter_batches(rows))
    produced = False
    while True:
        with read_errors(path, kind):  # only the reading: a consumer's error at the yield passes unchanged
            chunk = next(chunks, None)
        if chunk is None:
            break
        if chunk.empty:
            continue
        produced = True
        yield chunk
    if not produced:
        raise DataError(f"{path}: file has a header but no rows")


@dataclass(frozen=True)
class TablePart:
    """One piece of a table read in chunks: a file, or a table already in memory (a bundled data set).
    ``landed``: a batch that arrived later (ingest checks and aligns its columns to the source's)."""

    name: str
    path: Path | None = None
    frame: pd.DataFrame | None = None
    landed: bool = False

    def chunks(self, rows: int, text_columns: Collection[str]) -> Iterator[pd.DataFrame]:
        if self.frame is not None:
            for start in range(0, max(len(self.frame), 1), rows):
                yield self.frame.iloc[start : start + rows]
        else:
            assert self.path is not None
            yield from iter_table_file(self.path, rows, text_columns)


# What pandas infers for an object column holding text (read as text everywhere when chunks disagree).
TEXT_KINDS = frozenset({"string", "bytes", "mixed", "mixed-integer", "mixed-integer-float"})


class ChunkedTable:
    """A table (one file, a folder of files, a frame, plus landed batches) read in chunks, as often as a
    stage needs to pass over it, holding one chunk at a time.

    The column types are those a whole read would give: the first pass notes each chunk's types, and later
    passes give every chunk the common type (integers that meet decimals or gaps become float64, a column
    that holds text anywhere becomes text, read as text from a CSV as a whole read does; bools with gaps
    stay bools). ``align`` turns a
    part's chunk into the table's columns (ingest checks a landed batch there)."""

    def __init__(
        self,
        parts: Sequence[TablePart],
        rows: int,
        align: Callable[[TablePart, pd.DataFrame], pd.DataFrame] | None = None,
    ) -> None:
        self.parts = list(parts)
        self.rows = rows
        self.align = align
        self._seen: dict[str, set[np.dtype]] = {}
        self._texty: set[str] = set()  # columns holding text somewhere (not bools with gaps, also object)
        self._types: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[tuple[TablePart, pd.DataFrame]]:
        """(part, chunk) for every chunk of every part, in order."""
        text = [c for c, t in (self._types or {}).items() if t == np.dtype(object) and c in self._texty]
        for part in self.parts:
            for chunk in part.chunks(self.rows, text):
                if self.align is not None:
                    chunk = self.align(part, chunk)
                if self._types is None:
                    for name, dtype in chunk.dtypes.items():
                        self._seen.setdefault(str(name), set()).add(dtype)
                        if dtype == np.dtype(object) and pd.api.types.infer_dtype(chunk[name], skipna=True) in TEXT_KINDS:
                            self._texty.add(str(name))
                else:
                    chunk = self._retype(chunk)
                yield part, chunk
        if self._types is None:
            self._types = {name: common_type(types) for name, types in self._seen.items()}

    def _retype(self, chunk: pd.DataFrame) -> pd.DataFrame:
        assert self._types is not None
        changed = {
            name: chunk[name].astype(self._types[name])
            for name, dtype in chunk.dtypes.items()
            if self._types.get(str(name), dtype) != dtype
        }
        return chunk.assign(**changed) if changed else chunk


def common_type(types: set[Any]) -> Any:
    """The type a column gets when chunks of these types are stacked (pandas' concat rule, simplified)."""
    if len(types) == 1:
        return next(iter(types))
    if all(isinstance(t, np.dtype) and t.kind in "iuf" for t in types):
        return np.result_type(*types, np.float64) if any(t.kind == "f" for t in types) else np.result_type(*types)
    return np.dtype(object)


def refuse_duplicate_header(path: Path) -> None:
    """pandas renames a repeated CSV column (age, age.1) without a word: two columns under one name
    would silently become different features, so a repeated name is an error naming it."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: the header names column(s) {repeated} more than once; give every column its own name")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def batch_files(folder: Path) -> list[Path]:
    """The CSV/Parquet files of a batch folder, in name order (names usually carry the arrival time).

    Hidden files are skipped: a batch being written lands under a dot-name and is renamed when complete.
    Links are never followed (the landing screen quarantines them): one could point anywhere on the machine.
    """
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if not p.is_symlink() and p.is_file() and not p.name.startswith(".") and p.suffix.lower() in TABLE_SUFFIXES
    )


def concat_batches(batches: list[tuple[Path, pd.DataFrame]]) -> pd.DataFrame:
    """Stack batches that share the first batch's columns; a batch with other columns is refused."""
    first_path, first = batches[0]
    columns = list(first.columns)
    for path, frame in batches[1:]:
        if set(frame.columns) != set(columns):
            missing = sorted(set(columns) - set(frame.columns))
            extra = sorted(set(frame.columns) - set(columns))
            raise DataError(f"{path}: columns differ from {first_path.name} (missing {missing}, unexpected {extra})")
    return pd.concat([frame[columns] for _, frame in batches], ignore_index=True)


def read_table_source(source: str) -> pd.DataFrame:
    """A table from one CSV/Parquet file, or from a folder of them stacked in name order (``ingest.source``)."""
    path = Path(source)
    if path.is_dir():
        files = batch_files(path)
        if not files:
            raise DataError(f"{path}: folder has no .csv or .parquet files")
        return concat_batches([(f, read_table_file(f)) for f in files])
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (ingest.source)")
    return read_table_file(path)


def looks_numeric(column: pd.Series, min_share: float = NUMERIC_TEXT_SHARE, missing_tokens: tuple[str, ...] = ()) -> bool:
    """True for numeric dtypes, and for text columns whose values are almost all numbers."""
    share = numeric_share(column, missing_tokens)
    return share is not None and share >= min_share


def numeric_share(column: pd.Series, missing_tokens: tuple[str, ...] = ()) -> float | None:
    """The share of a column's present values (missing tokens aside) that are numbers: 1.0 for a numeric
    dtype, None for bools, dates and columns with no value to judge."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return 1.0
    counts = numeric_counts(column, missing_tokens)
    return None if counts is None or counts[1] == 0 else counts[0] / counts[1]


def numeric_counts(column: pd.Series, missing_tokens: tuple[str, ...] = ()) -> tuple[int, int] | None:
    """(values that are numbers, values judged): the parts of ``numeric_share``, which add up over the chunks
    of a column. A numeric dtype's present values are all numbers; None for bools and dates."""
    if pd.api.types.is_bool_dtype(column):
        return None
    if pd.api.types.is_numeric_dtype(column):
        present = int(column.notna().sum())
        return present, present
    values = column.dropna()
    if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
        return None
    text = values.astype(str).str.strip()
    text = text[~text.isin(missing_tokens)]
    return int(pd.to_numeric(text, errors="coerce").notna().sum()), len(text)


def require_columns(wanted, columns: set, key: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{key}: column(s) {missing} not in the data; columns are {sorted(map(str, columns))}")


def slice_indices(n: int, max_rows: int | None, seed: int) -> np.ndarray:
    """The sorted positions of a seeded random slice of ``max_rows`` out of ``n`` (all when it fits)."""
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def time_filter(
    frame: pd.DataFrame,
    time_column: str | None,
    *,
    cutoff: Any = None,
    window_periods: int | None = None,
    time_format: str | None = None,
) -> pd.DataFrame:
    """The time column parsed to sortable times, rows after ``cutoff`` dropped and, with ``window_periods``,
    only the most recent periods kept (``ingest.time_cutoff``, ``ingest.window_periods``)."""
    if time_column is None:
        return frame
    time = sortable_time(frame[time_column], time_column, time_format)
    keep = pd.Series(True, index=frame.index)
    if cutoff is not None:
        keep &= time <= as_time(cutoff, time)
    if window_periods is not None:
        recent = np.sort(time.unique())[-window_periods:]
        keep &= time.isin(recent)
    return frame.assign(**{time_column: time}).loc[keep].reset_index(drop=True)


def as_time(value, times: pd.Series):
    """A params value (number or date text) comparable with a sortable time column."""
    if pd.api.types.is_datetime64_any_dtype(times):
        return pd.Timestamp(str(value)) if not isinstance(value, pd.Timestamp) else value
    if isinstance(value, str):
        raise DataError(f"ingest.time_cutoff {value!r} is text but the time column holds numbers")
    return value


def sortable_time(column: pd.Series, name: str, time_format: str | None = None) -> pd.Series:
    """The time column as numbers or datetimes; unusable values are an error naming one.

    Text dates are parsed with ``time_format`` (``ingest.time_format``) when given; otherwise as ISO 8601
    when every value is, else with pandas' inference, which guesses day-first or month-first once, from
    the values, and would read "03/04/2021" as March or April for the whole column."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
        result = column
    else:
        text = column.astype("string").str.strip()
        if time_format is not None:
            result = pd.to_datetime(text, format=time_format, errors="coerce")
        else:
            result = pd.to_datetime(text, format="ISO8601", errors="coerce")
            if result.isna().all():
                result = pd.to_datetime(text, errors="coerce")
    bad = result.isna()
    if bad.any():
        example = column[bad].iloc[0]
        how = f"with ingest.time_format {time_format!r}" if time_format is not None else "as numbers or dates"
        if bad.all():
            raise DataError(f"ingest.time_column {name!r}: no value parses {how} (e.g. {example!r})")
        raise DataError(f"ingest.time_column {name!r}: {int(bad.sum())} row(s) have no usable time {how} (e.g. {example!r})")
    return result


def warn_if_untracked(source: str, paths: Paths) -> None:
    """A source outside ``paths.raw`` (a dependency of the stage in dvc.yaml) is not tracked by DVC."""
    if source != DEFAULT_SOURCE and not Path(source).resolve().is_relative_to(Path(paths.raw).resolve()):
        log.warning(
            "ingest.source %s is outside %s: DVC does not track it, so changing it will not re-run ingest", source, paths.raw
        )


def to_numbers(column: pd.Series, missing_tokens: tuple[str, ...] = ()) -> tuple[pd.Series, int]:
    """float64 values and how many values were lost: unparseable text, infinities and numbers beyond
    float32's range (infinite in the model) become missing. Missing-value tokens are missing, not lost."""
    if not pd.api.types.is_numeric_dtype(column):
        column = column.astype("string").str.strip()
        column = column.mask(column.isin(missing_tokens))
    text = column
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    numbers = numbers.mask(numbers.abs() > FLOAT32_MAX)  # also catches +-inf
    return numbers, int((numbers.isna() & column.notna()).sum())


def outside_range(values: pd.Series, low: float | None, high: float | None) -> pd.Series:
    """True where a value is below ``low`` or above ``high`` (None: no bound); missing values are not outside.

    Compared in float32, as the model and the rules inside the exported graph see values, so a value a
    hair beyond a bound is judged alike in training and in serving."""
    as_float32 = values.to_numpy(dtype=np.float32, na_value=np.nan)
    outside = np.zeros(len(values), dtype=bool)
    if low is not None:
        outside |= as_float32 < np.float32(low)
    if high is not None:
        outside |= as_float32 > np.float32(high)
    return pd.Series(outside, index=values.index)
