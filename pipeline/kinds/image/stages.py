"""Image data (``ingest.kind: image``): the seven stages for labelled images, and the gate's scoring.

Between stages images travel as NumPy archives written by ``np.savez`` (uncompressed and without
timestamps, so the bytes, and DVC's hashes, are a pure function of the content): ``x`` float32
[N, C, H, W] in the raw pixel scale (channels first, as the network and the ONNX model take them)
and ``y`` the labels as text [N]; beside them a ``schema.json`` with ``"kind": "image"``, the
shape, the classes and the pixel ``value_range``.

=========  ===================================  ===============================================
stage      reads                                writes
=========  ===================================  ===============================================
ingest     ``ingest.source``                    ``paths.ingested``/images.npz, schema.json;
                                                ``paths.ingest_report``
clean      ``paths.ingested``                   ``paths.clean``/images.npz, schema.json;
                                                ``paths.clean_report``
split      ``paths.clean``                      ``paths.split``/{train,val,test}.npz, schema.json;
                                                ``paths.split_report``
augment    ``paths.split``/train.npz            ``paths.augmented``/train.npz; ``paths.augment_report``
train      split train (normaliser), val;       (``prepare``) normalised [N, C, H, W] tensors, the
           augmented train (trained on)         CNN's config and the normaliser (the encoder)
evaluate   split train, test; model, encoder    ``paths.eval_metrics``, ``eval_per_class``, ``eval_plots``
export     split test; model, encoder, metrics  ``paths.onnx`` (+ int8), ``model_card``, ``export_report``
=========  ===================================  ===============================================

Sources (``ingest.source``): ``default``, scikit-learn's bundled handwritten digits (1,797 real 8x8
scans, pixel values 0..16, classes "0".."9"); a folder with one sub-folder of image files per
class (the ImageFolder layout, decoded with Pillow, ``ingest.image.mode`` grayscale or RGB,
resized to ``ingest.image.size`` when set); or a ``.npz`` file with arrays ``x`` (images [N, H, W],
[N, H, W, C] or [N, C, H, W], C = 1 or 3) and ``y`` (labels [N]).

Torch, the training loop and the export code are imported inside the functions that use them, so
the data stages start fast and each stage runs only the code that dvc.yaml lists for it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import SCHEMA_FILE, SPLITS, file_sha256, read_json, write_json
from pipeline.params import (
    DEFAULT_SOURCE,
    AugmentParams,
    CleanParams,
    EvaluateParams,
    ExportParams,
    FeatureParams,
    ImageAugmentParams,
    ImageIngestParams,
    IngestParams,
    Paths,
    SplitParams,
    TrainParams,
)

log = logging.getLogger(__name__)

KIND = "image"
IMAGES_FILE = "images.npz"
IMAGE_INPUT = "image"  # the ONNX model's one input
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
DIGITS_SOURCE = "sklearn:load_digits"
DIGITS_RANGE = (0.0, 16.0)  # load_digits counts ink in 4x4 blocks of a 32x32 bitmap: 0..16
BYTE_RANGE = (0.0, 255.0)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's convert("L")
SCORING_BATCH = 1024


# ---------------------------------------------------------------- storage


@dataclass(frozen=True)
class ImageSchema:
    """What a stage's images are: the label's name, the shape of one image, the raw pixel scale, the classes."""

    target: str
    channels: int
    height: int
    width: int
    value_range: tuple[float, float]
    classes: tuple[str, ...] = ()
    kind: str = KIND
    layout: str = "NCHW"

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSchema:
        return cls(**{**data, "value_range": tuple(data["value_range"]), "classes": tuple(data.get("classes", ()))})


def read_image_schema(directory: str | Path) -> ImageSchema:
    return ImageSchema.from_dict(read_json(Path(directory) / SCHEMA_FILE))


def write_images(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    """``x`` float32 [N, C, H, W] and ``y`` text [N] as an uncompressed .npz (deterministic bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.ascontiguousarray(x, dtype=np.float32), y=np.asarray(y).astype(str))


def read_images(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) of an archive written by ``write_images``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the upstream stage first: dvc repro)")
    with np.load(path, allow_pickle=False) as archive:
        return archive["x"], archive["y"]


def split_path(directory: str | Path, split: str) -> Path:
    return Path(directory) / f"{split}.npz"


def write_dataset(directory: str | Path, x: np.ndarray, y: np.ndarray, schema: ImageSchema) -> None:
    write_images(Path(directory) / IMAGES_FILE, x, y)
    write_json(Path(directory) / SCHEMA_FILE, schema.to_dict())


def images_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """Content hash of images and labels, independent of the file they came from."""
    digest = hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    digest.update("\n".join(map(str, y)).encode())
    return digest.hexdigest()


def class_balance(y: np.ndarray) -> dict[str, int]:
    labels, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
    return {str(k): int(v) for k, v in zip(labels, counts)}


# ---------------------------------------------------------------- ingest


def reject_tabular_params(cfg: IngestParams) -> None:
    """Column-based ingest keys mean nothing for images: refuse them rather than ignore them."""
    used = [
        f"ingest.{key}"
        for key in ("time_column", "time_cutoff", "window_periods", "drop_columns", "id_columns", "categorical", "numeric", "time_as_feature")
        if getattr(cfg, key) not in (None, (), False)
    ]
    if used:
        raise ParamsError(
            f"{', '.join(used)} apply to tabular columns, not to ingest.kind 'image'; set them to null, [] or false "
            "(see examples/digits/params.yaml)"
        )


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits: x float32 [1797, 1, 8, 8] in 0..16, labels "0".."9"."""
    from sklearn.datasets import load_digits

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
    import zipfile

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


def decode_image(path: Path, cfg: ImageIngestParams) -> np.ndarray:
    """One image file as float32 [C, H, W] in 0..255: converted to the mode, resized to the size if set."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("L" if cfg.mode == "grayscale" else "RGB")
        if cfg.size is not None and image.size != (cfg.size[1], cfg.size[0]):
            image = image.resize((cfg.size[1], cfg.size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_image_folder(folder: Path, cfg: ImageIngestParams) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]], list[str]]:
    """Decode an ImageFolder tree: images [N, C, H, W], labels (the class folder names), the unreadable
    files with their reasons, and the non-image files seen. Too many unreadable files, or sizes that
    differ without ``ingest.image.size``, stop the stage naming the file."""
    from PIL import Image

    files, others = image_files(folder)
    images, labels, unreadable = [], [], []
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
                f"{images[0].shape[1]}x{images[0].shape[2]}; set ingest.image.size: [height, width] to resize every image"
            )
        images.append(pixels)
        labels.append(label)
    if len(unreadable) > cfg.max_unreadable_share * len(files) or not images:
        first = unreadable[0]
        raise DataError(
            f"{first['file']}: unreadable image ({first['reason']}); {len(unreadable)} of {len(files)} files unreadable, "
            f"more than ingest.image.max_unreadable_share = {cfg.max_unreadable_share}"
        )
    return np.stack(images), np.array(labels), unreadable, others


def to_mode(x: np.ndarray, mode: str) -> np.ndarray:
    """Arrays to ``ingest.image.mode``: RGB -> grayscale by luma, grayscale -> RGB by repetition."""
    if mode == "grayscale" and x.shape[1] == 3:
        return np.einsum("nchw,c->nhw", x, LUMA)[:, None].astype(np.float32)
    if mode == "rgb" and x.shape[1] == 1:
        return np.repeat(x, 3, axis=1)
    return x


def resize(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Arrays [N, C, H, W] to ``size`` (height, width), bilinear, channel by channel with Pillow."""
    if size is None or x.shape[2:] == tuple(size):
        return x
    from PIL import Image

    out = np.empty((*x.shape[:2], *size), dtype=np.float32)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[i, c] = np.asarray(Image.fromarray(x[i, c], mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out


def read_source(cfg: IngestParams) -> tuple[np.ndarray, np.ndarray, tuple[float, float], dict[str, Any]]:
    """Images [N, C, H, W], labels, the raw pixel scale and what the report should say about the source."""
    if cfg.source == DEFAULT_SOURCE:
        x, y = load_digits_images()
        return resize(to_mode(x, cfg.image.mode), cfg.image.size), y, DIGITS_RANGE, {"source": DIGITS_SOURCE}
    path = Path(cfg.source)
    if path.is_dir():
        x, y, unreadable, others = read_image_folder(path, cfg.image)
        if others:
            log.warning("%s: %d file(s) that are not images were not read, e.g. %s", path, len(others), others[0])
        return x, y, BYTE_RANGE, {"source": str(path), "unreadable": unreadable, "not_images": others}
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (ingest.source)")
    if path.suffix.lower() != ".npz":
        raise DataError(f"{path}: image data comes from a .npz file or a folder of class folders, not {path.suffix!r} (ingest.source)")
    x, y, value_range = read_npz_source(path)
    return resize(to_mode(x, cfg.image.mode), cfg.image.size), y, value_range, {"source": str(path)}


def ingest(cfg: IngestParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Read the images, take the ``max_rows`` slice, check ``min_rows``, write them with their schema and a profile."""
    from pipeline.shared.tables import batch_files, slice_indices, warn_if_untracked

    reject_tabular_params(cfg)
    x, y, value_range, about = read_source(cfg)
    warn_if_untracked(cfg.source, paths)
    landed = batch_files(Path(paths.landing))
    if landed:  # landed batches are tables; images have no landing path yet
        log.warning("%d landed batch(es) in %s are tables and were not read for image data", len(landed), paths.landing)
    keep = slice_indices(len(x), cfg.max_rows, seed)
    x, y = x[keep], y[keep]
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
        "mode": cfg.image.mode,
        "value_range": list(value_range),
        "pixel_mean": float(x[finite].mean()) if finite.any() else None,
        "non_finite_pixels": int((~finite).sum()),
        "target": cfg.target,
        "class_balance": class_balance(y),
        "data_sha256": images_sha256(x, y),
        "landed_batches_not_read": [p.name for p in landed],
    }
    write_json(paths.ingest_report, report)
    log.info("ingested %d images %s from %s", len(x), "x".join(map(str, schema.shape)), about["source"])
    return report


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


# ---------------------------------------------------------------- clean


def clean_images(x: np.ndarray, y: np.ndarray, cfg: CleanParams) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Drop images with a missing or disallowed label, with NaN/inf pixels, and exact duplicates
    (same pixels, same label; the first is kept). Learns nothing."""
    if cfg.valid_ranges:
        raise ParamsError(f"clean.valid_ranges names columns {sorted(cfg.valid_ranges)}; image data has none: set it to {{}}")
    labels = np.char.strip(y.astype(str))
    missing = np.isin(labels, cfg.missing_tokens)
    not_allowed = ~missing & (~np.isin(labels, cfg.labels) if cfg.labels is not None else False)
    non_finite = ~missing & ~not_allowed & ~np.isfinite(x).all(axis=(1, 2, 3))
    keep = ~(missing | not_allowed | non_finite)
    duplicate = np.zeros(len(x), dtype=bool)
    if cfg.drop_duplicates:
        seen: set[bytes] = set()
        for i in np.flatnonzero(keep):
            key = hashlib.sha256(x[i].tobytes() + labels[i].encode()).digest()
            duplicate[i] = key in seen
            seen.add(key)
    keep &= ~duplicate
    dropped = {
        "missing_label": int(missing.sum()), "label_not_allowed": int(not_allowed.sum()),
        "non_finite_pixels": int(non_finite.sum()), "duplicate": int(duplicate.sum()),
    }
    return x[keep], labels[keep], dropped


def clean(cfg: CleanParams, paths: Paths) -> dict[str, Any]:
    """Clean the ingested images and write them with the classes in their schema."""
    schema = read_image_schema(paths.ingested)
    x, y = read_images(Path(paths.ingested) / IMAGES_FILE)
    out_x, out_y, dropped = clean_images(x, y, cfg)
    classes = tuple(sorted(set(out_y.tolist())))
    if len(classes) < 2:
        raise DataError(f"labels {schema.target!r} have {len(classes)} class(es) after cleaning; need at least 2")
    write_dataset(paths.clean, out_x, out_y, replace(schema, classes=classes))
    report = {"rows_in": len(x), "rows_out": len(out_x), "dropped": dropped, "classes": list(classes)}
    write_json(paths.clean_report, report)
    log.info("clean: %d -> %d images, dropped %s", len(x), len(out_x), dropped)
    return report


# ---------------------------------------------------------------- split


def split(cfg: SplitParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Stratified, seeded split of the clean images into train / val / test."""
    import pandas as pd

    from pipeline.shared.splits import stratified_assign

    if cfg.method != "stratified":
        raise ParamsError(f"split.method = {cfg.method!r} needs a time or group column, which image data has not; use stratified")
    schema = read_image_schema(paths.clean)
    x, y = read_images(Path(paths.clean) / IMAGES_FILE)
    assignment = stratified_assign(pd.Series(y), cfg, seed)
    empty = [name for name in SPLITS if not (assignment == name).any()]
    if empty:
        raise DataError(f"split {empty} would be empty with {len(x)} images; check the split fractions")
    report: dict[str, Any] = {"method": cfg.method, "rows": len(x), "splits": {}}
    for name in SPLITS:
        rows = assignment == name
        write_images(split_path(paths.split, name), x[rows], y[rows])
        report["splits"][name] = {"rows": int(rows.sum()), "share": round(float(rows.mean()), 6), "class_balance": class_balance(y[rows])}
    write_json(Path(paths.split) / SCHEMA_FILE, schema.to_dict())
    write_json(paths.split_report, report)
    log.info("split (%s): %s", cfg.method, {k: v["rows"] for k, v in report["splits"].items()})
    return report


# ---------------------------------------------------------------- augment


def flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image mirrored left-right with probability 1/2."""
    mirrored = rng.random(len(x)) < 0.5
    out = x.copy()
    out[mirrored] = x[mirrored][..., ::-1]
    return out


def affine(x: np.ndarray, degrees: np.ndarray, shifts: np.ndarray, fill: float) -> np.ndarray:
    """Rotate each image [N, C, H, W] by ``degrees`` [N] (counter-clockwise as displayed, about its
    centre), then move it by ``shifts`` [N, 2] pixels (down, right); one bilinear resampling, areas
    coming from outside the image filled with ``fill``."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    angle = np.deg2rad(degrees)
    cos, sin = np.cos(angle), np.sin(angle)
    # affine_grid maps each output position to the input position it samples, in coordinates
    # normalised to [-1, 1] per axis; in pixels (u right, v down) that is input = R^T (output - t),
    # with R rotating counter-clockwise on screen. S = diag(w/2, h/2) converts normalised to pixels.
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    t = np.stack([2 * shifts[:, 1] / w, 2 * shifts[:, 0] / h], axis=1)  # [N, 2] normalised (x, y)
    theta[:, :, 2] = -np.einsum("nij,nj->ni", theta[:, :, :2], t)
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) - fill)  # zero padding = fill
    grid = F.affine_grid(torch.from_numpy(theta).float(), [n, x.shape[1], h, w], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.numpy() + np.float32(fill)


def augment_images(
    x: np.ndarray, y: np.ndarray, cfg: ImageAugmentParams, value_range: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The training images first and unchanged, then ``copies`` transformed copies of every one: flip,
    rotation and shift (one resampling), Gaussian noise, each only where enabled. Each transform draws
    from its own stream of (seed, transform, copy), so switching one never changes another's draws."""
    low, high = value_range
    enabled = [name for name in ("flip", "rotation", "shift", "noise") if getattr(cfg, name).enabled]
    if not enabled or cfg.copies == 0 or len(x) == 0:
        return x, y
    copies = []
    for k in range(cfg.copies):
        out = flip(x, np.random.default_rng([seed, 0, k])) if cfg.flip.enabled else x
        if cfg.rotation.enabled or cfg.shift.enabled:
            degrees = np.zeros(len(x))
            shifts = np.zeros((len(x), 2))
            if cfg.rotation.enabled:
                degrees = np.random.default_rng([seed, 1, k]).uniform(-cfg.rotation.max_degrees, cfg.rotation.max_degrees, len(x))
            if cfg.shift.enabled:
                shifts = np.random.default_rng([seed, 2, k]).integers(-cfg.shift.max_pixels, cfg.shift.max_pixels + 1, (len(x), 2)).astype(float)
            out = affine(out, degrees, shifts, fill=low)
        if cfg.noise.enabled:
            noise = np.random.default_rng([seed, 3, k]).normal(0.0, cfg.noise.std * (high - low), out.shape)
            out = np.clip(out + noise, low, high)
        copies.append(out.astype(np.float32))
    return np.concatenate([x, *copies]), np.concatenate([y] * (cfg.copies + 1))


def augment(cfg: AugmentParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Augment the training images (``augment.image``); validation and test are never touched."""
    tabular = [f"augment.{name}" for name in ("gaussian_noise", "oversample", "mixup") if getattr(cfg, name).enabled]
    if tabular:
        raise ParamsError(f"{', '.join(tabular)} augment table rows, not images; switch them off and use augment.image")
    schema = read_image_schema(paths.split)
    x, y = read_images(split_path(paths.split, "train"))
    out_x, out_y = augment_images(x, y, cfg.image, schema.value_range, seed)
    write_images(split_path(paths.augmented, "train"), out_x, out_y)
    transforms = {name: getattr(cfg.image, name).model_dump() for name in ("rotation", "shift", "flip", "noise")}
    report = {
        "rows_in": len(x), "rows_out": len(out_x), "copies": (len(out_x) - len(x)) // max(len(x), 1),
        "transforms": transforms, "class_balance_after": class_balance(out_y),
    }
    write_json(paths.augment_report, report)
    log.info("augment: %d -> %d training images (%s)", len(x), len(out_x), [k for k, v in transforms.items() if v["enabled"]] or "nothing enabled")
    return report


# ---------------------------------------------------------------- train


def fit_normaliser(x: np.ndarray, schema: ImageSchema) -> dict[str, Any]:
    """Per-channel mean and standard deviation of (real, not augmented) training images: the encoder."""
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    return {
        "kind": KIND, "target": schema.target, "classes": list(schema.classes), "shape": list(schema.shape),
        "value_range": list(schema.value_range), "mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist(),
    }


def normalise(x: np.ndarray, encoder: dict[str, Any]) -> np.ndarray:
    """Raw images [N, C, H, W] -> (x - mean) / std per channel, float32 (the ONNX graph does the same)."""
    mean = np.asarray(encoder["mean"], dtype=np.float32)[None, :, None, None]
    std = np.asarray(encoder["std"], dtype=np.float32)[None, :, None, None]
    return (np.asarray(x, dtype=np.float32) - mean) / std


def label_codes(y: np.ndarray, classes: list[str] | tuple[str, ...]) -> np.ndarray:
    """Class indices int64 [N]; a label outside the classes is a data error."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(y.tolist()) - set(index))
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not among the classes {list(classes)}")
    return np.array([index[v] for v in y.tolist()], dtype=np.int64)


def encode(x: np.ndarray, y: np.ndarray, encoder: dict[str, Any], channels_last: bool = False):
    """Tensors for the training loop: inputs (normalised images float32 [N, C, H, W],), labels int64 [N]."""
    import torch

    from pipeline.engine.loop import Tensors

    images = torch.from_numpy(normalise(x, encoder))
    if channels_last:  # once here; index slices of it keep the NHWC order
        images = images.contiguous(memory_format=torch.channels_last)
    return Tensors((images,), torch.from_numpy(label_codes(y, encoder["classes"])))


def cnn_config(schema: ImageSchema, cfg: TrainParams):
    """The CNN sized for the images and classes; other architectures are not image models."""
    from pipeline.models import CNNConfig

    if cfg.architecture != "cnn":
        raise ParamsError(f"train.architecture = {cfg.architecture!r} is not an image model; use cnn for ingest.kind 'image'")
    return CNNConfig(
        in_channels=schema.channels, height=schema.height, width=schema.width, n_classes=len(schema.classes),
        **cfg.cnn.model_dump(), channels_last=cfg.channels_last,
    )


def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None):
    """Fit the normaliser on the real training images (or keep a warm start's ``encoder``), encode
    the augmented training and the validation images."""
    from pipeline.engine.loop import Prepared, reusable_encoder

    schema = read_image_schema(paths.split)
    config = cnn_config(schema, cfg)
    encoder = reusable_encoder(encoder, schema.classes)
    if encoder is None:
        real_x, _ = read_images(split_path(paths.split, "train"))
        encoder = fit_normaliser(real_x, schema)
    train_x, train_y = read_images(split_path(paths.augmented, "train"))
    val_x, val_y = read_images(split_path(paths.split, "val"))
    files = [split_path(paths.split, "train"), split_path(paths.split, "val"), split_path(paths.augmented, "train")]
    return Prepared(
        train=encode(train_x, train_y, encoder, cfg.channels_last),
        val=encode(val_x, val_y, encoder, cfg.channels_last),
        config=config,
        encoder=encoder,
        config_for=functools.partial(cnn_config, schema),
        # This module encodes the data, so a change to it must not resume an earlier run's checkpoint.
        data_files=[*files, Path(__file__)],
    )


# ---------------------------------------------------------------- evaluate


def predict_images(model, encoder: dict[str, Any], x: np.ndarray, batch_size: int = SCORING_BATCH) -> np.ndarray:
    """Class probabilities [N, K] for raw images: normalised with the saved encoder, then the network, then softmax."""
    import torch

    model.eval()
    with torch.no_grad():
        out = [torch.softmax(model(torch.from_numpy(normalise(x[i : i + batch_size], encoder))), dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(encoder["classes"])), np.float32)


def logistic_proba(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int, value_range: tuple[float, float], cfg: EvaluateParams, seed: int
) -> np.ndarray:
    """A pixel baseline: multinomial logistic regression on the flattened images scaled to 0..1.
    (Gradient boosting on 64 pixels took minutes here, against a second for this.)"""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    low, high = value_range
    scale = (high - low) or 1.0
    flat = lambda x: ((x - low) / scale).reshape(len(x), -1)  # noqa: E731
    model = LogisticRegression(max_iter=cfg.baseline_max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # capped on purpose by evaluate.baseline_max_iter
        model.fit(flat(train_x), train_y)
    proba = np.zeros((len(test_x), n_classes))
    proba[:, model.classes_] = model.predict_proba(flat(test_x))  # classes absent from training get 0
    return proba


def evaluate(cfg: EvaluateParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Score the test images with the CNN, the majority class and the pixel baseline; write metrics and plot data."""
    from pipeline.models import load_model
    from pipeline.shared.reports import evaluate as metrics_of
    from pipeline.shared.reports import write_classification_reports

    encoder = read_json(paths.preprocessor)
    classes = tuple(encoder["classes"])
    model = load_model(paths.model)
    train_x, train_y = read_images(split_path(paths.split, "train"))  # real images: the baselines see no augmentation
    test_x, test_y = read_images(split_path(paths.split, "test"))
    train_codes, test_codes = label_codes(train_y, classes), label_codes(test_y, classes)
    proba = predict_images(model, encoder, test_x)
    baseline = logistic_proba(train_x, train_codes, test_x, len(classes), tuple(encoder["value_range"]), cfg, seed)
    metrics = metrics_of(proba, test_codes, train_codes, baseline, classes, cfg, baseline="logreg")
    write_json(paths.eval_metrics, metrics)
    write_classification_reports(test_codes, proba, classes, cfg, paths)
    log.info(
        "test accuracy %.4f (pixel logistic regression %.4f, majority %.4f), macro F1 %.4f",
        metrics["model"]["accuracy"], metrics["baseline_logreg"]["accuracy"], metrics["baseline_majority"]["accuracy"],
        metrics["model"]["macro_f1"],
    )
    return metrics


# ---------------------------------------------------------------- export


def build_image_onnx(model, encoder: dict[str, Any], opset: int):
    """One graph: raw images float32 [N, C, H, W] -> per-channel normalisation -> CNN -> softmax ->
    ``probabilities`` [N, K] and ``label`` [N] (the class names)."""
    import onnx
    import torch

    from pipeline.onnxio.build import NET_PREFIX, PROBABILITIES, finish_graph, postprocessing_graph, torch_graph

    class RawImages(torch.nn.Module):
        """The normaliser's arithmetic inside the graph, so callers feed pixels as stored."""

        def __init__(self):
            super().__init__()
            self.model = model.eval()
            self.register_buffer("mean", torch.tensor(encoder["mean"], dtype=torch.float32).reshape(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(encoder["std"], dtype=torch.float32).reshape(1, -1, 1, 1))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.model((image - self.mean) / self.std), dim=1)

    example = torch.zeros(2, *encoder["shape"], dtype=torch.float32)
    net = torch_graph(RawImages(), (example,), [IMAGE_INPUT], [f"{NET_PREFIX}{PROBABILITIES}"], opset)
    post = postprocessing_graph(tuple(encoder["classes"]), opset, net.ir_version)
    merged = onnx.compose.merge_models(net, post, io_map=[(f"{NET_PREFIX}{PROBABILITIES}",) * 2])
    return finish_graph(merged, "Raw images [N, C, H, W] -> class probabilities and label (Evergreen)")


def image_card(encoder: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """The model card of an image model: the shared fields plus the kind, the target and the one input."""
    channels, height, width = encoder["shape"]
    return {
        **common,
        "kind": KIND,
        "target": encoder["target"],
        "inputs": [{
            "name": IMAGE_INPUT, "kind": KIND, "onnx_type": "float32", "shape": ["N", channels, height, width],
            "layout": "NCHW", "value_range": encoder["value_range"], "channels": "grayscale" if channels == 1 else "rgb",
            # Applied inside the graph: feed raw pixels.
            "normalisation": {"mean": encoder["mean"], "std": encoder["std"]},
        }],
    }


def export(cfg: ExportParams, paths: Paths) -> dict[str, Any]:
    """Export the CNN with its normaliser and label lookup, verify it against PyTorch on the raw test
    images, and write the model (and its int8 twin), the card and the parity report."""
    import torch

    from pipeline.models import load_model
    from pipeline.onnxio.card import card_fields
    from pipeline.onnxio.verify import publish, save_models, verify_feed

    encoder = read_json(paths.preprocessor)
    model = load_model(paths.model)
    checkpoint = torch.load(paths.model, map_location="cpu", weights_only=True)
    test_x, test_y = read_images(split_path(paths.split, "test"))

    model_bytes = build_image_onnx(model, encoder, cfg.opset).SerializeToString()
    feed = {IMAGE_INPUT: test_x}
    parity = verify_feed(model_bytes, predict_images(model, encoder, test_x), feed, encoder["classes"], cfg.tolerance)
    int8, hashes = save_models(model_bytes, cfg, paths, feed, test_y)
    hashes |= {
        **{f"{name}_data_sha256": file_sha256(split_path(paths.split, name)) for name in SPLITS},
        "preprocessor_sha256": file_sha256(paths.preprocessor),
    }
    common = card_fields(encoder["classes"], checkpoint, read_json(paths.eval_metrics), hashes, parity, int8)
    return publish(image_card(encoder, common), parity, len(model_bytes), cfg, paths)


# ---------------------------------------------------------------- the gate


