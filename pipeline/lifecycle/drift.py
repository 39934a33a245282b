"""Data drift between a reference and a current table: a small typed wrapper around Evidently 0.7.

Used by the drift monitor to decide whether to retrain. ``detect_drift`` runs Evidently's
``DataDriftPreset`` on the listed columns only, with their kinds declared (never guessed), and reads
the answer back into frozen dataclasses:

* per column: the stattest Evidently picked, its score and threshold, and the VERDICT, taken from the
  column's test status. The score alone cannot give the verdict: its meaning depends on the method,
  and Evidently picks the method from the sample size (with <= 1000 reference rows numeric columns
  get "K-S p_value", where *small* means drift; above that "Wasserstein distance (normed)", where
  *large* means drift).
* the share of drifted columns, and Evidently's dataset-level verdict (its "Share of Drifted Columns"
  test: drift when the share reaches ``drift_share``).

Everything is read by metric type and column name from ``Snapshot.dict()``, never by list position.
Evidently is imported lazily (its import takes ~3 s) so that importing this module stays cheap.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError, ParamsError
from pipeline.kinds.tabular.schema import FeatureKind

log = logging.getLogger(__name__)

# Test statuses of Evidently 0.7.23 (``evidently.legacy.tests.base_test.TestStatus``). A ValueDrift
# test only ever reports FAIL (drift detected) or SUCCESS; WARNING would mean a non-critical test
# failed, which for a retrain monitor is still a drift alarm, so it counts as drifted. ERROR and
# SKIPPED mean no verdict was reached: we refuse to guess and raise.
DRIFTED_STATUSES = frozenset({"FAIL", "WARNING"})
NOT_DRIFTED_STATUSES = frozenset({"SUCCESS"})

# Evidently's registered type names of the two metrics the preset produces (stable serialisation
# aliases; the contract test in tests/unit/test_drift.py pins them to the installed version).
_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COLUMNS_COUNT = "evidently:metric_v2:DriftedColumnsCount"

# Our kind names -> Evidently's ColumnType values ("num"/"cat"), for the stattest registry.
_EVIDENTLY_KIND = {"numeric": "num", "categorical": "cat"}


class DriftInputError(DataError, ValueError):
    """The frames cannot be compared: no rows, a listed column missing, or every listed column entirely empty."""


class DriftParamsError(ParamsError, ValueError):
    """A drift option is impossible: unknown method, method not applicable to a column kind, bad size."""


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's drift result for one column."""

    column: str
    kind: FeatureKind
    method: str  # the stattest's display name, e.g. "Wasserstein distance (normed)", "K-S p_value"
    score: float  # a distance (large = drift) or a p-value (small = drift), depending on ``method``
    threshold: float
    drifted: bool  # from the column's test status, not from comparing score and threshold


@dataclass(frozen=True)
class ExcludedColumn:
    """A listed column that was not compared, and why (e.g. no value at all in the current frame)."""

    column: str
    kind: FeatureKind
    reason: str


@dataclass(frozen=True)
class DriftResult:
    """Per-column drift, the drifted share and Evidently's dataset-level verdict."""

    columns: tuple[ColumnDrift, ...]
    drifted_share: float  # share of ``columns`` whose verdict is drifted
    dataset_drift: bool  # Evidently's "Share of Drifted Columns" test failed
    reference_rows: int  # rows actually compared (after sampling)
    current_rows: int
    evidently_version: str
    drift_share: float = 0.5  # the share at which Evidently declares dataset drift
    excluded: tuple[ExcludedColumn, ...] = ()  # listed but not compared; not in ``columns`` nor the share
    # Evidently's Snapshot of the run (set by ``detect_drift``; None from ``parse_snapshot`` alone): what the HTML
    # report renders and what the monitor adds to its Evidently workspace. Not part of the result's value.
    snapshot: Any = field(default=None, repr=False, compare=False)

    def column(self, name: str) -> ColumnDrift:
        """The result for column ``name``; KeyError naming it if it was not compared."""
        for item in self.columns:
            if item.column == name:
                return item
        raise KeyError(f"no drift result for column {name!r}; compared columns: {[c.column for c in self.columns]}")

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the columns whose verdict is drifted, in comparison order."""
        return [item.column for item in self.columns if item.drifted]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (strict JSON: a non-finite score becomes null)."""
        return {
            "dataset_drift": self.dataset_drift,
            "drifted_share": self.drifted_share,
            "drift_share": self.drift_share,
            "drifted_columns": self.drifted_columns,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "evidently_version": self.evidently_version,
            "columns": [{**asdict(item), "score": item.score if math.isfinite(item.score) else None} for item in self.columns],
            "excluded_columns": [asdict(item) for item in self.excluded],
        }

    def markdown_table(self) -> str:
        """One row per column: column | kind | method | score | threshold | drifted."""
        lines = ["| column | kind | method | score | threshold | drifted |", "|---|---|---|---:|---:|---|"]
        for item in self.columns:
            cells = [item.column, item.kind, item.method, f"{item.score:.4g}", f"{item.threshold:.4g}"]
            cells = [cell.replace("|", "\\|") for cell in cells]  # a "|" in a name would split the cell
            lines.append("| " + " | ".join(cells) + f" | {'yes' if item.drifted else 'no'} |")
        for excluded in self.excluded:
            cells = [excluded.column, excluded.kind, f"not compared: {excluded.reason}"]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |  |  | n/a |")
        return "\n".join(lines)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    method: str | None = None,
    threshold: float | None = None,
    num_method: str | None = None,
    cat_method: str | None = None,
    drift_share: float = 0.5,
    reference_sample: int | None = None,
    current_sample: int | None = None,
    seed: int = 0,
    html_path: str | Path | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` on the listed columns with Evidently's DataDriftPreset.

    Only ``numeric`` and ``categorical`` columns are compared, declared to Evidently with those kinds;
    other columns of the frames are ignored and the frames are not modified. Missing values (NaN,
    None, pd.NA) are allowed; a column with no value at all in either frame (after sampling) is left out
    and named in ``DriftResult.excluded``; when every column is, that is an error.

    ``method``/``threshold`` override Evidently's per-column defaults for every column (``method``
    must then apply to both kinds, e.g. "psi", "jensenshannon", "hellinger"); ``num_method`` /
    ``cat_method`` override one kind. ``drift_share`` is the share of drifted columns at which
    Evidently declares dataset drift.

    Sampling: a frame with more rows than ``reference_sample``/``current_sample`` is replaced by that
    many rows drawn without replacement (kept in their original order), from two independent streams
    spawned from ``np.random.default_rng(seed)`` -- so the same seed gives the same result, and the
    reference draw does not depend on the current sample size. This keeps a 100k-row check fast.
    Note that Evidently picks default methods by reference size (<= 1000 rows: p-value tests).

    ``html_path``: also write Evidently's self-contained HTML report there (parents created).
    """
    columns = _check_columns(numeric, categorical, reference, current)
    _check_options(numeric, categorical, method, threshold, num_method, cat_method, drift_share)
    streams = np.random.default_rng(seed).spawn(2)
    ref = _sample(reference, columns, reference_sample, streams[0], "reference_sample")
    cur = _sample(current, columns, current_sample, streams[1], "current_sample")
    kinds: dict[str, FeatureKind] = {**{c: "numeric" for c in numeric}, **{c: "categorical" for c in categorical}}
    # An all-missing column would crash Evidently; it is left out and named in the result instead, so one
    # empty column (a broken feed) never stops the check of the others. Landing screening quarantines such
    # batches, so this guards the other sources (the prediction log) and a sample that drew only missing values.
    excluded = _all_missing(ref, cur, columns, kinds)
    if len(excluded) == len(columns):
        raise DriftInputError(f"no column to compare: {'; '.join(f'{e.column!r} {e.reason}' for e in excluded)}")
    skip = {item.column for item in excluded}
    numeric = [c for c in numeric if c not in skip]
    categorical = [c for c in categorical if c not in skip]
    kinds = {c: kind for c, kind in kinds.items() if c not in skip}

    snapshot, version = _run_evidently(
        ref,
        cur,
        list(numeric),
        list(categorical),
        dict(
            method=method,
            threshold=threshold,
            num_method=num_method,
            cat_method=cat_method,
            drift_share=drift_share,
        ),
    )
    result = replace(parse_snapshot(snapshot.dict(), kinds, len(ref), len(cur), version, drift_share), snapshot=snapshot)
    if excluded:
        result = replace(result, excluded=excluded)
    if html_path is not None:
        path = Path(html_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # save_html silently ignores anything but a str path in 0.7.23, hence str().
        snapshot.save_html(str(path))
        log.info("drift report written to %s", path)
    log.info(
        "drift: %d of %d columns drifted (share %.2f), dataset drift %s, on %d reference and %d current rows",
        len(result.drifted_columns),
        len(result.columns),
        result.drifted_share,
        result.dataset_drift,
        result.reference_rows,
        result.current_rows,
    )
    return result


def parse_snapshot(
    snapshot: Mapping[str, Any],
    kinds: Mapping[str, FeatureKind],
    reference_rows: int,
    current_rows: int,
    evidently_version: str,
    drift_share: float = 0.5,
) -> DriftResult:
    """Read a DataDriftPreset ``Snapshot.dict()`` into a DriftResult, by metric type and column name.

    ``snapshot["metrics"]`` holds one ValueDrift metric per column (``config``: column, method,
    threshold; ``value``: the score) and one DriftedColumnsCount; ``snapshot["tests"]`` holds one test
    per metric, linked to it by ``metric_config.metric_id``, with its ``status``. ``kinds`` maps
    each expected column to its kind and fixes the order of the result.
    """
    scores = {metric["id"]: metric["value"] for metric in snapshot["metrics"]}
    verdicts: dict[str, ColumnDrift] = {}
    dataset_status: str | None = None
    evidently_share: float | None = None
    for test in snapshot["tests"]:
        params = test["metric_config"]["params"]
        status = _status(test)
        if params["type"] == _VALUE_DRIFT:
            column = params["column"]
            if column not in kinds:
                raise RuntimeError(f"Evidently returned a drift test for column {column!r}, which was not asked for")
            if column in verdicts:
                raise RuntimeError(f"Evidently returned two drift tests for column {column!r}")
            verdicts[column] = ColumnDrift(
                column=column,
                kind=kinds[column],
                method=_method_display_name(str(params["method"]), kinds[column]),
                score=float(scores[test["metric_config"]["metric_id"]]),
                threshold=float(params["threshold"]),
                drifted=_is_drifted(status, f"drift test of column {column!r}"),
            )
        elif params["type"] == _DRIFTED_COLUMNS_COUNT:
            dataset_status = status
            evidently_share = float(scores[test["metric_config"]["metric_id"]]["share"])

    absent = [column for column in kinds if column not in verdicts]
    if absent:
        # Happens when the Report runs without include_tests=True: there is then no verdict to read.
        raise RuntimeError(f"Evidently returned no drift test for column(s) {absent}")
    if dataset_status is None or evidently_share is None:
        raise RuntimeError("Evidently returned no 'Share of Drifted Columns' test; cannot read the dataset verdict")

    columns = tuple(verdicts[column] for column in kinds)
    drifted_share = sum(item.drifted for item in columns) / len(columns)
    # Evidently counts drifted columns a second time (its legacy DatasetDriftMetric) for the dataset
    # verdict; if that count disagreed with the per-column tests, the verdicts would contradict each other.
    if not math.isclose(drifted_share, evidently_share, abs_tol=1e-9):
        raise RuntimeError(
            f"Evidently's drifted share {evidently_share:.4f} disagrees with its per-column tests ({drifted_share:.4f})"
        )
    return DriftResult(
        columns=columns,
        drifted_share=drifted_share,
        dataset_drift=_is_drifted(dataset_status, "'Share of Drifted Columns' test"),
        reference_rows=reference_rows,
        current_rows=current_rows,
        evidently_version=evidently_version,
        drift_share=drift_share,
    )


def _status(test: Mapping[str, Any]) -> str:
    # dict() keeps the TestStatus enum (a str Enum); its value is the plain status name.
    raw = test["status"]
    return str(getattr(raw, "value", raw))


def _is_drifted(status: str, what: str) -> bool:
    if status in DRIFTED_STATUSES:
        return True
    if status in NOT_DRIFTED_STATUSES:
        return False
    raise RuntimeError(f"Evidently's {what} ended with status {status!r}; no drift verdict")


def _check_columns(
    numeric: Sequence[str], categorical: Sequence[str], reference: pd.DataFrame, current: pd.DataFrame
) -> list[str]:
    """The columns to compare, after checking the lists and both frames."""
    if isinstance(numeric, str) or isinstance(categorical, str):
        raise DriftParamsError("numeric and categorical must be lists of column names, not a single string")
    columns = [*numeric, *categorical]
    if not columns:
        raise DriftParamsError("no columns to compare: numeric and categorical are both empty")
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise DriftParamsError(f"column {column!r} is listed twice (numeric and categorical lists must not overlap)")
        seen.add(column)
    for frame, name in ((reference, "reference"), (current, "current")):
        if len(frame) == 0:
            raise DriftInputError(f"the {name} frame has no rows; there is nothing to compare")
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise DriftInputError(f"column {missing[0]!r} is missing from the {name} frame")
    return columns


def _all_missing(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], kinds: Mapping[str, FeatureKind]
) -> tuple[ExcludedColumn, ...]:
    """The columns with no value at all in either frame, each with a reason naming the frame."""
    excluded = []
    for column in columns:
        empty = [name for frame, name in ((reference, "reference"), (current, "current")) if frame[column].isna().all()]
        if empty:
            reason = f"has no values in the {' and '.join(empty)} frame{'s' if len(empty) > 1 else ''} (all missing)"
            log.warning("drift: column %r %s; left out of the comparison", column, reason)
            excluded.append(ExcludedColumn(column, kinds[column], reason))
    return tuple(excluded)


def _check_options(
    numeric: Sequence[str],
    categorical: Sequence[str],
    method: str | None,
    threshold: float | None,
    num_method: str | None,
    cat_method: str | None,
    drift_share: float,
) -> None:
    """Reject impossible options here, with the option's name, rather than deep inside Evidently."""
    if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
        raise DriftParamsError(f"threshold must be a positive number, got {threshold!r}")
    if not 0 < drift_share <= 1:
        raise DriftParamsError(f"drift_share must be in (0, 1], got {drift_share!r}")
    checks: list[tuple[str, str, FeatureKind]] = []
    if method is not None and numeric:
        checks.append(("method", method, "numeric"))
    if method is not None and categorical:
        checks.append(("method", method, "categorical"))
    if num_method is not None:
        checks.append(("num_method", num_method, "numeric"))
    if cat_method is not None:
        checks.append(("cat_method", cat_method, "categorical"))
    for option, name, kind in checks:
        _registered_stattest(name, kind, option)


def _sample(frame: pd.DataFrame, columns: list[str], size: int | None, rng: np.random.Generator, option: str) -> pd.DataFrame:
    """The listed columns of ``frame`` (a new frame), down-sampled to ``size`` rows if it has more."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1):
        raise DriftParamsError(f"{option} must be a positive integer or None, got {size!r}")
    subset = frame[columns]
    if size is not None and len(subset) > size:
        rows = np.sort(rng.choice(len(subset), size=size, replace=False))  # sorted: keep arrival order
        subset = subset.iloc[rows]
    # A fresh RangeIndex: Evidently bins rows by index in its plots; the caller's index is irrelevant.
    return subset.reset_index(drop=True)


def _disable_telemetry() -> None:
    """Opt out of Evidently's usage telemetry, unless the user already chose.

    In 0.7.23 ``evidently.telemetry`` (iterative-telemetry, honours DO_NOT_TRACK) is only used by the
    UI service and the collector, and ``EVIDENTLY_DISABLE_TELEMETRY`` is read by ``legacy/_config.py``
    but used nowhere; a Report run sends nothing. Both are set anyway so that a future version or an
    indirect import stays quiet.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")


def _import_evidently() -> str:
    """Import Evidently (once; ~3 s) with telemetry opted out; returns its version.

    Importing it makes its dependencies warn about their own deprecations (litestar,
    ``numpy.core``): nothing this project can act on, so those are silenced for the import only.
    """
    _disable_telemetry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import evidently
        import evidently.presets  # noqa: F401  (the heavy part: metrics, legacy calculations)
    return str(evidently.__version__)


def _registered_stattest(name: str, kind: FeatureKind, option: str) -> Any:
    """Evidently's registered StatTest called ``name`` for columns of ``kind``; DriftParamsError if none."""
    _import_evidently()
    from evidently.legacy.calculations.stattests.registry import (
        StatTestInvalidFeatureTypeError,
        StatTestNotFoundError,
        _registered_stat_tests,
        get_registered_stattest,
    )
    from evidently.legacy.core import ColumnType

    column_type = ColumnType(_EVIDENTLY_KIND[kind])
    try:
        return get_registered_stattest(name, column_type)
    except (StatTestNotFoundError, StatTestInvalidFeatureTypeError):
        usable = sorted(test for test, by_type in _registered_stat_tests.items() if column_type in by_type)
        raise DriftParamsError(f"{option}={name!r} is not a drift method for {kind} columns; choose one of {usable}") from None


def _method_display_name(name: str, kind: FeatureKind) -> str:
    # An auto-selected method comes back as its display name ("K-S p_value"); an overridden one as the
    # id we passed ("ks"). Map ids to display names so ``method`` always reads the same way.
    try:
        return str(_registered_stattest(name, kind, "method").display_name)
    except DriftParamsError:
        return name


def _run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    options: dict[str, Any],
) -> tuple[Any, str]:
    """Run DataDriftPreset with tests on the two frames; returns (Snapshot, evidently version)."""
    version = _import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    # Kinds are declared: inference would, e.g., call an integer-coded occupation numeric.
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    # include_tests=True on the Report is what makes ValueDrift emit its per-column test (the verdict).
    report = Report([DataDriftPreset(**options)], include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    return snapshot, version
