"""Sequence augment: the training windows plus ``augment.copies`` augmented copies (jitter,
scaling, window slicing), in raw units.

Inputs:  ``paths.split`` (train, schema)
Outputs: ``paths.augmented``/train_windows.npz and schema.json, ``paths.augment_report``
Params:  ``augment``, ``seed``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import SCHEMA_FILE, read_table, split_file, write_json
from pipeline.kinds.sequence.data import KIND, WINDOWS_FILE, read_sequence_schema
from pipeline.kinds.sequence.windows import split_windows
from pipeline.params import Paths, SequenceAugment

log = logging.getLogger(__name__)


def window_slice(x: np.ndarray, ratio: float, anchored: bool, rng: np.random.Generator) -> np.ndarray:
    """Window slicing (Le Guennec et al., 2016): keep a random share in [ratio, 1] of each window and
    stretch it back to L steps by linear interpolation. ``anchored`` (forecast) keeps the slice's end at
    the window's last step, so the forecast origin and the latest value stay where they were."""
    n, length, _ = x.shape
    kept = rng.uniform(ratio, 1.0, size=n) * (length - 1)  # span of the slice, in steps
    end = np.full(n, length - 1.0) if anchored else kept + rng.uniform(0.0, 1.0, size=n) * ((length - 1) - kept)
    positions = end[:, None] - kept[:, None] * np.linspace(1.0, 0.0, length)[None, :]  # [N, L]; the last is exactly `end`
    low = np.clip(np.floor(positions).astype(np.int64), 0, length - 1)
    high = np.clip(low + 1, 0, length - 1)
    weight = (positions - low)[:, :, None].astype(np.float32)
    rows = np.arange(n)[:, None]
    return (x[rows, low] * (1 - weight) + x[rows, high] * weight).astype(np.float32)


def augment_windows(
    x: np.ndarray, y: np.ndarray, cfg: SequenceAugment, feature_std: np.ndarray, target_index: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The training windows plus ``copies`` augmented copies (raw units), each with every enabled technique:
    jitter adds N(0, (std x feature std)^2) to the inputs (targets stay the truth); scaling multiplies each
    window's features by N(1, std) (a forecast's targets by its target feature's factor: the same series,
    louder or quieter); window slicing as ``window_slice``. Nothing enabled or no copies: x and y unchanged."""
    enabled = [name for name in ("jitter", "scaling", "window_slicing") if getattr(cfg, name).enabled]
    if not enabled or cfg.copies == 0:
        return x, y, {}
    rng = np.random.default_rng(seed)
    xs, ys = [x], [y]
    for _ in range(cfg.copies):
        xc, yc = x.copy(), y.copy()
        if cfg.jitter.enabled:
            xc += rng.normal(0.0, 1.0, size=xc.shape).astype(np.float32) * (cfg.jitter.std * feature_std).astype(np.float32)
        if cfg.scaling.enabled:
            factors = rng.normal(1.0, cfg.scaling.std, size=(len(xc), 1, xc.shape[2])).astype(np.float32)
            xc *= factors
            if target_index is not None:
                yc = yc * factors[:, 0, target_index][:, None]
        if cfg.window_slicing.enabled:
            xc = window_slice(xc, cfg.window_slicing.ratio, anchored=target_index is not None, rng=rng)
        xs.append(xc)
        ys.append(yc)
    return np.concatenate(xs), np.concatenate(ys), {name: cfg.copies * len(x) for name in enabled}


def run(cfg: SequenceAugment, paths: Paths, seed: int) -> dict[str, Any]:
    """Write the training windows, with augmented copies, to ``paths.augmented``/train_windows.npz."""
    schema = read_sequence_schema(paths.split)
    train = read_table(split_file(paths.split, "train"))
    windows = split_windows({"train": train}, "train", schema, schema.stride)
    feature_std = train[list(schema.features)].std(ddof=0).to_numpy(np.float64)
    target_index = schema.features.index(schema.target) if schema.forecast else None
    x, y, added = augment_windows(windows.x, windows.y, cfg, np.where(feature_std > 0, feature_std, 1.0), target_index, seed)
    out = Path(paths.augmented)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / WINDOWS_FILE, x=x, y=y)
    write_json(out / SCHEMA_FILE, schema.to_dict())
    report = {
        "kind": KIND,
        "windows_in": len(windows),
        "windows_out": len(x),
        "added": added,
        "copies": cfg.copies if added else 0,
    }
    write_json(paths.augment_report, report)
    log.info("augment: %d training windows -> %d (%s)", len(windows), len(x), added or "no augmentation")
    return report
