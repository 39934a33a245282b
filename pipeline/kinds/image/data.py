"""The image data layout: ``ImageSchema`` and the ``.npz`` archives every stage reads and writes (no torch).

Images travel between stages as NumPy archives written by ``np.savez`` (uncompressed and without
timestamps, so the bytes, and DVC's hashes, are a pure function of the content): ``x`` float32
[N, C, H, W] in the raw pixel scale (channels first, as the network and the ONNX model take them)
and ``y`` the labels as text [N]; beside them a ``schema.json`` with ``"kind": "image"``, the
shape, the classes and the pixel ``value_range``.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.io import SCHEMA_FILE, read_json, write_json

KIND = "image"
IMAGES_FILE = "images.npz"
IMAGE_INPUT = "image"  # the ONNX model's one input
SCORING_BATCH = 1024


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


# An .npz is a zip: a few MB of zeros can unpack to tens of GB. Landed and scored archives are sized from
# their .npy headers before any array is read (4 GiB unpacked, a little over a million 32x32 RGB images).
MAX_NPZ_ARRAY_BYTES = 4 * 2**30


def refuse_oversized_npz(path: Path, limit: int = MAX_NPZ_ARRAY_BYTES) -> None:
    """A one-line error when an array of the .npz at ``path`` would unpack to more than ``limit`` bytes.
    Reads only the headers; a file that is no zip raises what ``np.load`` would (callers report it)."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            with archive.open(name) as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
            size = math.prod(shape) * dtype.itemsize
            if size > limit:
                raise DataError(
                    f"{path}: array {name[:-4]!r} {list(shape)} would unpack to {size / 2**30:.1f} GiB,"
                    f" over the {limit / 2**30:g} GiB limit; land it in smaller batches"
                )
