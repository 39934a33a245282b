"""Image split: a stratified, seeded split of the clean images into train / val / test.

Inputs:  ``paths.clean``/images.npz and schema.json.
Outputs: ``paths.split``/{train,val,test}.npz and schema.json, ``paths.split_report``.
Params:  ``split`` (``method`` must be stratified: images have no time or group column), ``seed``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import SCHEMA_FILE, SPLITS, write_json
from pipeline.kinds.image.data import IMAGES_FILE, class_balance, read_image_schema, read_images, split_path, write_images
from pipeline.params import Paths, SplitParams
from pipeline.shared.splits import stratified_assign

log = logging.getLogger(__name__)


def run(cfg: SplitParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Stratified, seeded split of the clean images into train / val / test."""
    if cfg.method != "stratified":
        raise ParamsError(
            f"split.method = {cfg.method!r} needs a time or group column, which image data has not; use stratified"
        )
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
        report["splits"][name] = {
            "rows": int(rows.sum()),
            "share": round(float(rows.mean()), 6),
            "class_balance": class_balance(y[rows]),
        }
    write_json(Path(paths.split) / SCHEMA_FILE, schema.to_dict())
    write_json(paths.split_report, report)
    log.info("split (%s): %s", cfg.method, {k: v["rows"] for k, v in report["splits"].items()})
    return report
