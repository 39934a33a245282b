"""File I/O every layer uses: durable writes and locks, deterministic JSON, Parquet tables, content hashes,
the file names of a data folder.

Durability: ``atomic_write`` / ``atomic_path`` write to a temporary file beside the target, fsync it,
swap it in with ``os.replace`` and fsync the folder, so a reader or a crash at any instant sees the
old content or the new, never a part, and the new content survives a power cut once the call returns.
``append_line`` appends one durable line; ``file_lock`` is an exclusive lock shared by processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import DataError, LockTimeout

# The files of a stage's data folder.
DATA_FILE = "data.parquet"
SCHEMA_FILE = "schema.json"
SPLITS = ("train", "val", "test")
# Files inside folders that params.yaml names (paths.init_model, paths.onnx_int8): defined once here,
# torch-free, because the retrain flow places and reads them without loading the engine.
INIT_FILE = "model.pt"  # in paths.init_model: the checkpoint a warm start fine-tunes ...
INIT_ENCODER_FILE = "preprocessor.json"  # ... and the encoder it was trained with (optional)
INT8_FILE = "model.onnx"  # in paths.onnx_int8: the dynamically quantised model


TEMP_SUFFIX = ".tmp"


# ---------------------------------------------------------------- durable writes and locks


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new entry in ``path`` durable (the data fsync alone does not cover the name)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_leftovers(path: str | Path) -> list[Path]:
    """Temporaries of ``atomic_path(path)`` left by a crashed writer (the names only it uses)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"))


@contextmanager
def atomic_path(path: str | Path, *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on a clean exit it durably replaces ``path``.

    Use it for writers that want a path (Parquet, CSV); ``atomic_write`` for bytes or text. The file is
    fsynced, given ``mode`` if one is set (else the usual umask permissions), renamed over ``path`` and the
    folder fsynced. On an exception the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, so folder scans skip it; pid + random so concurrent writers never share one.
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        yield temporary
        fsync_file(temporary)
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | str, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8): old or new content survives any crash."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(path, mode=mode) as temporary:
        temporary.write_bytes(payload)


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` and a newline durably (a log's one event).

    A last line torn by a crash mid-append is terminated first, so this line stays readable on its own.
    """
    path = Path(path)
    is_new = not path.exists()
    with open(path, "a+b") as handle:  # O_APPEND: every write lands at the end
        end = handle.seek(0, os.SEEK_END)
        torn = False
        if end > 0:
            handle.seek(end - 1)
            torn = handle.read(1) != b"\n"
        handle.write((b"\n" if torn else b"") + line.encode() + b"\n")  # one write: one line
        handle.flush()
        os.fsync(handle.fileno())
    if is_new:
        fsync_dir(path.parent)


@contextmanager
def file_lock(path: str | Path, timeout: float | None = None, *, poll_interval: float = 0.05) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) across processes, via ``filelock``.

    ``timeout``: seconds to wait for another holder; None waits for ever, 0 tries once. Past it,
    raises LockTimeout naming the file. A process that dies releases its lock (flock on POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path, timeout=-1 if timeout is None else timeout, poll_interval=poll_interval)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockTimeout(f"{path}: locked by another process for more than {timeout:g}s") from None
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------- JSON and tables


def write_json(path: str | Path, payload: Any, *, mode: int | None = None) -> None:
    """Write JSON deterministically (sorted keys) so unchanged results give unchanged files; atomically, durably."""
    atomic_write(path, json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n", mode=mode)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run the upstream stage first: dvc repro)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet file written by an upstream stage."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the upstream stage first: dvc repro)")
    return pd.read_parquet(path)


def table_rows(path: str | Path) -> int:
    """The number of rows of a Parquet file, from its footer (nothing else is read)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the upstream stage first: dvc repro)")
    return pq.ParquetFile(path).metadata.num_rows


def iter_table(path: str | Path, rows: int = 65_536) -> Iterator[pd.DataFrame]:
    """A Parquet file as DataFrames of at most ``rows`` rows, in order: memory bounded by one chunk."""
    table_rows(path)  # a missing file is one line naming it
    file = pq.ParquetFile(path)
    for batch in file.iter_batches(batch_size=rows):
        yield pa.Table.from_batches([batch], schema=file.schema_arrow).to_pandas()


def read_table_sample(path: str | Path, max_rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    """(rows, total): every row of a Parquet file when it has at most ``max_rows``, else a seeded uniform sample
    of ``max_rows`` of them in file order, read chunk by chunk so memory holds the sample, not the file."""
    total = table_rows(path)
    if total <= max_rows:
        return read_table(path), total
    keep = np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))
    file, parts, offset = pq.ParquetFile(path), [], 0
    for batch in file.iter_batches(batch_size=65_536):
        lo, hi = np.searchsorted(keep, [offset, offset + batch.num_rows])
        if hi > lo:
            parts.append(batch.take(pa.array(keep[lo:hi] - offset)))
        offset += batch.num_rows
    return pa.Table.from_batches(parts, schema=file.schema_arrow).to_pandas(), total


def write_table(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a table as Parquet, atomically and durably."""
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a table as CSV (plot data for ``dvc plots``), atomically and durably."""
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)


def split_file(directory: str | Path, split: str) -> Path:
    return Path(directory) / f"{split}.parquet"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def frame_sha256(frame: pd.DataFrame) -> str:
    """Content hash of a table, independent of how it was stored on disk."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


def read_column(path: str | Path, name: str) -> pd.Series:
    """One column of a Parquet file, as ``read_table`` would give it; the other columns stay on disk."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the upstream stage first: dvc repro)")
    if name not in pq.ParquetFile(path).schema_arrow.names:
        raise DataError(f"{path}: no column {name!r}")
    return pd.read_parquet(path, columns=[name])[name]
