"""Raw image records -> the image model's ONNX feed, its outputs -> answers, and what the log keeps (no torch).

A record is one image, either a base64 text of a PNG or JPEG file (a ``data:image/...;base64,`` prefix
is allowed) or nested arrays of pixels ([H, W] grayscale, [C, H, W] or [H, W, C]) already in the model's
raw pixel scale (the card's ``value_range``); or, from a ``multipart/form-data`` upload, an ``ImageFile``
(the file's bytes and how errors name its part), decoded and logged exactly as base64 text of the same bytes. Encoded images are decoded with Pillow, converted to the
card's mode (Pillow's ``convert("L")``/``"RGB"``, as ingest did) and resized bilinearly to its size when
they differ, then mapped linearly from bytes 0..255 to the card's value range: a model trained on files
takes 0..255 unchanged; the digits model (0..16 ink counts) takes a byte image scaled to 0..16.

The prediction log keeps, per image, summary statistics of what the model saw and a SHA-256 of what was
sent, never the pixels (a 224x224 RGB image is 600 kB of JSON numbers per row): the statistics are what
the drift monitor compares (brightness, contrast, sharpness, the sent size and format), and the hash
lets an image kept elsewhere by the caller be matched to its prediction.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from PIL import Image, UnidentifiedImageError

from pipeline.kinds.base import RecordError
from pipeline.kinds.image.data import IMAGE_INPUT
from pipeline.onnxio.card import LABEL, PROBABILITIES, ImageCard

FORMATS = ("PNG", "JPEG")
BYTE_MAX = 255.0


@dataclass(frozen=True)
class ImageFeedSchema:
    """What an image record is checked against: the card's shape, mode and raw pixel scale."""

    channels: int
    height: int
    width: int
    value_range: tuple[float, float]
    classes: tuple[str, ...]
    names: tuple[str, ...] = (IMAGE_INPUT,)
    outputs: tuple[str, ...] = (PROBABILITIES, LABEL)

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    @classmethod
    def of(cls, card: ImageCard) -> ImageFeedSchema:
        channels, height, width = (int(d) for d in card.inputs[0].shape[1:])
        low, high = card.inputs[0].value_range
        return cls(channels, height, width, (float(low), float(high)), card.classes)


# Decoding cost grows with the pixels an image claims, not with the bytes sent: cap it (16.7 M, 4096^2),
# far above any model input, so a decompression bomb is refused before it is decoded.
MAX_DECODED_PIXELS = 4096 * 4096


def decode_bytes(data: bytes, schema: ImageFeedSchema, where: str) -> np.ndarray:
    """A PNG or JPEG file's bytes -> float32 [C, H, W] in the card's mode, size and raw pixel scale;
    ``where`` names the record (or file) in errors."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as opened:
            # The header's size, before a single pixel is decoded: a 12 kB PNG can claim 10000 x 10000.
            if opened.width * opened.height > MAX_DECODED_PIXELS:
                raise RecordError(
                    f"{where}: the image is {opened.width} x {opened.height} pixels, over the limit of"
                    f" {MAX_DECODED_PIXELS:,} (the model takes {schema.width} x {schema.height})"
                )
            image = opened.convert(schema.mode)
            if image.size != (schema.width, schema.height):
                image = image.resize((schema.width, schema.height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except UnidentifiedImageError:  # its message names a BytesIO object: no help to the caller
        raise RecordError(f"{where}: not a readable PNG or JPEG image (neither format recognised)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # what Pillow raises for bad bytes
        raise RecordError(f"{where}: not a readable PNG or JPEG image ({_first_line(exc)})") from None
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # [C, H, W]
    low, high = schema.value_range
    if (low, high) != (0.0, BYTE_MAX):
        pixels = pixels * np.float32((high - low) / BYTE_MAX) + np.float32(low)
    return np.ascontiguousarray(pixels, dtype=np.float32)


@dataclass(frozen=True)
class ImageFile:
    """An uploaded image file (one ``multipart/form-data`` part): its bytes, and how errors name it
    (``part 1 ('seven.png')``). Never from JSON, so a JSON record cannot pose as one."""

    data: bytes
    name: str


def base64_bytes(text: str, where: str) -> bytes:
    """The file bytes of a base64 text (optionally a data URL)."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise RecordError(f"{where}: a data URL must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RecordError(f"{where}: not valid base64 text of a PNG or JPEG file") from None


def decode_array(value: list, schema: ImageFeedSchema, where: str) -> np.ndarray:
    """Nested arrays in the raw pixel scale, [H, W] (one channel), [C, H, W] or [H, W, C] -> float32 [C, H, W]."""
    try:
        array = np.array(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise RecordError(f"{where}: nested arrays must be rectangular and hold only numbers") from None
    c, h, w = schema.shape
    if array.shape == (h, w) and c == 1:
        array = array[None]
    elif array.shape == (h, w, c) and array.shape != (c, h, w):
        array = array.transpose(2, 0, 1)
    elif array.shape != (c, h, w):
        expected = f"[{c}, {h}, {w}] or [{h}, {w}, {c}]" + (f" or [{h}, {w}]" if c == 1 else "")
        raise RecordError(f"{where}: pixel array has shape {list(array.shape)}; the model takes {expected}")
    low, high = schema.value_range
    if not np.isfinite(array).all():
        raise RecordError(f"{where}: pixel array holds a value that is not a finite number")
    if array.min() < low or array.max() > high:
        raise RecordError(
            f"{where}: pixel values span {float(array.min()):g}..{float(array.max()):g}, outside the model's raw scale "
            f"{low:g}..{high:g} (send an encoded PNG/JPEG to have bytes scaled)"
        )
    return np.ascontiguousarray(array)


def decode_record(record: Any, schema: ImageFeedSchema, index: int) -> np.ndarray:
    """One record -> float32 [C, H, W]; a record that is no image is a ``RecordError`` naming it."""
    if isinstance(record, ImageFile):
        return decode_bytes(record.data, schema, record.name)
    where = f"record {index}"
    if isinstance(record, str):
        return decode_bytes(base64_bytes(record, where), schema, where)
    if isinstance(record, list):
        return decode_array(record, schema, where)
    kind = type(record).__name__
    raise RecordError(f"{where}: expected an image as base64 PNG/JPEG text or nested arrays of pixels, got {kind}")


def build_feed(records: Sequence[Any], schema: ImageFeedSchema) -> dict[str, np.ndarray]:
    """Raw image records -> the feed float32 [N, C, H, W]."""
    pixels = [decode_record(record, schema, i) for i, record in enumerate(records)]
    return {IMAGE_INPUT: np.stack(pixels) if pixels else np.zeros((0, *schema.shape), np.float32)}


def image_statistics(x: np.ndarray, value_range: tuple[float, float]) -> dict[str, np.ndarray]:
    """Per image of x float32 [N, C, H, W], on the 0..1 scale of ``value_range``: brightness (mean),
    contrast (std) and sharpness (mean absolute 4-neighbour Laplacian of the channel mean). [N] each."""
    low, high = value_range
    unit = (x - np.float32(low)) / np.float32(high - low or 1.0)
    gray = unit.mean(axis=1)  # [N, H, W]
    laplacian = 4 * gray[:, 1:-1, 1:-1] - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1] - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:]
    sharpness = np.abs(laplacian).mean(axis=(1, 2)) if laplacian.size else np.zeros(len(x), np.float32)
    return {"brightness": unit.mean(axis=(1, 2, 3)), "contrast": unit.std(axis=(1, 2, 3)), "sharpness": sharpness}


def sent_form(record: Any, pixels: np.ndarray) -> dict[str, Any]:
    """How an image was sent: its format, size (before any resize) and SHA-256 (of the file bytes, base64 or
    uploaded, or of the float32 pixels of an array). Reads only the file's header: the pixels were decoded by
    ``build_feed``."""
    if isinstance(record, str | ImageFile):
        data = record.data if isinstance(record, ImageFile) else base64_bytes(record, "record")
        with Image.open(io.BytesIO(data), formats=FORMATS) as opened:
            form = {"format": str(opened.format).lower(), "height": opened.height, "width": opened.width}
        return {"sha256": hashlib.sha256(data).hexdigest(), **form}
    digest = hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.float32).tobytes()).hexdigest()
    return {"sha256": digest, "format": "array", "height": int(pixels.shape[1]), "width": int(pixels.shape[2])}


def log_inputs(records: Sequence[Any], feed: dict[str, np.ndarray], schema: ImageFeedSchema) -> list[str]:
    """Per image, the JSON the prediction log keeps: how it was sent and its statistics; never the pixels."""
    x = feed[IMAGE_INPUT]
    stats = {name: values.tolist() for name, values in image_statistics(x, schema.value_range).items()}
    return [
        orjson.dumps({**sent_form(record, x[i]), **{name: round(values[i], 6) for name, values in stats.items()}}).decode()
        for i, record in enumerate(records)
    ]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
