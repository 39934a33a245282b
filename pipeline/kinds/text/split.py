"""Text split: the latest texts to test, the ones before to val, the rest to train (``time``), or a
stratified, seeded split (``stratified``, for texts without a time).

Inputs:  ``paths.clean``/texts.parquet and schema.json.
Outputs: ``paths.split``/{train,val,test}.parquet and schema.json, ``paths.split_report``.
Params:  ``split``, ``seed``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import SCHEMA_FILE, SPLITS, split_file, write_json, write_table
from pipeline.kinds.text.data import class_balance, read_dataset
from pipeline.params import Paths, SplitParams
from pipeline.shared.splits import stratified_assign, time_assign

log = logging.getLogger(__name__)


def run(cfg: SplitParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Split the clean texts into train / val / test and write each with the schema."""
    frame, schema = read_dataset(paths.clean)
    if cfg.method == "time":
        if schema.time_column is None:
            raise ParamsError("split.method = 'time' needs ingest.time_column; set it, or use split.method: stratified")
        assignment = time_assign(frame[schema.time_column], cfg)
    elif cfg.method == "stratified":
        assignment = stratified_assign(frame[schema.target], cfg, seed)
    else:
        raise ParamsError(f"split.method = {cfg.method!r} does not apply to text; use time or stratified")
    empty = [name for name in SPLITS if not (assignment == name).any()]
    if empty:
        raise DataError(f"split {empty} would be empty with {len(frame)} texts; check the split fractions")
    report: dict[str, Any] = {"method": cfg.method, "rows": len(frame), "splits": {}}
    for name in SPLITS:
        part = frame.loc[assignment == name].reset_index(drop=True)
        write_table(split_file(paths.split, name), part)
        report["splits"][name] = {
            "rows": len(part),
            "share": round(len(part) / len(frame), 6),
            "class_balance": class_balance(part[schema.target]),
            **(
                {"time_range": [str(part[schema.time_column].min()), str(part[schema.time_column].max())]}
                if schema.time_column
                else {}
            ),
        }
    missing = sorted(set(schema.classes) - set(report["splits"]["train"]["class_balance"]))
    if missing:  # a class the network never sees cannot be learned: said, not silently scored as errors
        log.warning("split: classes %s have no training texts (the latest texts differ from the earlier ones)", missing)
    write_json(Path(paths.split) / SCHEMA_FILE, schema.to_dict())
    write_json(paths.split_report, report)
    log.info("split (%s): %s", cfg.method, {k: v["rows"] for k, v in report["splits"].items()})
    return report
