"""The image kind's drift frame (no torch): per-image statistics as numbers and, given the production
model, the class it predicts for each image, in a fixed set of columns.

The rows come from ``pipeline.kinds.image.landing`` (landed batches and the training split) or from the
prediction log (``pipeline.kinds.image.records.log_inputs`` keeps the same statistics of every served
image). A column a source lacks (a log written before sizes were kept) is all-missing here, and the drift
check leaves it out naming it, so one absent statistic never stops the comparison of the others.

The predicted class (``PREDICTED``, text): a logged row carries the class the service answered
(``LOGGED_LABEL``), used as it is; a landed row (or the reference's) carries where its image lives
(``SOURCE_COLUMN``, ``INDEX_COLUMN``), and those images are classified here with onnxruntime, one read of
each batch, ``SCORING_BATCH`` images per run. The pixels are the ones ``landing.read_batch`` reads (the
rows' statistics come from them, and ingest trains on them), checked against the model's input as the
service checks a pixel array (``ImageFeedSchema``): for a landed PNG/JPEG the class is the one the service
answers for the same file (a test holds them equal). Scoring is bounded: a frame of more rows than the
monitor compares (``monitor.reference_sample``/``current_sample``, whichever is larger) is first sampled
down to that many (seeded), since the check would never look at the others.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import LOGGED_LABEL
from pipeline.kinds.image.data import IMAGE_INPUT, SCORING_BATCH
from pipeline.kinds.image.landing import DRIFT_COLUMNS, INDEX_COLUMN, SOURCE_COLUMN, read_batch
from pipeline.kinds.image.records import ImageFeedSchema
from pipeline.onnxio.card import LABEL
from pipeline.onnxio.session import ort_session
from pipeline.params import ImageIngest

log = logging.getLogger(__name__)


def statistics_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``DRIFT_COLUMNS`` of ``frame`` as float64 (text that is no number and infinities missing)."""
    columns = {}
    for name in DRIFT_COLUMNS:
        column = frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)
        columns[name] = pd.to_numeric(column, errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
    return pd.DataFrame(columns, index=frame.index)


def bounded(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """``frame``, or ``rows`` of its rows drawn without replacement (kept in order) when it has more."""
    if len(frame) <= rows:
        return frame
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=rows, replace=False))
    return frame.iloc[keep]


def model_labels(session: Any, x: np.ndarray) -> np.ndarray:
    """The model's ``label`` output for images x float32 [N, C, H, W], ``SCORING_BATCH`` at a time: text [N]."""
    parts = [session.run([LABEL], {IMAGE_INPUT: x[i : i + SCORING_BATCH]})[0] for i in range(0, len(x), SCORING_BATCH)]
    return np.concatenate(parts).astype(str) if parts else np.array([], dtype=str)


def batch_pixels(source: Path, indices: np.ndarray, cfg: ImageIngest, schema: ImageFeedSchema) -> np.ndarray:
    """The images at ``indices`` of the batch ``source`` as the landing screen read it: float32 [n, C, H, W]
    in the raw pixel scale, checked against what the model takes (one line naming the file)."""
    x = read_batch(source, cfg).x
    if len(indices) and int(indices.max()) >= len(x):
        raise DataError(f"{source}: holds {len(x)} images, no image {int(indices.max())}: it changed since it was read")
    if tuple(x.shape[1:]) != schema.shape:
        raise DataError(
            f"{source}: images are {list(x.shape[1:])} as ingest reads them now, the production model takes {list(schema.shape)}"
        )
    return np.ascontiguousarray(x[indices], dtype=np.float32)


def predicted_classes(frame: pd.DataFrame, schema: ImageFeedSchema, cfg: ImageIngest, model: Path) -> pd.Series:
    """The production model's class for each row of ``frame`` (pandas text; missing where a row says neither
    what was answered nor where its image lives): the logged answer, or the model run on the row's image."""
    values = np.full(len(frame), None, dtype=object)
    if LOGGED_LABEL in frame.columns:
        logged = frame[LOGGED_LABEL].to_numpy(dtype=object)
        answered = pd.notna(logged)
        values[answered] = logged[answered].astype(str)
    if SOURCE_COLUMN in frame.columns and INDEX_COLUMN in frame.columns:
        sources = frame[SOURCE_COLUMN].to_numpy(dtype=object)
        indices = pd.to_numeric(frame[INDEX_COLUMN], errors="coerce").to_numpy(dtype=np.float64)
        todo = pd.isna(values) & pd.notna(sources) & np.isfinite(indices)
        if todo.any():
            started = time.perf_counter()
            session = ort_session(model)
            for source in dict.fromkeys(sources[todo]):  # each batch read once, in the frame's order
                rows = np.flatnonzero(todo & (sources == source))
                pixels = batch_pixels(Path(source), indices[rows].astype(np.int64), cfg, schema)
                values[rows] = model_labels(session, pixels)
            log.info("classified %d image(s) with %s in %.2f s", int(todo.sum()), model, time.perf_counter() - started)
    return pd.Series(values, index=frame.index, dtype="string")
