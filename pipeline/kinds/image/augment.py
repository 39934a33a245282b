"""Image augment: ``copies`` transformed copies of every training image (flip, rotation, shift, noise).

Inputs:  ``paths.split``/train.npz and schema.json (the pixel ``value_range``).
Outputs: ``paths.augmented``/train.npz (the originals first, then the copies), ``paths.augment_report``.
Params:  ``augment`` (the image variant: rotation, shift, flip, noise, copies), ``seed``.
Validation and test images are never touched.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.io import write_json
from pipeline.kinds.image.data import class_balance, read_image_schema, read_images, split_path, write_images
from pipeline.params import ImageAugment, Paths

log = logging.getLogger(__name__)


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
    x: np.ndarray, y: np.ndarray, cfg: ImageAugment, value_range: tuple[float, float], seed: int
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
                degrees = np.random.default_rng([seed, 1, k]).uniform(
                    -cfg.rotation.max_degrees, cfg.rotation.max_degrees, len(x)
                )
            if cfg.shift.enabled:
                shifts = (
                    np.random.default_rng([seed, 2, k])
                    .integers(-cfg.shift.max_pixels, cfg.shift.max_pixels + 1, (len(x), 2))
                    .astype(float)
                )
            out = affine(out, degrees, shifts, fill=low)
        if cfg.noise.enabled:
            noise = np.random.default_rng([seed, 3, k]).normal(0.0, cfg.noise.std * (high - low), out.shape)
            out = np.clip(out + noise, low, high)
        copies.append(out.astype(np.float32))
    return np.concatenate([x, *copies]), np.concatenate([y] * (cfg.copies + 1))


def run(cfg: ImageAugment, paths: Paths, seed: int) -> dict[str, Any]:
    """Augment the training images (``augment``); validation and test are never touched."""
    schema = read_image_schema(paths.split)
    x, y = read_images(split_path(paths.split, "train"))
    out_x, out_y = augment_images(x, y, cfg, schema.value_range, seed)
    write_images(split_path(paths.augmented, "train"), out_x, out_y)
    transforms = {name: getattr(cfg, name).model_dump() for name in ("rotation", "shift", "flip", "noise")}
    report = {
        "rows_in": len(x),
        "rows_out": len(out_x),
        "copies": (len(out_x) - len(x)) // max(len(x), 1),
        "transforms": transforms,
        "class_balance_after": class_balance(out_y),
    }
    write_json(paths.augment_report, report)
    log.info(
        "augment: %d -> %d training images (%s)",
        len(x),
        len(out_x),
        [k for k, v in transforms.items() if v["enabled"]] or "nothing enabled",
    )
    return report
