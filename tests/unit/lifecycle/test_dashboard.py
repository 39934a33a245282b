"""pipeline.lifecycle.dashboard against the real, installed Evidently: the workspace is read back through
Evidently's own ``Workspace`` API, as its UI reads it (tests/flows/test_monitor_dashboard.py serves it)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.core.io import write_json
from pipeline.lifecycle.dashboard import (
    SUMMARY_FILE,
    CheckFigures,
    add_check,
    check_snapshot,
    dashboard_panels,
    drift_history,
    ensure_project,
    history_table,
    percent,
    project_name,
    prune_reports,
    record_check,
    report_folder_name,
    report_folder_time,
    significant,
    unreadable_snapshots,
)
from pipeline.lifecycle.drift import DriftResult, _import_evidently, detect_drift
from tests.unit.lifecycle.test_drift import CATEGORICAL, NUMERIC, make_frames

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
CLASSIFIER = CheckFigures(new_rows=2000, labelled_rows=800, accuracy=0.6523879862136879, test_accuracy=0.6783)
FORECASTER = CheckFigures(new_rows=1200, labelled_rows=0, test_mae=3.25)


@pytest.fixture(scope="module")
def drifted() -> DriftResult:
    reference, current = make_frames()
    return detect_drift(reference, current, NUMERIC, CATEGORICAL)


@pytest.fixture(scope="module")
def calm() -> DriftResult:
    reference, _ = make_frames()
    return detect_drift(reference, reference.sample(n=1500, random_state=1), NUMERIC, CATEGORICAL)  # nothing drifts


def evidently_workspace(path: Path):
    _import_evidently()
    from evidently.ui.workspace import Workspace

    return Workspace(str(path))


def metric_values(run, metric: str) -> dict[str, float]:
    """Each value of one metric type in a stored run, by its column (or value type)."""
    values = {}
    for result in run.metric_results.values():
        location = result.metric_value_location
        if location is not None and location.metric.params["type"] == f"evidently:metric_v2:{metric}":
            values[str(location.metric.params.get("column"))] = float(result.value)
    return values


# ---------------------------------------------------------------- numbers


def test_shares_are_percentages_with_one_decimal_and_scores_have_four_significant_digits():
    assert [percent(x) for x in (1 / 3, 0.5, 0.0, 1.0)] == ["33.3%", "50.0%", "0.0%", "100.0%"]
    assert [significant(x) for x in (0.6523879862136879, 1.2e-12, 1234.5678, 0.5)] == ["0.6524", "1.2e-12", "1235", "0.5"]
    assert percent(None) == significant(None) == significant(float("nan")) == "n/a"


# ---------------------------------------------------------------- the workspace


def test_a_check_becomes_one_snapshot_with_the_drift_scores_and_the_figures(tmp_path, drifted):
    recorded = add_check(tmp_path / "ws", project_name("tabular", "wrkstat"), drifted, CLASSIFIER, T0, {"report": "x"})

    workspace = evidently_workspace(tmp_path / "ws")
    (project,) = workspace.list_projects()
    assert (project.name, str(project.id)) == ("tabular: wrkstat", recorded.project_id)
    assert [str(run) for run in workspace.list_runs(project.id)] == [recorded.snapshot_id]
    run = workspace.get_run(project.id, recorded.snapshot_id)
    assert metric_values(run, "ValueDrift") == pytest.approx({c.column: c.score for c in drifted.columns})
    (share,) = [r.share.value for r in run.metric_results.values() if hasattr(r, "share")]  # DriftedColumnsCount
    assert share == pytest.approx(drifted.drifted_share)
    assert metric_values(run, "MeanValue") == pytest.approx(CLASSIFIER.known())
    assert run.timestamp == T0.astimezone().replace(tzinfo=None)  # local wall time, as Evidently stamps its runs
    assert run.metadata["report"] == "x" and run.metadata["accuracy"] == "0.6524"
    assert run.tags == ["dataset drift"]
    assert recorded.ui_path == f"/projects/{recorded.project_id}/reports/{recorded.snapshot_id}"


def test_a_second_check_reuses_the_project_and_its_dashboard(tmp_path, drifted, calm):
    first = add_check(tmp_path, "tabular: wrkstat", drifted, CLASSIFIER, T0)
    second = add_check(tmp_path, "tabular: wrkstat", calm, CLASSIFIER, T0 + timedelta(days=1))
    workspace = evidently_workspace(tmp_path)
    assert [p.name for p in workspace.list_projects()] == ["tabular: wrkstat"]
    assert first.project_id == second.project_id and first.snapshot_id != second.snapshot_id
    assert len(workspace.list_runs(first.project_id)) == 2
    panels = workspace.get_dashboard(first.project_id).panels
    assert [p.title for p in panels] == [p.title for p in dashboard_panels(CLASSIFIER)]  # added once, not twice


def test_a_project_keeps_its_newest_snapshots_and_snapshots_of_other_tools(tmp_path, drifted):
    checks = [add_check(tmp_path, "tabular: wrkstat", drifted, CLASSIFIER, T0 + timedelta(hours=h)) for h in range(4)]
    project_id = checks[0].project_id
    # A snapshot id that is not a UUID7 (another tool's): neither counted nor removed.
    foreign = "0b4a6bc4-9a7d-4d3e-8f00-2c54cbd1e0aa"
    snapshots = tmp_path / project_id / "snapshots"
    (snapshots / f"{foreign}.json").write_bytes((snapshots / f"{checks[0].snapshot_id}.json").read_bytes())

    newest = add_check(tmp_path, "tabular: wrkstat", drifted, CLASSIFIER, T0 + timedelta(hours=5), keep_snapshots=2)

    runs = {str(run) for run in evidently_workspace(tmp_path).list_runs(project_id)}
    assert runs == {checks[-1].snapshot_id, newest.snapshot_id, foreign}
    with pytest.raises(ValueError, match="monitor.keep_snapshots must be a positive integer, got 0"):
        add_check(tmp_path, "tabular: wrkstat", drifted, CLASSIFIER, T0, keep_snapshots=0)
    assert len(evidently_workspace(tmp_path).list_runs(project_id)) == 3  # refused before writing


def test_the_dashboard_plots_drift_rows_and_the_models_own_figure(drifted):
    titles = {p.title: p for p in dashboard_panels(CLASSIFIER)}
    assert {"Share of drifted columns", "Drift score per column", "Rows per check", "Accuracy on labelled new rows"} <= set(
        titles
    )
    assert "MAE on labelled new rows" not in titles
    share = titles["Share of drifted columns"].values[0]
    assert (share.metric, share.metric_labels) == ("evidently:metric_v2:DriftedColumnsCount", {"value_type": "share"})
    scores = titles["Drift score per column"].values[0]
    assert (scores.metric, scores.metric_labels) == ("evidently:metric_v2:ValueDrift", {})  # every column, one line each
    forecaster = {p.title for p in dashboard_panels(FORECASTER)}
    assert "MAE on labelled new rows" in forecaster and "Accuracy on labelled new rows" not in forecaster


def test_panels_a_later_model_needs_are_added_and_panels_made_by_hand_stay(tmp_path, drifted):
    from evidently.sdk.panels import text_panel

    project_id = ensure_project(tmp_path, "p", "d", [text_panel(title="notes by hand"), *dashboard_panels(CLASSIFIER)])
    add_check(tmp_path, "p", drifted, FORECASTER, T0)  # the pipeline now predicts numbers
    titles = [p.title for p in evidently_workspace(tmp_path).get_dashboard(project_id).panels]
    assert titles[0] == "notes by hand" and "Accuracy on labelled new rows" in titles
    assert titles[-1] == "MAE on labelled new rows" and len(titles) == len(set(titles))


def test_two_checks_at_once_make_one_project(tmp_path, drifted):
    start = threading.Barrier(2)
    ids: list[str] = []

    def check() -> None:
        start.wait()
        ids.append(add_check(tmp_path, "tabular: wrkstat", drifted, CLASSIFIER, T0).project_id)

    threads = [threading.Thread(target=check) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 2 and ids[0] == ids[1]
    assert len(evidently_workspace(tmp_path).list_projects()) == 1


def test_a_broken_project_of_someone_else_is_skipped_with_a_warning(tmp_path, drifted, caplog):
    broken = tmp_path / "0190a0a0-0000-7000-8000-000000000000"
    broken.mkdir()
    (broken / "metadata.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="pipeline.lifecycle.dashboard"):
        recorded = add_check(tmp_path, "tabular: wrkstat", drifted, CLASSIFIER, T0)
    assert recorded.project_id != broken.name
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"Evidently project {broken.name} in {tmp_path}"]


def test_a_snapshot_that_cannot_be_written_is_one_warning_and_the_caller_goes_on(tmp_path, drifted, caplog):
    blocked = tmp_path / "evidently"
    blocked.write_text("a file where the workspace folder should be")
    with caplog.at_level(logging.WARNING, logger="pipeline.lifecycle.dashboard"):
        assert record_check(blocked, "tabular: wrkstat", drifted, CLASSIFIER, T0) is None
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert message.startswith(f"drift check not added to the Evidently workspace {blocked}: FileExistsError")
    assert "\n" not in message


def test_only_a_result_of_detect_drift_carries_a_snapshot(drifted):
    from dataclasses import replace

    with pytest.raises(ValueError, match="carries no Evidently snapshot"):
        check_snapshot(replace(drifted, snapshot=None), CLASSIFIER, T0)


def test_a_snapshot_file_cut_short_is_found_before_the_ui_refuses_to_start(tmp_path, drifted):
    recorded = add_check(tmp_path, "p", drifted, CLASSIFIER, T0)
    good = add_check(tmp_path, "p", drifted, CLASSIFIER, T0 + timedelta(hours=1))
    torn = tmp_path / recorded.project_id / "snapshots" / f"{recorded.snapshot_id}.json"
    torn.write_bytes(torn.read_bytes()[:1000])
    assert unreadable_snapshots(tmp_path) == [torn]
    assert good.snapshot_id not in str(unreadable_snapshots(tmp_path))


# ---------------------------------------------------------------- report folders


def test_report_folders_are_named_by_their_utc_time_and_sort_by_it():
    name = report_folder_name(datetime(2026, 3, 1, 7, 30, 5, 123456, tzinfo=UTC))
    assert name == "20260301T073005123456Z" and report_folder_time(name) == datetime(2026, 3, 1, 7, 30, 5, 123456, tzinfo=UTC)
    with pytest.raises(ValueError, match="time zone"):
        report_folder_name(datetime(2026, 3, 1))


def test_pruning_keeps_the_newest_report_folders_and_touches_nothing_else(tmp_path):
    names = [report_folder_name(T0 + timedelta(hours=h)) for h in range(5)]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.html").write_text("<html/>")
    foreign = [tmp_path / "notes", tmp_path / f"{names[0]}.bak", tmp_path / "2026-03-01"]
    for path in foreign:
        path.mkdir()
    (tmp_path / "20200101T000000000000Z").write_text("a file with a report folder's name")
    elsewhere = tmp_path.parent / "keep-me"
    elsewhere.mkdir(exist_ok=True)
    (tmp_path / "20200101T000000000001Z").symlink_to(elsewhere)

    removed = prune_reports(tmp_path, keep=2)

    assert removed == [tmp_path / name for name in names[:3]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*names[3:], *(p.name for p in foreign), "20200101T000000000000Z", "20200101T000000000001Z"])
    assert elsewhere.is_dir() and prune_reports(tmp_path, keep=2) == []
    with pytest.raises(ValueError, match="monitor.keep_reports must be a positive integer, got 0"):
        prune_reports(tmp_path, keep=0)


def test_pruning_a_missing_folder_removes_nothing(tmp_path):
    assert prune_reports(tmp_path / "never-written", keep=1) == []


# ---------------------------------------------------------------- the score history


def summary(share: float, rows: int, scores: dict[str, tuple[float | None, bool]]) -> dict:
    columns = [{"column": c, "score": s, "drifted": d} for c, (s, d) in scores.items()]
    return {"rows": rows, "drift": {"drifted_share": share, "columns": columns}}


def test_the_history_table_has_one_column_per_check_and_scores_for_people(tmp_path, caplog):
    checks = [
        (T0, summary(0.0, 2000, {"age": (0.012345678, False), "income": (0.0871, False)})),
        (T0 + timedelta(days=1), summary(2 / 3, 12345, {"age": (0.6523879862136879, True), "income": (None, False)})),
        (T0 + timedelta(days=2), summary(1 / 3, 800, {"prestige": (1.5e-12, True), "age": (0.2, True)})),
    ]
    for moment, data in checks:
        write_json(tmp_path / report_folder_name(moment) / SUMMARY_FILE, data)
    (tmp_path / report_folder_name(T0 + timedelta(days=3))).mkdir()  # a check still running: no summary yet
    torn = tmp_path / report_folder_name(T0 - timedelta(days=1)) / SUMMARY_FILE
    torn.parent.mkdir()
    torn.write_text('{"rows": 1')

    with caplog.at_level(logging.WARNING, logger="pipeline.lifecycle.dashboard"):
        history = drift_history(tmp_path, last=10)
    assert [name for name, _ in history] == [report_folder_name(moment) for moment, _ in checks]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(torn)]
    assert drift_history(tmp_path, last=2) == history[1:]

    table = history_table(history)
    headers = ["column", "2026-03-01 06:00:00 UTC", "2026-03-02 06:00:00 UTC", "2026-03-03 06:00:00 UTC"]
    assert [list(row) for row in table] == [headers] * 5
    assert [list(row.values()) for row in table] == [
        ["drifted columns", "0.0%", "66.7%", "33.3%"],
        ["new rows", "2,000", "12,345", "800"],
        ["prestige", "", "", "1.5e-12 drift"],  # the newest check's columns first, in its order
        ["age", "0.01235", "0.6524 drift", "0.2 drift"],
        ["income", "0.0871", "n/a", ""],
    ]


def test_checks_within_one_second_get_headers_of_their_own(tmp_path):
    for micro in (1, 2):
        write_json(tmp_path / report_folder_name(T0.replace(microsecond=micro)) / SUMMARY_FILE, summary(0.5, 10, {}))
    headers = list(history_table(drift_history(tmp_path, last=10))[0])[1:]
    assert headers == ["2026-03-01 06:00:00.000001 UTC", "2026-03-01 06:00:00.000002 UTC"]


def test_no_history_is_an_empty_table_of_row_names(tmp_path):
    assert history_table(drift_history(tmp_path, last=10)) == [{"column": "drifted columns"}, {"column": "new rows"}]
