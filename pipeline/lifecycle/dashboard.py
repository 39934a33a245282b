"""The drift monitor's view over time: an Evidently workspace, its UI, the kept reports and the score history.

Every drift check (``flows/monitor.py``) adds one snapshot to the local Evidently workspace at ``paths.evidently``,
in the project of its pipeline: ``project_name`` of the production model's kind and target (``tabular: wrkstat``),
so every check of one pipeline lands in one project whichever version is in production, and the first check
creates it. The snapshot is the check's own Evidently run (the DataDriftPreset snapshot behind ``report.html``:
one ValueDrift score per column, the DriftedColumnsCount share) plus the check's figures (``CheckFigures``: new
and labelled rows, the served model's accuracy or MAE on the labelled rows and its test figure), each a
MeanValue of a one-row table so that Evidently's dashboard can plot it. The project's dashboard
(``dashboard_panels``) plots, one point per check: the share of drifted columns, each column's drift score,
the rows, and the accuracy (classifiers) or MAE (numeric predictions). ``record_check`` never raises: a
workspace that cannot be written costs the check its snapshot (one warning), never its verdict.

``serve_ui`` runs Evidently's UI service on the workspace (``python -m flows.monitor ui``): the pages and their
scripts come from the installed package, nothing from the network, and Evidently's usage telemetry is off.

``prune_snapshots`` keeps a project's newest ``monitor.keep_snapshots`` snapshots (the UI loads them all).
``prune_reports`` keeps the newest ``monitor.keep_reports`` report folders (``reports/drift/<time>``, 4-5 MB of
HTML each) and removes older ones the monitor made, never anything else; ``drift_history`` reads the
``summary.json`` of the kept ones back and ``history_table`` lays the per-column scores out for people.

Evidently is imported lazily (its import takes seconds), as in ``drift.py``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.io import file_lock, read_json
from pipeline.lifecycle.drift import DriftResult, _import_evidently

log = logging.getLogger(__name__)

# A report folder's name: the check's time in UTC, to the microsecond. Fixed width, so names sort by time.
REPORT_FOLDER_FORMAT = "%Y%m%dT%H%M%S%fZ"
REPORT_FOLDER = re.compile(r"\d{8}T\d{12}Z")
SUMMARY_FILE = "summary.json"

# The prediction service takes serve.port (8000) and Prefect's server 4200: the UI defaults to a port of its own.
DEFAULT_UI_PORT = 8001
# The workspace's lock (a hidden file: Evidently reads only folders named by a project's UUID).
LOCK_FILE = ".evergreen.lock"
LOCK_SECONDS = 60.0

_METRIC = "evidently:metric_v2:"
FIGURE_METRIC = "MeanValue"  # of a one-row table: the figure itself


# ---------------------------------------------------------------- numbers for people


def percent(share: float | None) -> str:
    """A share as a percentage with one decimal (``0.3333`` -> ``33.3%``); ``n/a`` for None or NaN."""
    if share is None or not math.isfinite(share):
        return "n/a"
    return f"{share:.1%}"


def significant(value: float | None, digits: int = 4) -> str:
    """A score with ``digits`` significant digits (``0.65238798`` -> ``0.6524``, ``1.2e-12`` stays so)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


# ---------------------------------------------------------------- report folders


def report_folder_name(moment: datetime) -> str:
    """The report folder of a check at ``moment`` (an aware time; named in UTC)."""
    if moment.tzinfo is None:
        raise ValueError(f"report_folder_name needs a time with a time zone, got {moment.isoformat()}")
    return moment.astimezone(UTC).strftime(REPORT_FOLDER_FORMAT)


def report_folder_time(name: str) -> datetime:
    """The time (UTC) a report folder's name stands for."""
    return datetime.strptime(name, REPORT_FOLDER_FORMAT).replace(tzinfo=UTC)


def report_folders(folder: Path) -> list[Path]:
    """The report folders the monitor made in ``folder``, oldest first: real folders (not links) named by a time."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if REPORT_FOLDER.fullmatch(p.name) and p.is_dir() and not p.is_symlink())


def require_positive(keep: object, key: str) -> None:
    """A count of things to keep must be an integer of at least 1 (a bool is not one)."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"{key} must be a positive integer, got {keep!r}")


def prune_reports(folder: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` report folders in ``folder``; returns the removed ones, oldest first.

    Only folders named as ``report_folder_name`` names them are counted and removed; files, links and folders
    with other names are never touched. A folder another pruning monitor removed first is skipped."""
    require_positive(keep, "monitor.keep_reports")
    old = report_folders(folder)[:-keep]
    removed = []
    for path in old:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            continue  # removed by a concurrent check's pruning: gone either way
        removed.append(path)
    if removed:
        log.info("removed %d drift report folder(s) older than the newest %d in %s", len(removed), keep, folder)
    return removed


# ---------------------------------------------------------------- the score history


def drift_history(folder: Path, last: int) -> list[tuple[str, dict[str, Any]]]:
    """The ``summary.json`` of the newest ``last`` report folders that have one, oldest first, each with its
    folder's name. A summary that cannot be read is left out with a warning naming it: the history is for
    people, and one torn file must not hide the others."""
    history: list[tuple[str, dict[str, Any]]] = []
    for path in reversed(report_folders(folder)):
        if len(history) == last:
            break
        summary = path / SUMMARY_FILE
        if not summary.is_file():
            continue  # a check still running, or one that found nothing new
        try:
            history.append((path.name, read_json(summary)))
        except (OSError, DataError) as exc:  # DataError: not JSON, or gone since it was listed
            log.warning("%s: left out of the drift history (%s)", summary, exc)
    return history[::-1]


def _columns(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((summary.get("drift") or {}).get("columns") or [])


def history_table(history: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, str]]:
    """Rows of a table with one column per check, headed by its time (UTC), oldest first: the share of drifted
    columns, the new rows, then each compared column's drift score (4 significant digits, marked ``drift`` where
    its test failed; empty where that check did not compare the column). Columns in the newest check's order,
    then any that only older checks compared."""
    times = [report_folder_time(name) for name, _ in history]
    headers = [f"{moment:%Y-%m-%d %H:%M:%S} UTC" for moment in times]
    if len(set(headers)) < len(headers):  # two checks within a second: show the microseconds
        headers = [f"{moment:%Y-%m-%d %H:%M:%S.%f} UTC" for moment in times]
    summaries = [summary for _, summary in history]
    table = [
        {
            "column": "drifted columns",
            **{h: percent((s.get("drift") or {}).get("drifted_share")) for h, s in zip(headers, summaries, strict=True)},
        },
        {
            "column": "new rows",
            **{
                h: f"{s['rows']:,}" if isinstance(s.get("rows"), int) else "n/a"
                for h, s in zip(headers, summaries, strict=True)
            },
        },
    ]
    scores: dict[str, dict[str, str]] = {}
    for header, summary in zip(headers, summaries, strict=True):
        for item in _columns(summary):
            text = significant(item.get("score"))
            scores.setdefault(str(item["column"]), {})[header] = f"{text} drift" if item.get("drifted") else text
    newest = [str(item["column"]) for item in _columns(summaries[-1])] if summaries else []
    for name in newest + [name for name in scores if name not in newest]:
        table.append({"column": name, **{header: scores[name].get(header, "") for header in headers}})
    return table


# ---------------------------------------------------------------- the workspace


def project_name(kind: str, target: str) -> str:
    """The Evidently project of a pipeline: its data kind and target (``tabular: wrkstat``), the same for every
    model version the pipeline trains."""
    return f"{kind}: {target}"


@dataclass(frozen=True)
class CheckFigures:
    """A check's figures beside its drift scores: rows, and the served model on the labelled new rows.

    ``accuracy``/``mae``: on the labelled new rows (None when too few carry labels); ``test_*``: the served
    model's own test figure. A classifier has accuracies, a numeric prediction (forecaster, regressor) MAEs."""

    new_rows: int
    labelled_rows: int
    accuracy: float | None = None
    test_accuracy: float | None = None
    mae: float | None = None
    test_mae: float | None = None

    def known(self) -> dict[str, float]:
        """The figures that have a finite value, by name."""
        return {
            name: float(value) for name, value in asdict(self).items() if value is not None and math.isfinite(float(value))
        }

    @property
    def numeric_prediction(self) -> bool:
        """True for a forecaster or regressor (its test figure is an MAE)."""
        return self.test_mae is not None


@dataclass(frozen=True)
class RecordedCheck:
    """Where a check's snapshot went: the workspace, its project and the snapshot."""

    workspace: str
    project: str
    project_id: str
    snapshot_id: str

    @property
    def ui_path(self) -> str:
        """The snapshot's page in the Evidently UI (after ``http://host:port``)."""
        return f"/projects/{self.project_id}/reports/{self.snapshot_id}"

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "ui_path": self.ui_path}


def _panel_metric(metric: str, legend: str, **labels: str) -> Any:
    from evidently.sdk.models import PanelMetric

    return PanelMetric(legend=legend, metric=_METRIC + metric, metric_labels=dict(labels))


def dashboard_panels(figures: CheckFigures) -> list[Any]:
    """The project's dashboard (Evidently ``DashboardPanelPlot``s), one point per check: the share of drifted
    columns, each column's drift score, the rows, and the served model's accuracy or MAE on labelled rows
    next to its test figure (whichever the model has)."""
    _import_evidently()
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel

    panels = [
        counter_panel(
            title="Drifted columns, last check",
            values=[_panel_metric("DriftedColumnsCount", "share", value_type="share")],
            size="half",
            aggregation="last",
        ),
        counter_panel(  # "last", not "sum": rows a blocked check left pending are counted again by the next
            title="New rows, last check",
            values=[_panel_metric(FIGURE_METRIC, "rows", column="new_rows")],
            size="half",
            aggregation="last",
        ),
        line_plot_panel(
            title="Share of drifted columns",
            description="Each check's share of columns whose drift test failed (the monitor retrains at monitor.drift_share)",
            values=[_panel_metric("DriftedColumnsCount", "drifted share", value_type="share")],
            size="half",
        ),
        bar_plot_panel(
            title="Rows per check",
            description="New rows compared with the training data, and those of them that carry labels",
            values=[
                _panel_metric(FIGURE_METRIC, "new rows", column="new_rows"),
                _panel_metric(FIGURE_METRIC, "labelled rows", column="labelled_rows"),
            ],
            size="half",
        ),
        line_plot_panel(
            title="Drift score per column",
            description=(
                "The score of each column's drift method: a distance (Wasserstein, Jensen-Shannon: higher is more "
                "drift) or, on at most 1000 reference rows, a p-value (K-S, chi-square: lower is more drift)"
            ),
            values=[_panel_metric("ValueDrift", "{{column}} ({{method}})")],
            size="full",
        ),
    ]
    if figures.numeric_prediction:
        panels.append(
            line_plot_panel(
                title="MAE on labelled new rows",
                description="The served model's mean absolute error on new rows with actuals, and on its test split",
                values=[
                    _panel_metric(FIGURE_METRIC, "MAE, new rows", column="mae"),
                    _panel_metric(FIGURE_METRIC, "MAE, test split", column="test_mae"),
                ],
                size="full",
            )
        )
    elif figures.test_accuracy is not None or figures.accuracy is not None:
        panels.append(
            line_plot_panel(
                title="Accuracy on labelled new rows",
                description="The served model's accuracy on new rows with labels, and on its test split",
                values=[
                    _panel_metric(FIGURE_METRIC, "accuracy, new rows", column="accuracy"),
                    _panel_metric(FIGURE_METRIC, "accuracy, test split", column="test_accuracy"),
                ],
                size="full",
            )
        )
    return panels


def check_snapshot(
    drift: DriftResult,
    figures: CheckFigures,
    checked_at: datetime,
    metadata: Mapping[str, str] | None = None,
) -> Any:
    """One Evidently Snapshot of a check: the drift run's metrics and pages (``drift.snapshot``) and the check's
    figures, at ``checked_at`` (kept as local wall time without a zone, as Evidently stamps its own runs).

    The figures are each a MeanValue of a one-row table; they go in the snapshot's metrics (the dashboard's
    series), not its pages, where "mean value of 'accuracy'" would only puzzle a reader: the check's figures
    are in its metadata too."""
    if drift.snapshot is None:
        raise ValueError("the drift result carries no Evidently snapshot (only detect_drift's results do)")
    _import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.core.report import Snapshot
    from evidently.metrics import MeanValue

    known = figures.known()
    frame = pd.DataFrame({name: [value] for name, value in known.items()})
    extra = (
        Report([MeanValue(column=name) for name in known])
        .run(Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=list(known))), None)
        .to_snapshot_model()
    )
    model = drift.snapshot.to_snapshot_model()
    when = checked_at.astimezone().replace(tzinfo=None) if checked_at.tzinfo is not None else checked_at
    described = {name: significant(value) for name, value in known.items()}
    merged = model.copy(
        update={
            "name": f"drift check {checked_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
            "timestamp": when,
            "metadata": {**described, **(metadata or {})},
            "tags": ["dataset drift"] if drift.dataset_drift else [],
            "metric_results": {**model.metric_results, **extra.metric_results},
            "top_level_metrics": [*model.top_level_metrics, *extra.top_level_metrics],
        }
    )
    return Snapshot.load_model(merged)


def ensure_project(workspace: str | Path, name: str, description: str, panels: Sequence[Any]) -> str:
    """The id of the project called ``name`` in the workspace, created if there is none, with each panel of
    ``panels`` that its dashboard lacks (by title) added; panels already there, or added by hand, stay.

    Under the workspace's lock, so two checks at once never create two projects. Where several projects have
    the name (made by hand), the first by id is used."""
    _import_evidently()
    from evidently.sdk.models import DashboardTabModel, ProjectModel

    state = _local_state(workspace)
    with file_lock(Path(workspace) / LOCK_FILE, LOCK_SECONDS):
        project_id = next((pid for pid in sorted(state.list_projects(), key=str) if _project(state, pid) == name), None)
        if project_id is None:
            project_id = state.write_project(ProjectModel(name=name, description=description)).id
            log.info("Evidently project %r created in %s", name, workspace)
        dashboard = state.read_dashboard(project_id)
        titles = {panel.title for panel in dashboard.panels}
        missing = [panel for panel in panels if panel.title not in titles]
        if missing:
            if not dashboard.tabs:
                dashboard.tabs.append(DashboardTabModel(title="Drift checks", panels=[]))
            dashboard.panels.extend(missing)
            dashboard.tabs[0].panels.extend(panel.id for panel in missing)
            state.write_dashboard(project_id, dashboard)
    return str(project_id)


def _local_state(workspace: str | Path) -> Any:
    """The storage of Evidently's local ``Workspace`` (its ``state``), opened without the rest of a Workspace:
    ``Workspace(path)`` also loads every snapshot of the workspace (about 1 MB of memory and 10-20 ms each), which
    adding one needs not."""
    _import_evidently()
    from evidently.ui.storage.local.base import LocalState

    Path(workspace).mkdir(parents=True, exist_ok=True)
    return LocalState(str(workspace))


def _project(state: Any, project_id: Any) -> str | None:
    """A project's name; None for a project folder without readable metadata (being created, left half-made, or
    broken by hand: a warning names it, and it is not the project looked for)."""
    try:
        return str(state.read_project(project_id).name)
    except FileNotFoundError:
        return None
    except ValueError as exc:  # not JSON, or not a project
        log.warning("Evidently project %s in %s: unreadable metadata, skipped (%s)", project_id, state.path, exc)
        return None


def add_check(
    workspace: str | Path,
    name: str,
    drift: DriftResult,
    figures: CheckFigures,
    checked_at: datetime,
    metadata: Mapping[str, str] | None = None,
    description: str | None = None,
    keep_snapshots: int | None = None,
) -> RecordedCheck:
    """Add a check's snapshot (``check_snapshot``) to project ``name`` (``ensure_project``) of the workspace;
    with ``keep_snapshots`` (``monitor.keep_snapshots``), then prune the project to its newest that many."""
    if keep_snapshots is not None:
        require_positive(keep_snapshots, "monitor.keep_snapshots")  # before anything is written
    snapshot = check_snapshot(drift, figures, checked_at, metadata)
    from evidently.legacy.core import new_id  # imported by check_snapshot

    project_id = ensure_project(
        workspace, name, description or f"Evergreen drift checks of {name}, one snapshot per check", dashboard_panels(figures)
    )
    snapshot_id = new_id()  # a UUID7, as Workspace.add_run names a run
    state = _local_state(workspace)
    state.write_snapshot(project_id, snapshot_id, snapshot.to_snapshot_model())
    log.info("drift check added to Evidently project %r (%s) as snapshot %s", name, workspace, snapshot_id)
    if keep_snapshots is not None:
        with file_lock(Path(workspace) / LOCK_FILE, LOCK_SECONDS):
            prune_snapshots(state, project_id, keep_snapshots)
    return RecordedCheck(str(workspace), name, project_id, str(snapshot_id))


def prune_snapshots(state: Any, project_id: str, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` snapshots of a project; returns the removed ids, oldest first.

    Evidently's UI loads every snapshot of the workspace when it starts (about 1 MB of memory each), so a
    monitor checking hourly would, unpruned, make the UI unusable within months. Snapshots are ordered by
    their ids: UUID7s, which begin with their creation time in milliseconds (what ``add_check`` and
    Evidently's ``Workspace.add_run`` write). Ids of another version (written by other tools) are neither
    counted nor removed. A snapshot removed meanwhile by another check's pruning is skipped."""
    require_positive(keep, "monitor.keep_snapshots")
    ids = sorted(str(sid) for sid in state.list_snapshots(project_id) if uuid.UUID(str(sid)).version == 7)
    removed = []
    for snapshot_id in ids[:-keep]:
        try:
            state.delete_snapshot(project_id, snapshot_id)
        except FileNotFoundError:
            continue
        removed.append(snapshot_id)
    if removed:
        log.info("removed %d Evidently snapshot(s) older than the newest %d of project %s", len(removed), keep, project_id)
    return removed


def record_check(
    workspace: str | Path,
    name: str,
    drift: DriftResult,
    figures: CheckFigures,
    checked_at: datetime,
    metadata: Mapping[str, str] | None = None,
    description: str | None = None,
    keep_snapshots: int | None = None,
) -> RecordedCheck | None:
    """``add_check``, or None with one warning when it fails: the workspace is a view, and a check whose
    snapshot cannot be written (disk full, a broken project file, a locked workspace) keeps its verdict."""
    try:
        return add_check(workspace, name, drift, figures, checked_at, metadata, description, keep_snapshots)
    except Exception as exc:  # noqa: BLE001 -- any failure of the view; the caller's verdict must survive it
        log.warning(
            "drift check not added to the Evidently workspace %s: %s: %s",
            workspace,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return None


# ---------------------------------------------------------------- the UI


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unreadable_snapshots(workspace: str | Path) -> list[Path]:
    """Snapshot files of the workspace that are not JSON (a write cut short): Evidently's UI refuses to start
    on one, so ``serve_ui`` sets them aside first."""
    bad = []
    for path in sorted(Path(workspace).glob("*/snapshots/*.json")):
        try:
            json.loads(path.read_bytes())
        except ValueError:
            bad.append(path)
    return bad


def serve_ui(workspace: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_UI_PORT) -> None:
    """Serve Evidently's UI on the workspace at ``http://host:port`` until interrupted (Ctrl-C, SIGTERM).

    Blocks. The workspace folder is created if absent (the UI then lists no project until a check runs);
    new snapshots show up while it runs. Snapshot files that are not JSON are renamed ``*.json.unreadable``
    with a warning each, as the UI would not start. The UI has no login: on an address other than loopback,
    anyone who reaches the port reads the workspace (a warning says so). Evidently's telemetry is off."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    path = Path(workspace)
    path.mkdir(parents=True, exist_ok=True)
    for bad in unreadable_snapshots(path):
        aside = bad.with_name(bad.name + ".unreadable")
        bad.rename(aside)
        log.warning("%s: not JSON (a write cut short?); renamed %s so the UI starts", bad, aside.name)
    if not _loopback(host):
        log.warning("Evidently UI on %s: it has no login, anyone who reaches port %d reads the workspace", host, port)
    _import_evidently()
    from evidently.ui.service.app import get_config, run

    config = get_config(host=host, port=port, workspace=str(path))
    config.telemetry.enabled = False
    log.info("Evidently UI on http://%s:%d (workspace %s)", host, port, path)
    run(config)
