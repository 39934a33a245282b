"""Batch scoring of image and sequence models (``python -m serving.batch`` picks this by the model card's kind;
tables of tabular rows or of texts are streamed by ``serving.batch`` itself).

Images: a folder (the ImageFolder layout ``<class>/<file>``, whose folder names are kept as ``class``, or
flat files) of PNG/JPEG files, or an ``.npz`` with ``x`` (images [N, H, W], [N, H, W, C] or [N, C, H, W]
in the model's raw pixel scale) and optionally ``y`` (kept as ``class``). Files are decoded exactly as the
service decodes a base64 image (``pipeline.kinds.image.records``), ``SCORING_BATCH`` at a time, each slice
one row group. Output: ``file`` (path under the folder) or ``index`` (in the .npz), ``class`` when known,
``label``, one ``proba_<class>`` per class, ``model_version``.

Sequences: a long table (.csv, .parquet) with the card's time column, features and (optionally) series
column. Each series' latest window (its last ``lookback`` rows), or with ``every_window`` every window
of ``lookback`` consecutive steps; a window with a gap or a missing value is skipped and counted (one
warning naming the series). A later row for the same (series, time) wins. Output: ``series``,
``window_end`` (the last input step), then a forecaster's ``forecast_<h>`` and ``time_<h>`` per horizon step
(target units), or a classifier's ``label`` and ``proba_<class>``; ``model_version``.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_path
from pipeline.kinds.base import RecordError
from pipeline.kinds.image.data import IMAGE_INPUT, SCORING_BATCH, refuse_oversized_npz
from pipeline.kinds.image.records import ImageFeedSchema, decode_bytes
from pipeline.kinds.sequence.data import WINDOW_INPUT
from pipeline.kinds.sequence.records import WindowSchema
from pipeline.onnxio.card import ImageCard, SequenceCard

log = logging.getLogger(__name__)

IMAGE_FILES = (".png", ".jpg", ".jpeg")
MAX_UNREADABLE_SHARE = 0.01  # as ingest's default: a few bad files are reported, more stop the run
RUN_WINDOWS = 8192  # windows per onnxruntime call (a [8192, 96, 3] float32 slice is 9 MB)


def _summary(rows: int, started: float, **extra: Any) -> dict[str, Any]:
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds if seconds > 0 else 0.0, **extra}


def _proba_columns(probabilities: np.ndarray, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    by_class = np.ascontiguousarray(np.asarray(probabilities, dtype=np.float32).T)  # [K, N]
    return {f"proba_{name}": by_class[k] for k, name in enumerate(classes)}


# ---------------------------------------------------------------- images


def image_sources(path: Path) -> tuple[list[tuple[str, str | None, Path]], list[str]]:
    """(name under the folder, class folder or None, file) of every PNG/JPEG file, in name order; and the other files."""
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]
    files: list[tuple[Path, str | None]]
    if folders:  # ImageFolder: one folder per class
        files = [(f, d.name) for d in folders for f in sorted(d.iterdir()) if f.is_file() and not f.name.startswith(".")]
    else:
        files = [(f, None) for f in entries if f.is_file()]
    images = [(str(f.relative_to(path)), label, f) for f, label in files if f.suffix.lower() in IMAGE_FILES]
    others = [str(f.relative_to(path)) for f, _ in files if f.suffix.lower() not in IMAGE_FILES]
    if not images:
        raise DataError(f"{path}: no PNG or JPEG files ({', '.join(IMAGE_FILES)}) in the folder or its class folders")
    return images, others


def npz_images(path: Path, schema: ImageFeedSchema) -> tuple[np.ndarray, np.ndarray | None]:
    """x float32 [N, C, H, W] in the model's raw scale (checked) and the labels y, when the archive has them."""
    try:
        refuse_oversized_npz(path)
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise DataError(f"{path}: needs an array 'x' of images; found {sorted(archive.files)}")
            x, y = archive["x"], (archive["y"].astype(str) if "y" in archive.files else None)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # EOFError: an empty file
        raise DataError(
            f"{path}: not a readable .npz file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating) or x.dtype == bool:
        raise DataError(f"{path}: x has dtype {x.dtype}; expected real numbers (pixels)")
    c, h, w = schema.shape
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1:] != (c, h, w) and x.shape[1:] == (h, w, c):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1:] != (c, h, w):
        raise DataError(
            f"{path}: x has shape {list(x.shape)}; the model takes images [N, {c}, {h}, {w}] (or [N, {h}, {w}, {c}])"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    low, high = schema.value_range
    outside = ~np.isfinite(x) | (x < low) | (x > high)
    if outside.any():
        first = int(np.argmax(outside.reshape(len(x), -1).any(axis=1)))
        raise DataError(
            f"{path}: image {first} has pixels that are not finite or outside the model's raw scale {low:g}..{high:g}"
        )
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: y has {len(y)} labels for {len(x)} images")
    return x, y


def image_chunks(path: Path, schema: ImageFeedSchema) -> Iterator[tuple[dict[str, Any], np.ndarray, list[str]]]:
    """(passthrough columns, x [n, C, H, W], unreadable files) per slice of ``SCORING_BATCH`` images."""
    if path.is_dir():
        sources, others = image_sources(path)
        if others:
            log.warning("%s: %d file(s) that are not PNG/JPEG were not read, e.g. %s", path, len(others), others[0])
        folder_layout = sources[0][1] is not None
        for start in range(0, len(sources), SCORING_BATCH):
            names, classes, pixels, unreadable = [], [], [], []
            for name, label, file in sources[start : start + SCORING_BATCH]:
                try:
                    pixels.append(decode_bytes(file.read_bytes(), schema, str(file)))
                except (RecordError, OSError) as exc:  # counted and reported; too many stop the run (below)
                    log.warning("%s", exc if isinstance(exc, RecordError) else f"{file}: unreadable ({exc.strerror or exc})")
                    unreadable.append(name)
                    continue
                names.append(name)
                classes.append(label)
            columns: dict[str, Any] = {"file": names} | ({"class": classes} if folder_layout else {})
            x = np.stack(pixels) if pixels else np.zeros((0, *schema.shape), np.float32)
            yield columns, x, unreadable
        return
    if path.suffix.lower() != ".npz":
        raise DataError(f"{path}: images are scored from a folder of PNG/JPEG files or an .npz file, not {path.suffix!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    x, y = npz_images(path, schema)
    for start in range(0, len(x), SCORING_BATCH):
        stop = min(start + SCORING_BATCH, len(x))
        columns = {"index": np.arange(start, stop, dtype=np.int64)} | ({"class": y[start:stop]} if y is not None else {})
        yield columns, x[start:stop], []


def score_images(input_path: Path, output_path: Path, session: Any, card: ImageCard, version: str) -> dict[str, Any]:
    """Every image of a folder or .npz into a Parquet file of labels and class probabilities."""
    schema = ImageFeedSchema.of(card)
    started = time.perf_counter()
    rows, unreadable = 0, []
    writer: pq.ParquetWriter | None = None
    with atomic_path(output_path) as temporary:
        try:
            for columns, x, bad in image_chunks(input_path, schema):
                unreadable += bad
                if not len(x):
                    continue
                probabilities, labels = session.run(["probabilities", "label"], {IMAGE_INPUT: x})
                table = pa.table(
                    {
                        **columns,
                        "label": pa.array(labels.astype(str), pa.string()),
                        **_proba_columns(probabilities, card.classes),
                        "model_version": pa.repeat(version, len(x)),
                    }
                )
                writer = writer or pq.ParquetWriter(temporary, table.schema)
                writer.write_table(table)
                rows += len(x)
        finally:
            if writer is not None:
                writer.close()
        total = rows + len(unreadable)
        if unreadable and (len(unreadable) > MAX_UNREADABLE_SHARE * total or not rows):
            raise DataError(
                f"{input_path}: {len(unreadable)} of {total} images unreadable (e.g. {unreadable[0]}), "
                f"more than {MAX_UNREADABLE_SHARE:.0%}"
            )
        if writer is None:
            raise DataError(f"{input_path}: no image to score")
    return _summary(rows, started, unreadable=unreadable)


# ---------------------------------------------------------------- sequences


def read_long_table(path: Path, schema: WindowSchema) -> pd.DataFrame:
    """The table's series, time and feature columns, times parsed, sorted; a later row for the same (series, time) wins."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DataError(f"{path}: a long table is scored from .csv, .parquet or .pq, not {path.suffix!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError, pd.errors.ParserError, pa.ArrowException) as exc:
        raise DataError(
            f"{path}: not a readable table ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    missing = [c for c in (schema.time_column, *schema.features) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing the model's column(s) {missing}; the file has {list(frame.columns)}")
    series = schema.series_column
    if series not in frame.columns:  # one series
        frame = frame.assign(**{series: pd.NA})
    frame = frame[[series, schema.time_column, *schema.features]].copy()
    time_column = schema.time_column
    if schema.datetime:
        if not pd.api.types.is_datetime64_any_dtype(frame[time_column]):
            try:
                frame[time_column] = pd.to_datetime(frame[time_column], format="ISO8601")
            except (ValueError, TypeError) as exc:
                raise DataError(
                    f"{path}: column {time_column!r} is not ISO 8601 date-times ({str(exc).splitlines()[0]})"
                ) from None
        if isinstance(frame[time_column].dtype, pd.DatetimeTZDtype):
            frame[time_column] = frame[time_column].dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_integer_dtype(frame[time_column]):
        raise DataError(
            f"{path}: column {time_column!r} must hold whole numbers (the model's frequency is {schema.frequency})"
        )
    for name in schema.features:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")  # text that is no number: missing, its window skipped
    frame = frame.drop_duplicates([series, time_column], keep="last")
    return frame.sort_values([series, time_column], kind="stable")


def series_windows(times: np.ndarray, values: np.ndarray, schema: WindowSchema, every: bool) -> np.ndarray:
    """The last row of every complete window of one series (rows in time order): ``lookback`` rows on the
    card's grid, each with every feature present; only the latest when ``every`` is false."""
    lookback = schema.lookback
    if len(times) < lookback:
        return np.zeros(0, np.int64)
    if isinstance(schema.frequency, str):
        following = (pd.DatetimeIndex(times[:-1]) + pd.tseries.frequencies.to_offset(schema.frequency)).to_numpy()
    else:
        following = times[:-1] + schema.frequency
    on_grid = np.concatenate([[False], times[1:] == following])
    present = np.isfinite(values).all(axis=1)
    run = np.zeros(len(times), np.int64)  # consecutive usable steps ending at each row
    for j in range(len(times)):
        run[j] = 0 if not present[j] else (run[j - 1] + 1 if j and on_grid[j] else 1)
    if every:
        return np.flatnonzero(run >= lookback)
    last = len(times) - 1
    return np.array([last]) if run[last] >= lookback else np.zeros(0, np.int64)


def score_windows(
    input_path: Path, output_path: Path, session: Any, card: SequenceCard, version: str, every_window: bool = False
) -> dict[str, Any]:
    """Each series' latest window (or every window) of a long table into a Parquet file of forecasts or labels."""
    schema = WindowSchema.of(card)
    started = time.perf_counter()
    frame = read_long_table(input_path, schema)
    series_column, time_column, lookback = schema.series_column, schema.time_column, schema.lookback
    xs, names, ends, skipped = [], [], [], []
    for key, part in frame.groupby(series_column, sort=True, dropna=False):
        times = part[time_column].to_numpy()
        values = part[list(schema.features)].to_numpy(np.float64)
        last_rows = series_windows(times, values, schema, every_window)
        if not len(last_rows):
            skipped.append(None if pd.isna(key) else key)
            continue
        view = np.lib.stride_tricks.sliding_window_view(values, lookback, axis=0)  # [T - L + 1, F, L]
        xs.append(view[last_rows - lookback + 1].transpose(0, 2, 1).astype(np.float32))
        names.append(np.full(len(last_rows), None if pd.isna(key) else key, dtype=object))
        ends.append(times[last_rows])
    if skipped:
        log.warning(
            "%s: %d series without a complete window of %d steps on the %s grid (gaps or missing values), e.g. %r",
            input_path,
            len(skipped),
            lookback,
            schema.frequency,
            skipped[0],
        )
    if not xs:
        raise DataError(f"{input_path}: no series has a complete window of {lookback} steps without gaps or missing values")
    x, end = np.concatenate(xs), np.concatenate(ends)
    outputs = [
        session.run(list(schema.outputs), {WINDOW_INPUT: x[i : i + RUN_WINDOWS]}) for i in range(0, len(x), RUN_WINDOWS)
    ]
    columns: dict[str, Any] = {"series": pa.array(np.concatenate(names), from_pandas=True), "window_end": end}
    if schema.forecast:
        forecast = np.concatenate([o[0] for o in outputs]).astype(np.float32)  # [N, H], target units
        for h in range(schema.horizon):
            columns[f"forecast_{h + 1}"] = forecast[:, h]
            columns[f"time_{h + 1}"] = (
                (pd.DatetimeIndex(end) + (h + 1) * pd.tseries.frequencies.to_offset(schema.frequency)).to_numpy()
                if schema.datetime
                else end + (h + 1) * int(schema.frequency)
            )
    else:
        columns["label"] = pa.array(np.concatenate([o[1] for o in outputs]).astype(str), pa.string())
        columns |= _proba_columns(np.concatenate([o[0] for o in outputs]), schema.classes)
    columns["model_version"] = pa.repeat(version, len(x))
    with atomic_path(output_path) as temporary:
        pq.write_table(pa.table(columns), temporary)
    return _summary(len(x), started, windows=len(x), series_skipped=len(skipped))
