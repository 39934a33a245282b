"""The image kind's landed batches (no torch): which entries are batches, the check of one, and its drift rows.

A batch is an ``.npz`` like the kind's split files (``x`` images [N, H, W], [N, H, W, C] or [N, C, H, W];
``y`` labels [N], optional: unlabelled images still count for drift, ingest trains on labelled ones only)
or a folder in the ImageFolder layout (``<batch>/<class>/<image files>``). Either is read as ingest reads
its source (``ingest.mode`` and ``ingest.size``) and must then match the source's images: the same
channels x height x width and pixel values inside the source's scale, since ingest stacks batches under
the source rows and the model takes one raw scale. Moving a bad batch aside is the lifecycle's
(``pipeline.lifecycle.landing``); ingest reads the same batches through ``landed_batches``.

The drift monitor compares per-image statistics, never pixels: brightness, contrast and sharpness on the
0..1 scale of the source's pixel range (the same statistics, computed by the same function, as the
prediction log keeps for served images), and the height and width as landed (before any resize). Each row
also says where its image lives: the batch it was read from and its position there (``SOURCE_COLUMN``,
``INDEX_COLUMN``, private columns the drift frame drops), so the drift frame can have the production
model classify exactly these images (``pipeline.kinds.image.drift``) without a frame ever holding pixels.
"""

from __future__ import annotations

import functools
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.core.errors import DataError
from pipeline.kinds.base import LandingScreen
from pipeline.kinds.image.data import refuse_oversized_npz
from pipeline.kinds.image.ingest import (
    BYTE_RANGE,
    DIGITS_RANGE,
    as_nchw,
    decode_image,
    image_files,
    load_digits_images,
    read_npz_source,
    resize,
    to_mode,
)
from pipeline.kinds.image.records import image_statistics
from pipeline.params import DEFAULT_SOURCE, ImageIngest
from pipeline.shared.tables import first_line

log = logging.getLogger(__name__)

BATCH_SUFFIXES = frozenset({".npz"})
# The drift frame's columns: what ``image_statistics`` gives, and the size as landed.
STATISTICS = ("brightness", "contrast", "sharpness")
SIZE = ("height", "width")
DRIFT_COLUMNS = (*STATISTICS, *SIZE)
# Where a row's image lives: the batch (an .npz or an ImageFolder folder, as read) and its position in
# ``read_batch``'s images. Private: never compared, dropped by the drift frame.
SOURCE_COLUMN = "__image_source__"
INDEX_COLUMN = "__image_index__"
# Pixel values may pass the source's scale by float rounding (a resize, a float32 round trip), not more.
SCALE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SourceImages:
    """What every landed batch must match: the source's pixel scale and the shape of one image [C, H, W]."""

    value_range: tuple[float, float]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ImageBatch:
    """One landed batch, converted as ingest converts its source."""

    x: np.ndarray  # float32 [N, C, H, W] in ingest.mode and ingest.size, raw pixel scale
    y: np.ndarray | None  # labels [N] as text; None for an unlabelled .npz
    sizes: np.ndarray  # int [N, 2]: each image's height and width as landed (before any resize)


def source_images(cfg: ImageIngest) -> SourceImages:
    """The source's pixel scale and image shape, read from as little of it as tells them (one image of a folder)."""
    if cfg.source == DEFAULT_SOURCE:
        x, _ = load_digits_images()
        return SourceImages(DIGITS_RANGE, resize(to_mode(x[:1], cfg.mode), cfg.size).shape[1:])
    path = Path(cfg.source)
    if path.is_dir():
        files, _ = image_files(path)
        return SourceImages(BYTE_RANGE, decode_image(files[0][0], cfg).shape)
    x, _, value_range = read_npz_source(path)
    return SourceImages(value_range, resize(to_mode(x[:1], cfg.mode), cfg.size).shape[1:])


def read_npz_batch(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A landed .npz: ``x`` [N, C, H, W] float32 and ``y`` (None when the batch has no labels)."""
    try:
        refuse_oversized_npz(path)
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise DataError(
                    f"{path}: needs an array 'x' (images) and optionally 'y' (labels); found {sorted(archive.files)}"
                )
            x = archive["x"]
            y = archive["y"] if "y" in archive.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({first_line(exc)})") from None
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating) or x.dtype == bool:
        raise DataError(f"{path}: x has dtype {x.dtype}; expected real numbers (uint8 or float pixels)")
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise DataError(f"{path}: y has shape {list(y.shape)}; expected one label per image ({len(x)})")
    return as_nchw(x, path).astype(np.float32), None if y is None else y.astype(str)


def read_folder_batch(folder: Path, cfg: ImageIngest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A landed ImageFolder tree: images [N, C, H, W], labels, sizes as landed [N, 2]. An unreadable file
    makes the whole batch bad (it names the file): a batch is landed whole, or not at all. A link anywhere
    in it makes it bad too: links are never followed out of the landing area."""
    links = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_symlink())
    if links:
        raise DataError(f"{folder}: holds symbolic link(s) {links[:3]}; a landed batch holds its own files only")
    files, others = image_files(folder)
    if others:
        log.warning("%s: %d file(s) that are not images were not read, e.g. %s", folder.name, len(others), others[0])
    images, sizes = [], []
    for path, _ in files:
        try:
            with Image.open(path) as opened:
                sizes.append((opened.height, opened.width))
            images.append(decode_image(path, cfg))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # what Pillow raises
            raise DataError(f"{path}: unreadable image ({first_line(exc)})") from None
        if images[-1].shape != images[0].shape:
            raise DataError(
                f"{path}: image is {sizes[-1][0]}x{sizes[-1][1]} but {files[0][0].name} is {sizes[0][0]}x{sizes[0][1]}; "
                "set ingest.size: [height, width] to resize every image"
            )
    return np.stack(images), np.array([label for _, label in files]), np.array(sizes, dtype=np.int64)


def read_batch(path: Path, cfg: ImageIngest) -> ImageBatch:
    """A landed .npz or ImageFolder tree as ingest would read it (mode and size converted); DataError naming it."""
    if path.is_dir():
        x, y, sizes = read_folder_batch(path, cfg)
        return ImageBatch(x, y, sizes)
    if path.suffix.lower() not in BATCH_SUFFIXES:
        raise DataError(f"{path}: image batches are .npz files or ImageFolder folders, not {path.suffix!r}")
    x, labels = read_npz_batch(path)
    sizes = np.tile(np.array(x.shape[2:], dtype=np.int64), (len(x), 1))
    return ImageBatch(resize(to_mode(x, cfg.mode), cfg.size), labels, sizes)


def batch_problems(batch: ImageBatch, source: SourceImages) -> list[str]:
    """Why a read batch cannot be stacked under the source (empty: it can)."""
    x = batch.x
    if len(x) == 0:
        return ["holds no images"]
    problems = []
    if tuple(x.shape[1:]) != tuple(source.shape):
        c, h, w = source.shape
        problems.append(
            f"images are {x.shape[1]}x{x.shape[2]}x{x.shape[3]} (channels x height x width), the source's {c}x{h}x{w}; "
            "set ingest.size to resize every image"
        )
    finite = np.isfinite(x)
    if not finite.all():
        problems.append(f"{int((~finite).sum())} pixel values are not finite numbers")
    if finite.any():
        low, high = float(x[finite].min()), float(x[finite].max())
        lo, hi = source.value_range
        slack = SCALE_TOLERANCE * max(hi - lo, 1.0)
        if low < lo - slack or high > hi + slack:
            problems.append(
                f"pixel values span [{low:g}, {high:g}], outside the source's scale [{lo:g}, {hi:g}]: land them in the source's scale"
            )
    return problems


def statistics_frame(batch: ImageBatch, value_range: tuple[float, float], target: str, source: Path) -> pd.DataFrame:
    """One row per image: brightness, contrast, sharpness (0..1 scale of ``value_range``), height and width
    as landed, the label as ``target`` when the batch has labels, and where the image lives (``source``,
    the batch's path, and its position in it)."""
    stats = image_statistics(batch.x, value_range)
    columns: dict[str, object] = {name: np.asarray(stats[name], dtype=np.float64) for name in STATISTICS}
    columns |= {"height": batch.sizes[:, 0].astype(np.float64), "width": batch.sizes[:, 1].astype(np.float64)}
    if batch.y is not None:
        columns[target] = batch.y
    columns |= {SOURCE_COLUMN: str(source), INDEX_COLUMN: np.arange(len(batch.x), dtype=np.int64)}
    return pd.DataFrame(columns)


def landed_entries(landing: Path) -> list[Path]:
    """The landing area's image batches as ingest reads them: .npz files and folders, in name order; hidden
    entries (a batch being written) and links (never followed) are skipped, as for tables."""
    if not landing.is_dir():
        return []
    return sorted(
        p
        for p in landing.iterdir()
        if not p.name.startswith(".") and not p.is_symlink() and (p.is_dir() or p.suffix.lower() in BATCH_SUFFIXES)
    )


def landed_batches(landing: Path, cfg: ImageIngest, source: SourceImages) -> list[tuple[Path, ImageBatch]]:
    """Every landed batch, read and checked as the landing screen checks it; a bad one stops ingest naming it
    (the screen quarantines bad batches before a retrain, so one here was landed after it ran)."""
    batches = []
    for path in landed_entries(landing):
        batch = read_batch(path, cfg)
        problems = batch_problems(batch, source)
        if problems:
            raise DataError(f"{path}: landed batch cannot be used: {'; '.join(problems)}")
        batches.append((path, batch))
    return batches


def landing_screen(cfg: ImageIngest) -> LandingScreen:
    """The image kind's landing rule for ``cfg`` (the source's scale and shape are read once, here)."""
    source = source_images(cfg)

    # Screening checks a batch and then counts it: the decoded batch is kept for the second call (the key
    # holds the file's size and change time, so a batch replaced in between is read again).
    @functools.lru_cache(maxsize=2)
    def cached(path: Path, _stamp: tuple[int, int]) -> ImageBatch:
        return read_batch(path, cfg)

    def load(path: Path) -> ImageBatch:
        info = os.stat(path)
        return cached(path, (info.st_mtime_ns, info.st_size))

    return LandingScreen(
        problems=lambda path: batch_problems(load(path), source),
        rows=lambda path: len(load(path).x),
        read=lambda path: statistics_frame(load(path), source.value_range, cfg.target, path),
        suffixes=BATCH_SUFFIXES,
        folders=True,
    )
