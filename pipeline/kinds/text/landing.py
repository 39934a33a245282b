"""The text kind's landed batches (no torch): tables of new texts, the check of one, and how ingest takes them.

A batch is a CSV or Parquet table holding the source's text column (``ingest.text_column``). The label
column (``ingest.target``) is optional: a batch without labels (or with none filled in) is for the drift
monitor only, and ingest trains on labelled batches alone (clean drops their rows without a label). A
labelled batch needs the time column too when the pipeline has one (``ingest.time_column``): ingest orders
the texts, and a time split cuts them, by it. Present, the time column must parse (``ingest.time_format``)
into times of the source's sort (dates or numbers), or the texts could not be ordered with the source's.
Other columns are ignored, as ingest ignores them (a tweet export carries ids and counts beside the text).

A bad batch (unreadable, no rows, no text column, a text column holding numbers, dates or bytes, or
nothing but missing and blank texts, unusable times) is quarantined by the lifecycle with the reason
(``pipeline.lifecycle.landing``); ingest reads the same batches through ``landed_batches`` and stops,
naming the batch, at one landed after the screening ran. Batches and the registry's reference (the
training split, ``train.parquet``) are read as plain tables; ``pipeline.kinds.text.drift`` turns either,
or the prediction log's rows, into the columns a drift check compares.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import LandingScreen, landed_tables, table_landing
from pipeline.kinds.text.data import TextSchema
from pipeline.kinds.text.ingest import has_labels, read_source, text_times
from pipeline.params import TextIngest
from pipeline.shared.tables import looks_numeric, require_columns

TimeSort = Literal["dates", "numbers"]


def time_sort(times: pd.Series) -> TimeSort:
    """What a parsed time column (``ingest.text_times``) holds."""
    return "dates" if pd.api.types.is_datetime64_any_dtype(times) else "numbers"


@dataclass(frozen=True)
class SourceTexts:
    """What every landed batch is checked against: the sort of the source's times (None: no time column)."""

    time: TimeSort | None

    @classmethod
    def of(cls, rows: pd.DataFrame, cfg: TextIngest) -> SourceTexts:
        """From the source's rows as ingest selected them (times parsed)."""
        return cls(time_sort(rows[cfg.time_column]) if cfg.time_column is not None else None)


def source_texts(cfg: TextIngest) -> SourceTexts:
    """The source's columns checked and its times parsed, as ingest reads them."""
    raw, _ = read_source(cfg.source)
    require_columns(TextSchema(cfg.text_column, cfg.target, cfg.time_column).columns, set(raw.columns), "ingest.source")
    if cfg.time_column is None:
        return SourceTexts(None)
    return SourceTexts(time_sort(text_times(raw[cfg.time_column], cfg)))


def text_problems(column: pd.Series, name: str) -> list[str]:
    """Why a batch's text column holds no texts ingest and the model could read (empty: it does)."""
    where = f"column {name!r} (ingest.text_column)"
    if isinstance(column.dtype, pd.CategoricalDtype):  # a Parquet dictionary of strings: texts all the same
        column = column.astype(object)
    present = column.dropna()
    if present.empty:
        return [f"{where} has no texts (all {len(column)} values missing)"]
    if pd.api.types.is_bool_dtype(present):
        return [f"{where} holds true/false values, not texts"]
    if pd.api.types.is_datetime64_any_dtype(present):
        return [f"{where} holds dates, not texts"]
    if looks_numeric(present):
        return [f"{where} holds numbers, not texts"]
    if not (pd.api.types.is_object_dtype(present) or pd.api.types.is_string_dtype(present)):
        return [f"{where} holds {present.dtype} values, not texts"]
    # A stray number among texts is read as its text ("2016"), as ingest reads it; bytes, lists and the
    # like are no texts at all.
    odd = [v for v in present if not isinstance(v, str | numbers.Number)]
    if odd:
        return [f"{where}: {len(odd)} value(s) are not texts (e.g. a {type(odd[0]).__name__})"]
    if (present.map(str).str.strip() == "").all():
        return [f"{where} has no texts (all {len(column)} values missing or blank)"]
    return []


def batch_problems(frame: pd.DataFrame, source: SourceTexts, cfg: TextIngest) -> list[str]:
    """Why a landed table of texts cannot be used (empty: it can)."""
    problems = []
    if cfg.text_column not in frame.columns:
        problems.append(f"missing the text column {cfg.text_column!r} (ingest.text_column)")
    else:
        problems += text_problems(frame[cfg.text_column], cfg.text_column)
    time = cfg.time_column
    if time is not None and time in frame.columns:
        try:
            sort = time_sort(text_times(frame[time], cfg))
        except DataError as exc:
            problems.append(str(exc))
        else:
            if source.time is not None and sort != source.time:
                problems.append(f"ingest.time_column {time!r} holds {sort}, the source's holds {source.time}")
    elif time is not None and has_labels(frame, cfg):
        problems.append(
            f"labelled texts need the time column {time!r} (ingest.time_column): ingest orders them by it; "
            "land the times, or the texts without labels"
        )
    return problems


def landed_batches(landing: Path, source: SourceTexts, cfg: TextIngest) -> list[tuple[Path, pd.DataFrame]]:
    """Every landed table, checked as the landing screen checks it (``landed_tables``)."""
    return landed_tables(landing, lambda frame: batch_problems(frame, source, cfg))


def landing_screen(cfg: TextIngest) -> LandingScreen:
    """The text kind's landing rule for ``cfg`` (the source is read once, here)."""
    source = source_texts(cfg)
    return table_landing(lambda frame: batch_problems(frame, source, cfg))
