"""Image clean: drop images with a missing or disallowed label, with NaN/inf pixels, and exact duplicates.

Inputs:  ``paths.ingested``/images.npz and schema.json.
Outputs: ``paths.clean``/images.npz and schema.json (now with the classes), ``paths.clean_report``.
Params:  ``clean`` (``labels``, ``missing_tokens``, ``drop_duplicates``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.io import write_json
from pipeline.kinds.image.data import IMAGES_FILE, read_image_schema, read_images, write_dataset
from pipeline.params import ImageClean, Paths

log = logging.getLogger(__name__)


def clean_images(x: np.ndarray, y: np.ndarray, cfg: ImageClean) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Drop images with a missing or disallowed label, with NaN/inf pixels, and exact duplicates
    (same pixels, same label; the first is kept). Learns nothing."""
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
        "missing_label": int(missing.sum()),
        "label_not_allowed": int(not_allowed.sum()),
        "non_finite_pixels": int(non_finite.sum()),
        "duplicate": int(duplicate.sum()),
    }
    return x[keep], labels[keep], dropped


def run(cfg: ImageClean, paths: Paths) -> dict[str, Any]:
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
