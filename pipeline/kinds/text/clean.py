"""Text clean: drop rows without a label or a text, disallowed labels and duplicates; group rare labels.

Inputs:  ``paths.ingested``/texts.parquet and schema.json.
Outputs: ``paths.clean``/texts.parquet and schema.json (now with the classes), ``paths.clean_report``.
Params:  ``clean`` (the text variant). The texts themselves are never changed: the model reads them as
they will be served.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.io import write_json
from pipeline.kinds.text.data import TextSchema, class_balance, read_dataset, write_dataset
from pipeline.params import Paths, TextClean

log = logging.getLogger(__name__)


def kept_labels(labels: pd.Series, cfg: TextClean) -> list[str]:
    """The labels that keep their name: at least ``min_class_rows`` rows, the most frequent ones (ties by
    name), ``max_classes`` in all with ``other_label`` when it collects any rows."""
    counts = labels.value_counts()
    frequent = sorted((label for label, n in counts.items() if n >= cfg.min_class_rows), key=lambda v: (-counts[v], v))
    if cfg.other_label is not None and len(counts) > min(len(frequent), cfg.max_classes):
        return frequent[: cfg.max_classes - 1]  # one class is left for the grouped rest
    return frequent[: cfg.max_classes]


def clean_texts(frame: pd.DataFrame, schema: TextSchema, cfg: TextClean) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows rules, in order: missing or disallowed labels, empty texts, duplicates; then the rare
    labels grouped as ``other_label`` (or dropped). Learns nothing from the texts."""
    text, label = frame[schema.text_column], frame[schema.target]
    missing_label = label.isna() | label.isin(cfg.missing_tokens)
    not_allowed = ~missing_label & (~label.isin(cfg.labels) if cfg.labels is not None else False)
    empty = (
        ~missing_label & ~not_allowed & (text.isna() | (text.fillna("").str.strip() == "") if cfg.drop_empty else text.isna())
    )
    keep = ~(missing_label | not_allowed | empty)
    duplicate = pd.Series(False, index=frame.index)
    if cfg.drop_duplicates:
        duplicate = keep & frame[[schema.text_column, schema.target]].where(keep).duplicated(keep="first")
    keep &= ~duplicate
    out = frame.loc[keep].reset_index(drop=True)
    named = kept_labels(out[schema.target], cfg)
    rare = ~out[schema.target].isin(named)
    grouped = sorted(out.loc[rare, schema.target].unique().tolist())
    if cfg.other_label is not None:
        out[schema.target] = out[schema.target].where(~rare, cfg.other_label)
    else:
        out = out.loc[~rare].reset_index(drop=True)
    dropped = {
        "missing_label": int(missing_label.sum()),
        "label_not_allowed": int(not_allowed.sum()),
        "empty_text": int(empty.sum()),
        "duplicate": int(duplicate.sum()),
        "rare_label": 0 if cfg.other_label is not None else int(rare.sum()),
    }
    return out, {"dropped": dropped, "grouped_labels": grouped, "grouped_as": cfg.other_label}


def run(cfg: TextClean, paths: Paths) -> dict[str, Any]:
    """Clean the ingested texts and write them with the classes in their schema."""
    frame, schema = read_dataset(paths.ingested)
    out, about = clean_texts(frame, schema, cfg)
    classes = tuple(sorted(out[schema.target].unique().tolist()))
    if len(classes) < 2:
        raise DataError(f"labels {schema.target!r} have {len(classes)} class(es) after cleaning; need at least 2")
    write_dataset(paths.clean, out, replace(schema, classes=classes))
    report = {
        "rows_in": len(frame),
        "rows_out": len(out),
        **about,
        "classes": list(classes),
        "class_balance": class_balance(out[schema.target]),
    }
    write_json(paths.clean_report, report)
    log.info("clean: %d -> %d texts, dropped %s, classes %s", len(frame), len(out), about["dropped"], list(classes))
    return report
