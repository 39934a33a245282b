"""Image ingest: read the images and their labels, take the ``max_rows`` slice, write them with a schema and a profile.

Inputs:  ``ingest.source`` - ``default``, scikit-learn's bundled handwritten digits (1,797 real 8x8
         scans, pixel values 0..16, classes "0".."9"); a folder with one sub-folder of image files
         per class (the ImageFolder layout, decoded with Pillow, ``ingest.mode`` grayscale or
         RGB, resized to ``ingest.size`` when set); or a ``.npz`` file with arrays ``x``
         (images [N, H, W], [N, H, W, C] or [N, C, H, W], C = 1 or 3) and ``y`` (labels [N]).
         Plus every batch in ``paths.landing`` (.npz or ImageFolder folders, ``pipeline.kinds.image.landing``):
         labelled ones are stacked under the source's slice, unlabelled ones are left to the drift monitor.
Outputs: ``paths.ingested``/images.npz and schema.json, ``paths.ingest_report`` (profile).
Params:  ``ingest``, ``seed``.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from pipeline.core.errors import DataError
from pipeline.core.io import write_json
from pipeline.kinds.image.data import KIND, ImageSchema, class_balance, images_sha256, write_dataset
from pipeline.params import DEFAULT_SOURCE, ImageIngest, Paths
from pipeline.shared.tables import first_line, slice_indices, warn_if_untracked

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
DIGITS_SOURCE = "sklearn:load_digits"
DIGITS_RANGE = (0.0, 16.0)  # load_digits counts ink in 4x4 blocks of a 32x32 bitmap: 0..16
BYTE_RANGE = (0.0, 255.0)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's convert("L")


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits: x float32 [1797, 1, 8, 8] in 0..16, labels "0".."9"."""
    bunch = load_digits()
    return bunch.images.astype(np.float32)[:, None], bunch.target.astype(str)


def as_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    """[N, H, W] (grayscale), [N, H, W, C] or [N, C, H, W] with C = 1 or 3 -> [N, C, H, W]."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    raise DataError(f"{path}: x has shape {list(x.shape)}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3")


def read_npz_source(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A user's .npz with ``x`` (images) and ``y`` (labels); the pixel scale is 0..255 for bytes, else as found."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not {"x", "y"} <= set(archive.files):
                raise DataError(f"{path}: needs arrays 'x' (images) and 'y' (labels); found {sorted(archive.files)}")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({first_line(exc)})") from None
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: y has shape {list(y.shape)}; expected one label per image ({len(x)})")
    if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)) or x.dtype == bool:
        raise DataError(f"{path}: x has dtype {x.dtype}; expected real numbers (uint8 or float pixels)")
    x = as_nchw(x, path)
    finite = x[np.isfinite(x)] if np.issubdtype(x.dtype, np.floating) else x
    if x.dtype == np.uint8:
        value_range = BYTE_RANGE
    elif finite.size:
        value_range = (float(finite.min()), float(finite.max()))
    else:
        raise DataError(f"{path}: x holds no finite pixel value")
    return x.astype(np.float32), y.astype(str), value_range


def image_files(folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(file, class) for every image file of an ImageFolder layout, in name order; and the other files found."""
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{folder}: no class folders; expected the ImageFolder layout <source>/<class>/<image files>")
    files, others = [], []
    for directory in classes:
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append((path, directory.name))
            else:
                others.append(str(path))
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    return files, others


def decode_image(path: Path, cfg: ImageIngest) -> np.ndarray:
    """One image file as float32 [C, H, W] in 0..255: converted to the mode, resized to the size if set."""
    with Image.open(path) as opened:
        image = opened.convert("L" if cfg.mode == "grayscale" else "RGB")
        if cfg.size is not None and image.size != (cfg.size[1], cfg.size[0]):
            image = image.resize((cfg.size[1], cfg.size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_image_folder(folder: Path, cfg: ImageIngest) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]], list[str]]:
    """Decode an ImageFolder tree: images [N, C, H, W], labels (the class folder names), the unreadable
    files with their reasons, and the non-image files seen. Too many unreadable files, or sizes that
    differ without ``ingest.size``, stop the stage naming the file."""
    files, others = image_files(folder)
    images: list[np.ndarray] = []
    labels: list[str] = []
    unreadable: list[dict[str, str]] = []
    for path, label in files:
        try:
            pixels = decode_image(path, cfg)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # what Pillow raises for bad files
            unreadable.append({"file": str(path), "reason": first_line(exc)})
            log.warning("%s: unreadable image, skipped (%s)", path, unreadable[-1]["reason"])
            continue
        if images and pixels.shape != images[0].shape:
            raise DataError(
                f"{path}: image is {pixels.shape[1]}x{pixels.shape[2]} but {files[0][0]} is "
                f"{images[0].shape[1]}x{images[0].shape[2]}; set ingest.size: [height, width] to resize every image"
            )
        images.append(pixels)
        labels.append(label)
    if len(unreadable) > cfg.max_unreadable_share * len(files) or not images:
        first = unreadable[0]
        raise DataError(
            f"{first['file']}: unreadable image ({first['reason']}); {len(unreadable)} of {len(files)} files unreadable, "
            f"more than ingest.max_unreadable_share = {cfg.max_unreadable_share}"
        )
    return np.stack(images), np.array(labels), unreadable, others


def to_mode(x: np.ndarray, mode: str) -> np.ndarray:
    """Arrays to ``ingest.mode``: RGB -> grayscale by luma, grayscale -> RGB by repetition."""
    if mode == "grayscale" and x.shape[1] == 3:
        return np.einsum("nchw,c->nhw", x, LUMA)[:, None].astype(np.float32)
    if mode == "rgb" and x.shape[1] == 1:
        return np.repeat(x, 3, axis=1)
    return x


def resize(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Arrays [N, C, H, W] to ``size`` (height, width), bilinear, channel by channel with Pillow."""
    if size is None or x.shape[2:] == tuple(size):
        return x
    out = np.empty((*x.shape[:2], *size), dtype=np.float32)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[i, c] = np.asarray(Image.fromarray(x[i, c], mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out


def read_source(cfg: ImageIngest) -> tuple[np.ndarray, np.ndarray, tuple[float, float], dict[str, Any]]:
    """Images [N, C, H, W], labels, the raw pixel scale and what the report should say about the source."""
    if cfg.source == DEFAULT_SOURCE:
        x, y = load_digits_images()
        return resize(to_mode(x, cfg.mode), cfg.size), y, DIGITS_RANGE, {"source": DIGITS_SOURCE}
    path = Path(cfg.source)
    if path.is_dir():
        x, y, unreadable, others = read_image_folder(path, cfg)
        if others:
            log.warning("%s: %d file(s) that are not images were not read, e.g. %s", path, len(others), others[0])
        return x, y, BYTE_RANGE, {"source": str(path), "unreadable": unreadable, "not_images": others}
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (ingest.source)")
    if path.suffix.lower() != ".npz":
        raise DataError(
            f"{path}: image data comes from a .npz file or a folder of class folders, not {path.suffix!r} (ingest.source)"
        )
    x, y, value_range = read_npz_source(path)
    return resize(to_mode(x, cfg.mode), cfg.size), y, value_range, {"source": str(path)}


def run(cfg: ImageIngest, paths: Paths, seed: int) -> dict[str, Any]:
    """Read the images, take the ``max_rows`` slice, stack the labelled landed batches under it, check
    ``min_rows``, write them with their schema and a profile."""
    # Imported here: the landing module builds on this one (it reads batches as the source is read).
    from pipeline.kinds.image.landing import SourceImages, landed_batches

    x, y, value_range, about = read_source(cfg)
    warn_if_untracked(cfg.source, paths)
    keep = slice_indices(len(x), cfg.max_rows, seed)
    x, y = x[keep], y[keep]
    # Landed batches are the data after the source: always kept whole (never sliced), checked as the
    # landing screen checks them. Unlabelled ones are for the drift monitor only: nothing to learn here.
    batches = landed_batches(Path(paths.landing), cfg, SourceImages(value_range, x.shape[1:]))
    labelled = [(path, batch) for path, batch in batches if batch.y is not None]
    if labelled:
        x = np.concatenate([x, *(batch.x for _, batch in labelled)])
        y = np.concatenate([y, *(batch.y for _, batch in labelled if batch.y is not None)])
    if len(x) < cfg.min_rows:
        raise DataError(f"only {len(x)} images; ingest.min_rows requires at least {cfg.min_rows}")
    schema = ImageSchema(cfg.target, x.shape[1], x.shape[2], x.shape[3], value_range)
    write_dataset(paths.ingested, x, y, schema)
    finite = np.isfinite(x)
    report = {
        **about,
        "kind": KIND,
        "rows": len(x),
        "shape": list(schema.shape),
        "mode": cfg.mode,
        "value_range": list(value_range),
        "pixel_mean": float(x[finite].mean()) if finite.any() else None,
        "non_finite_pixels": int((~finite).sum()),
        "target": cfg.target,
        "class_balance": class_balance(y),
        "data_sha256": images_sha256(x, y),
        "landed_batches": [
            {"file": path.name, "images": len(batch.x), "labelled": batch.y is not None} for path, batch in batches
        ],
    }
    write_json(paths.ingest_report, report)
    log.info(
        "ingested %d images %s from %s and %d labelled landed batch(es)",
        len(x),
        "x".join(map(str, schema.shape)),
        about["source"],
        len(labelled),
    )
    return report
