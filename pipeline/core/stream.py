"""Tables larger than memory: Parquet read and written in row chunks, and the whole-column statistics a
stage needs computed in one pass over them.

A stage that streams holds one chunk of ``CHUNK_ROWS`` rows at a time plus a few bytes per row (a row hash,
a label code), so its memory stops growing with the table. The pieces:

- ``ParquetSink``: one Parquet file written chunk by chunk (a row group per chunk), atomically and durably
  like every other output (``atomic_path``). One file per split, not a folder of parts: every reader
  (training, evaluation, the drift monitor, batch scoring, DVC) keeps reading the path it always read,
  and row groups are already Parquet's unit of partial reading.
- Reading goes through ``pipeline.core.io`` (``iter_table``: chunks of a Parquet file; ``read_column``).
- ``row_hashes``: 128-bit content hashes of rows, for exact duplicate detection across chunks (two rows
  collide with probability about n^2 / 2^129: never, for any table that fits on a disk).
- ``DistinctCounter``: a column's distinct values, exact up to ``EXACT_DISTINCT`` and then a HyperLogLog
  sketch (standard error 1.04 / sqrt(2^14) = 0.81%), so a profile of a billion-row table fits in kilobytes.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_path

# Rows per chunk: ~260k rows of a dozen columns is tens of MB in pandas (hundreds with text columns as
# Python strings), small beside the tables worth streaming and large enough that per-chunk overhead is
# noise. Tables this size or smaller are one chunk, so they are processed exactly as a whole frame.
CHUNK_ROWS = 262_144


def arrow_schema(frame: pd.DataFrame) -> pa.Schema:
    """The Arrow schema a whole-table ``to_parquet`` would write for ``frame``'s columns; a text column whose
    first chunk holds no value (Arrow's null type) is typed as text, so later chunks' values fit."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(schema):
        if pa.types.is_null(field.type):
            schema = schema.set(i, field.with_type(pa.string()))
    return schema


class ParquetSink(AbstractContextManager["ParquetSink"]):
    """One Parquet file written chunk by chunk; it replaces ``path`` only when the block exits cleanly.

    The first chunk with rows fixes the schema (``arrow_schema``); later chunks are converted to it, so a
    column cannot change type half-way. Chunks without rows only stand in for the table's columns when no
    row ever comes (an empty table, typed as the first of them, or as ``empty``). An exception inside the
    block, or in closing the file, leaves ``path`` untouched."""

    def __init__(self, path: str | Path, empty: pd.DataFrame | None = None) -> None:
        self.path = Path(path)
        self.empty = empty
        self.rows = 0
        self._atomic = atomic_path(self.path)
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def __enter__(self) -> ParquetSink:
        self._temporary = self._atomic.__enter__()
        return self

    def write(self, frame: pd.DataFrame) -> None:
        if len(frame) == 0:
            if self.empty is None:
                self.empty = frame
            return
        if self._writer is None:
            self._schema = arrow_schema(frame)
            self._writer = pq.ParquetWriter(self._temporary, self._schema)
        try:
            table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"{self.path}: a chunk's column types differ from the first chunk's ({exc})") from None
        self._writer.write_table(table)
        self.rows += len(frame)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool | None:
        try:
            if self._writer is None and kind is None:
                if self.empty is None:
                    raise DataError(f"{self.path}: nothing to write (no chunk and no empty table given)")
                self._schema = arrow_schema(self.empty)
                self._writer = pq.ParquetWriter(self._temporary, self._schema)
                self._writer.write_table(pa.Table.from_pandas(self.empty, schema=self._schema, preserve_index=False))
            if self._writer is not None:
                self._writer.close()
        except BaseException as failure:
            if kind is None:  # the temporary goes, the old file stays
                self._atomic.__exit__(type(failure), failure, failure.__traceback__)
                raise
        return self._atomic.__exit__(kind, error, trace)


# ---------------------------------------------------------------- whole-column statistics in one pass


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """A 128-bit content hash per row as a [N, 2] uint64 array: two 64-bit hashes that combine the
    columns' value hashes in opposite orders (a number's value hash is a bijection of its 64 bits; text
    is hashed with two keys), so two rows collide only if both combinations do.

    Equal rows (missing equal to missing, -0.0 equal to 0.0, as ``DataFrame.duplicated`` counts them)
    hash equal."""
    floats = {name: frame[name] + 0.0 for name, dtype in frame.dtypes.items() if dtype.kind == "f"}  # -0.0 -> 0.0
    frame = frame.assign(**floats) if floats else frame
    first = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    second = pd.util.hash_pandas_object(frame[frame.columns[::-1]], index=False, hash_key="evergreen-rows-2").to_numpy()
    return np.stack([first, second], axis=1)


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """A boolean mask over rows: True for the first row of every distinct hash ([N, 2] uint64)."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=bool)
    keys = np.ascontiguousarray(hashes).view(np.dtype((np.void, 16))).ravel()
    _, first = np.unique(keys, return_index=True)
    mask = np.zeros(len(hashes), dtype=bool)
    mask[first] = True
    return mask


class ContentHash:
    """``frame_sha256`` of a table fed chunk by chunk: the same digest as hashing the whole table at once."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._columns: list[str] | None = None

    def update(self, frame: pd.DataFrame) -> None:
        self._columns = [str(c) for c in frame.columns]
        self._digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())

    def hexdigest(self) -> str:
        digest = self._digest.copy()
        digest.update(",".join(self._columns or []).encode())
        return digest.hexdigest()


# A column is counted exactly while it has at most this many distinct values (8 bytes each), then sketched.
EXACT_DISTINCT = 1 << 16
HLL_BITS = 14  # 2^14 one-byte registers: 16 KiB per column, standard error 0.81%
POWERS_OF_TWO = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))


class DistinctCounter:
    """Distinct non-missing values of a column seen chunk by chunk: exact (a sorted array of 64-bit value
    hashes) up to ``EXACT_DISTINCT``, then a HyperLogLog estimate (``estimated`` says which)."""

    def __init__(self) -> None:
        self._exact: np.ndarray | None = np.zeros(0, dtype=np.uint64)
        self._registers = np.zeros(1 << HLL_BITS, dtype=np.uint8)

    @property
    def estimated(self) -> bool:
        return self._exact is None

    def update(self, values: pd.Series) -> None:
        present = values.dropna()
        if present.empty:
            return
        hashes = pd.util.hash_array(present.to_numpy())
        if self._exact is not None:
            self._exact = np.union1d(self._exact, hashes)
            if len(self._exact) <= EXACT_DISTINCT:
                return
            hashes, self._exact = self._exact, None
        self._add_to_sketch(hashes)

    def _add_to_sketch(self, hashes: np.ndarray) -> None:
        index = (hashes >> np.uint64(64 - HLL_BITS)).astype(np.int64)
        rest = (hashes << np.uint64(HLL_BITS)) | np.uint64(1 << (HLL_BITS - 1))  # a sentinel bit bounds the rank
        # rank = leading zeros of the remaining bits + 1 = 64 - floor(log2(rest)), found by integer comparison
        rank = (64 - (np.searchsorted(POWERS_OF_TWO, rest, side="right") - 1)).astype(np.uint8)
        np.maximum.at(self._registers, index, rank)

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        m = float(len(self._registers))
        estimate = 0.7213 / (1 + 1.079 / m) * m * m / float(np.sum(np.exp2(-self._registers.astype(np.float64))))
        zeros = int(np.count_nonzero(self._registers == 0))
        if estimate <= 2.5 * m and zeros:  # small-range correction (linear counting)
            estimate = m * np.log(m / zeros)
        return int(round(estimate))


class FrameSink:
    """``ParquetSink``'s twin that keeps the chunks in memory: the same streaming code serves callers that
    want a DataFrame (a table small enough to hold, a test)."""

    def __init__(self, empty: pd.DataFrame | None = None) -> None:
        self.parts: list[pd.DataFrame] = []
        self.empty = empty
        self.rows = 0

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, frame: pd.DataFrame) -> None:
        self.parts.append(frame)
        self.rows += len(frame)

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return self.empty if self.empty is not None else pd.DataFrame()
        if len(self.parts) == 1:
            return self.parts[0].reset_index(drop=True)
        return pd.concat(self.parts, ignore_index=True)


Sink = ParquetSink | FrameSink
