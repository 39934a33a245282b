"""The drift monitor's logic, free of orchestration: where current data comes from and when to retrain.

``decide_retrain`` is the whole policy, pure and unit-tested: retrain when the share of drifted
columns reaches ``monitor.drift_share`` on a current sample of at least ``monitor.min_rows``
rows, or when a group (a series, where the kind groups its rows: ``KindRuntime.drift_groups``) drifted
on its own (``drifted_groups``: its share reaches ``monitor.drift_share`` against its own reference rows),
or when labelled new data shows the production model's accuracy more than
``monitor.accuracy_tolerance`` below its test accuracy (a numeric prediction's MAE more than
``monitor.error_tolerance`` above its test MAE, as a share); never during the cooldown after a
retrain, never while a retrain runs, and never twice for the same data (the idempotency key is
a hash of the batches' hashes).

``group_drift`` runs the per-group checks: the largest groups with at least ``monitor.min_rows`` new rows,
at most ``monitor.max_groups`` of them, each against the same group's reference rows; a group the
reference does not have is reported as new.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.kinds.base import LandingScreen
from pipeline.lifecycle.drift import DriftInputError, DriftResult, detect_drift
from pipeline.lifecycle.landing import being_written, entry_problem, entry_sha256, landing_entries
from pipeline.onnxio.card import ModelCard
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


def label_column(card: ModelCard) -> str | None:
    """The column the prediction log's late labels are joined into: the card's target, unless the model
    takes it as an input (a forecaster's target is in every logged step, its actuals arrive as later steps;
    a joined label would overwrite the logged value)."""
    return None if card.target in getattr(card, "features", ()) else card.target


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


GroupStatus = Literal["checked", "new", "few_reference_rows", "not_compared"]


@dataclass(frozen=True)
class GroupDrift:
    """One group's check: its new rows against the same group's reference rows.

    ``status``: checked; new (no reference rows: reported, not compared); few_reference_rows (fewer than
    ``monitor.min_rows``: too few to compare); not_compared (no column has values on both sides: ``note``)."""

    group: str
    current_rows: int
    reference_rows: int
    status: GroupStatus
    drifted_share: float | None = None
    drifted_columns: tuple[str, ...] = ()
    note: str | None = None


@dataclass(frozen=True)
class GroupReport:
    """The per-group checks of one drift check (``group_drift``), and the groups left out."""

    column: str  # the raw rows' group column (sequences: the series column)
    groups: tuple[GroupDrift, ...]  # checked ones first, largest first; then the new ones
    small: int  # groups with fewer than monitor.min_rows new rows: not checked
    over_limit: int  # groups past monitor.max_groups (the largest are checked): not checked

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "groups": [asdict(g) for g in self.groups],
            "small_groups": self.small,
            "groups_over_limit": self.over_limit,
        }

    def markdown_table(self) -> str:
        """One row per group: group | new rows | reference rows | status | drifted share | drifted columns."""
        column = self.column.replace("|", "\\|")  # a "|" in a name would split the cell
        lines = [
            f"| {column} | new rows | reference rows | status | drifted share | drifted columns |",
            "|---|---:|---:|---|---:|---|",
        ]
        for g in self.groups:
            share = "" if g.drifted_share is None else f"{g.drifted_share:.0%}"
            cells = [g.group, str(g.current_rows), str(g.reference_rows), g.status, share, ", ".join(g.drifted_columns)]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        left = []
        if self.small:
            left.append(f"{self.small} with too few new rows")
        if self.over_limit:
            left.append(f"{self.over_limit} past monitor.max_groups")
        return "\n".join(lines + ([f"\nNot checked: {'; '.join(left)}."] if left else []))


def _group_ids(groups: Any, rows: int) -> pd.Series:
    """Group ids as text, positionally (as ingest writes a series id); missing stays missing; ``groups`` None:
    ``rows`` missing ids (the rows carry no group column)."""
    if groups is None:
        return pd.Series(pd.NA, index=range(rows), dtype="string")
    ids = pd.Series(np.asarray(groups, dtype=object)).astype("string")
    if len(ids) != rows:
        raise ValueError(f"{len(ids)} group ids for {rows} rows: one id per row of the frame")
    return ids


def _members(ids: pd.Series, group: str) -> np.ndarray:
    return (ids == group).to_numpy(dtype=bool, na_value=False)


def compare_frames(
    reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitorParams, seed: int, html_path: Path | None = None
) -> DriftResult:
    """``detect_drift`` of a kind's drift frames (``drift_columns`` of the reference) with the monitor's methods,
    thresholds and sample sizes: the one way the monitor compares two frames, whole or one group's rows."""
    numeric, categorical = drift_columns(reference)
    return detect_drift(
        reference,
        current,
        numeric,
        categorical,
        method=cfg.method,
        num_method=cfg.num_method,
        cat_method=cfg.cat_method,
        threshold=cfg.threshold,
        drift_share=cfg.drift_share,
        reference_sample=cfg.reference_sample,
        current_sample=cfg.current_sample,
        seed=seed,
        html_path=html_path,
    )


def group_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    reference_groups: Any | None,
    current_groups: Any | None,
    column: str,
    cfg: MonitorParams,
    seed: int,
) -> GroupReport | None:
    """Each large group's drift: ``current`` rows of a group against the ``reference`` rows of the same group
    (drift frames, ``KindRuntime.drift_frame``; ``*_groups``: each row's group id, in row order, or None
    where the rows carry no group column), with the
    monitor's drift options and no HTML report. The groups with at least ``cfg.min_rows`` new rows are
    taken largest first, at most ``cfg.max_groups`` of them; a group absent from the reference is new.
    None when no current row names a group (one group: the overall check is its check) or ``max_groups`` is 0."""
    current_ids, reference_ids = _group_ids(current_groups, len(current)), _group_ids(reference_groups, len(reference))
    if cfg.max_groups == 0 or current_ids.isna().all():
        return None
    started = time.perf_counter()
    counts = current_ids.value_counts()
    reference_counts = reference_ids.value_counts()
    large = sorted(((int(n), str(g)) for g, n in counts.items() if n >= cfg.min_rows), key=lambda item: (-item[0], item[1]))
    known = [(n, g) for n, g in large if g in reference_counts.index]
    new = [GroupDrift(g, n, 0, "new") for n, g in large if g not in reference_counts.index]
    checked = []
    for rows, group in known[: cfg.max_groups]:
        reference_rows = int(reference_counts[group])
        if reference_rows < cfg.min_rows:
            checked.append(GroupDrift(group, rows, reference_rows, "few_reference_rows"))
            continue
        try:
            result = compare_frames(
                reference.loc[_members(reference_ids, group)], current.loc[_members(current_ids, group)], cfg, seed
            )
        except DriftInputError as exc:  # every column empty on one side for this group
            log.warning("drift of %s %r: not compared (%s)", column, group, exc)
            checked.append(GroupDrift(group, rows, reference_rows, "not_compared", note=str(exc)))
            continue
        checked.append(GroupDrift(group, rows, reference_rows, "checked", result.drifted_share, tuple(result.drifted_columns)))
    report = GroupReport(column, tuple(checked + new), len(counts) - len(large), max(0, len(known) - cfg.max_groups))
    log.info(
        "per-%s drift: %d checked, %d new, %d too small, %d over monitor.max_groups, in %.1f s",
        column,
        sum(g.status == "checked" for g in report.groups),
        len(new),
        report.small,
        report.over_limit,
        time.perf_counter() - started,
    )
    return report


def drifted_groups(report: GroupReport | None, drift_share: float) -> tuple[str, ...]:
    """The policy for groups: a checked group whose own drifted share reaches ``drift_share`` counts as drift
    (one series can shift while the pooled check, diluted by the others, does not). A new group does not: the
    model was never trained on it, and how it does there shows in its performance on labelled rows."""
    if report is None:
        return ()
    return tuple(
        g.group
        for g in report.groups
        if g.status == "checked" and g.drifted_share is not None and g.drifted_share >= drift_share
    )


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reasons: tuple[str, ...]
    blocked_by: str | None = None
    signals: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RETRAIN_EVENTS = ("register", "unchanged", "rejected")  # a retrain ends with one of these in the registry's history


def last_retrain(saved: str | None, history: list[dict[str, Any]]) -> datetime | None:
    """When the last retrain ended: the later of the monitor state's own record (``saved``, ISO time) and the
    newest retrain outcome in the registry's history. The history is shared by every host, so the cooldown
    also holds for retrains that ran on a worker in a fresh clone, whose own state went with the clone."""
    times = [saved] if saved else []
    times += [str(e["time"]) for e in history if e.get("event") in RETRAIN_EVENTS and e.get("time")]
    parsed = []
    for text in times:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            continue  # a hand-edited line: the other records still count
        parsed.append(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
    return max(parsed, default=None)


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
    drifted_groups: Sequence[str] = (),
    group_column: str | None = None,
) -> RetrainDecision:
    """Whether this check should trigger a retrain, and why (or why not). ``drifted_groups``: the groups of
    ``group_column`` that drifted on their own (``drifted_groups``)."""
    signals = {
        "drifted_share": drifted_share,
        "drifted_groups": list(drifted_groups),
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
    if drifted_groups:
        shown = ", ".join(repr(g) for g in drifted_groups[:5]) + (", ..." if len(drifted_groups) > 5 else "")
        reasons.append(
            f"{len(drifted_groups)} {group_column or 'group'} group(s) drifted on their own, "
            f"each at least {cfg.drift_share:.0%} of columns: {shown}"
        )
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
