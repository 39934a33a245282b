"""The drift monitor's logic, free of orchestration: where current data comes from and when to retrain.

``decide_retrain`` is the whole policy, pure and unit-tested: retrain when the share of drifted
columns reaches ``monitor.drift_share`` on a current sample of at least ``monitor.min_rows``
rows, or when labelled new data shows the production model's accuracy more than
``monitor.accuracy_tolerance`` below its test accuracy (a numeric prediction's MAE more than
``monitor.error_tolerance`` above its test MAE, as a share); never during the cooldown after a
retrain, never while a retrain runs, and never twice for the same data (the idempotency key is
a hash of the batches' hashes).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import LandingScreen
from pipeline.lifecycle.landing import being_written, entry_problem, entry_sha256, landing_entries
from pipeline.params import MonitorParams
from pipeline.shared.tables import batch_files, read_table_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurrentData:
    """New rows to compare with the reference, and the keys (batch hashes) that identify them."""

    frame: pd.DataFrame
    keys: tuple[str, ...]
    sources: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.keys


class CurrentSource(Protocol):
    """Where the monitor's current data comes from (landed batches today; the prediction log next)."""

    @property
    def name(self) -> str: ...  # read-only, so frozen dataclasses implement it

    def pending(self, seen: set[str]) -> CurrentData: ...


@dataclass(frozen=True)
class LandingSource:
    """Batches in the landing area that the monitor has not compared yet.

    ``rules`` is the kind's landing rule (``landing.landing_rules``): which entries are batches and how one
    is read into the rows its drift frame takes (images: per-image statistics). Without it, batches are
    CSV/Parquet tables, read as they are."""

    landing: Path
    name: str = "landing"
    rules: LandingScreen | None = None

    def pending(self, seen: set[str]) -> CurrentData:
        """The unseen batches. Screening (``landing.screen``) runs first and quarantines bad ones; a batch
        that still cannot be read here (a link, or one that changed since) is left out and stays pending,
        so the next screening quarantines it, and the others are compared."""
        frames, keys, names = [], [], []
        for path in self._entries():
            if path.is_symlink():  # never followed out of the landing area
                log.warning("%s: a symbolic link, not compared; screening quarantines it", path.name)
                continue
            try:
                digest = entry_sha256(path)
                if digest in seen:
                    continue
                frame = self.rules.read(path) if self.rules is not None else read_table_file(path)
            except (DataError, OSError) as exc:
                log.warning("%s: not compared (%s); screening quarantines it", path.name, exc)
                continue
            frames.append(frame)
            keys.append(digest)
            names.append(path.name)
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return CurrentData(frame, tuple(keys), tuple(names))

    def _entries(self) -> list[Path]:
        if self.rules is None:
            return batch_files(self.landing)
        entries = []
        for path in landing_entries(self.landing):
            try:
                if being_written(path) or entry_problem(path, self.rules) is not None:
                    continue  # still being written, or not a batch of this kind: screening's business
            except OSError:
                continue
            entries.append(path)
        return entries


@dataclass(frozen=True)
class PredictionLogSource:
    """Records the service logged since the last check, with late labels joined into the target column.

    Its key is ``predlog:<last id>``: the largest such key among the seen ones is the watermark.
    """

    database_url: str
    target: str | None = None
    name: str = "prediction_log"

    def pending(self, seen: set[str]) -> CurrentData:
        from serving.predlog import make_engine, read_log

        marks = [int(key.split(":", 1)[1]) for key in seen if key.startswith("predlog:")]
        after = max(marks, default=0)
        engine = make_engine(self.database_url)
        try:
            frame, last = read_log(engine, after, self.target)
        finally:
            engine.dispose()
        if frame.empty:
            return CurrentData(frame, ())
        return CurrentData(frame, (f"predlog:{last}",), (f"prediction log ids {after + 1}-{last}",))


def combine(parts: list[CurrentData]) -> CurrentData:
    """Several sources as one current sample (e.g. landed batches and served traffic)."""
    parts = [p for p in parts if not p.empty]
    if not parts:
        return CurrentData(pd.DataFrame(), ())
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    return CurrentData(frame, tuple(k for p in parts for k in p.keys), tuple(s for p in parts for s in p.sources))


def idempotency_key(keys: tuple[str, ...] | list[str]) -> str:
    """Same set of batches, same key, whatever the order they were found in."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]


def drift_columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns of a kind's drift frame (``KindRuntime.drift_frame``): numbers are
    float64, everything else a category, in the frame's order."""
    numeric = [str(name) for name, dtype in frame.dtypes.items() if pd.api.types.is_float_dtype(dtype)]
    return numeric, [str(name) for name in frame.columns if str(name) not in numeric]


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reasons: tuple[str, ...]
    blocked_by: str | None = None
    signals: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_retrain(
    *,
    drifted_share: float,
    current_rows: int,
    accuracy: float | None,
    reference_accuracy: float | None,
    key: str,
    error: float | None = None,
    reference_error: float | None = None,
    triggered_keys: set[str],
    last_retrain_at: datetime | None,
    retrain_running: bool,
    now: datetime,
    cfg: MonitorParams,
) -> RetrainDecision:
    """Whether this check should trigger a retrain, and why (or why not)."""
    signals = {
        "drifted_share": drifted_share,
        "current_rows": current_rows,
        "accuracy": accuracy,
        "reference_accuracy": reference_accuracy,
        "error": error,
        "reference_error": reference_error,
    }
    reasons = []
    if current_rows < cfg.min_rows:
        # Blocked, not rejected: the rows stay pending and add up with the next batches.
        return RetrainDecision(
            False, (f"only {current_rows} new rows; monitor.min_rows is {cfg.min_rows}",), "waiting for more rows", signals
        )
    if drifted_share >= cfg.drift_share:
        reasons.append(f"{drifted_share:.0%} of columns drifted (threshold {cfg.drift_share:.0%})")
    if accuracy is not None and reference_accuracy is not None and accuracy < reference_accuracy - cfg.accuracy_tolerance:
        reasons.append(
            f"accuracy on new labelled data {accuracy:.4f} < test accuracy {reference_accuracy:.4f} - {cfg.accuracy_tolerance}"
        )
    if error is not None and reference_error is not None and error > reference_error * (1 + cfg.error_tolerance):
        reasons.append(f"MAE on new labelled data {error:.4g} > test MAE {reference_error:.4g} x (1 + {cfg.error_tolerance})")
    if not reasons:
        return RetrainDecision(
            False, (f"no drift: {drifted_share:.0%} of columns drifted (threshold {cfg.drift_share:.0%})",), None, signals
        )
    if key in triggered_keys:
        return RetrainDecision(False, tuple(reasons), "this data already triggered a retrain", signals)
    if retrain_running:
        return RetrainDecision(False, tuple(reasons), "a retrain is running", signals)
    if last_retrain_at is not None and now - last_retrain_at < timedelta(hours=cfg.cooldown_hours):
        return RetrainDecision(False, tuple(reasons), f"cooldown: last retrain at {last_retrain_at.isoformat()}", signals)
    return RetrainDecision(True, tuple(reasons), None, signals)
