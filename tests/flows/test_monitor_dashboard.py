"""The drift monitor's view over time, for real: checks under ``prefect_test_harness`` on a slice of the real data
add snapshots to one Evidently project, keep the newest reports, and leave table, markdown and link artifacts;
``python -m flows.monitor ui`` serves the workspace offline, from the installed package alone.

The slice workspace (``dvc repro`` and v0001 promoted, as tests/service builds it) is made once per module;
every test that changes it works on its own copy, so each test runs alone and in any order.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.testing.utilities import prefect_test_harness

from flows.monitor import drift_monitor, main
from pipeline.lifecycle.dashboard import (
    DEFAULT_UI_PORT,
    CheckFigures,
    add_check,
    percent,
    report_folders,
)
from pipeline.lifecycle.drift import _import_evidently, detect_drift
from pipeline.lifecycle.landing import land_frame, next_periods, reference_sample
from pipeline.params import Params
from tests.conftest import REPO, clone_workspace, edit_params, tool_env
from tests.flows.test_flows import workspace_params
from tests.service.conftest import build_served_workspace
from tests.unit.lifecycle.test_drift import CATEGORICAL, NUMERIC, make_frames

pytestmark = pytest.mark.slow

MONITOR = {"min_rows": 300, "cooldown_hours": 0, "keep_reports": 2, "keep_snapshots": 2}
RAW_FLOAT = re.compile(r"\d\.\d{6,}")  # 0.6523879862136879: a number nobody formatted


@dataclass(frozen=True)
class Checked:
    """A workspace after three drift checks (two training-era batches, then the next survey waves)."""

    root: Path
    summaries: list[dict[str, Any]]
    artifacts: dict[str, Any]  # the latest artifact data by key, read right after the third check


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    root = build_served_workspace(tmp_path_factory.mktemp("dashboard"))
    edit_params(root, monitor=MONITOR)
    return root


def land_era_batch(params: Params, seed: int) -> None:
    land_frame(reference_sample(params, 600, seed=seed, shift={}), Path(params.paths.landing), f"era_{seed}")


def latest_artifacts(*keys: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys))))
    return {a.key: json.loads(a.data) if a.type == "table" else a.data for a in found}


@pytest.fixture(scope="module")
def checked(served, harness, tmp_path_factory) -> Checked:
    root = clone_workspace(served, tmp_path_factory.mktemp("dashboard-checks") / "workspace")
    params = workspace_params(root)
    reports = Path(params.paths.drift_reports)
    (reports / "notes").mkdir(parents=True)  # not the monitor's: pruning must leave these alone
    (reports / "20200101T000000000000Z").write_text("a file named like a report folder")
    summaries = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVERGREEN_ROOT", str(root))
        for seed in (1, 2):
            land_era_batch(params, seed)
            summaries.append(drift_monitor(retrain_deployment=None))
        for period, frame in next_periods(params, 2):
            land_frame(frame, Path(params.paths.landing), f"year_{period}")
        summaries.append(drift_monitor(retrain_deployment=None))
    return Checked(root, summaries, latest_artifacts("drift-history", "drift-report", "drift-snapshot"))


def test_every_check_adds_a_snapshot_to_the_one_project_of_the_pipeline(checked):
    _import_evidently()
    from evidently.ui.workspace import Workspace

    workspace = Workspace(workspace_params(checked.root).paths.evidently)
    (project,) = workspace.list_projects()
    assert project.name == "tabular: wrkstat"  # the production model's kind and target
    snapshots = [s["snapshot"] for s in checked.summaries]
    assert {s["project_id"] for s in snapshots} == {str(project.id)}
    kept = snapshots[-MONITOR["keep_snapshots"] :]  # the oldest check's snapshot pruned
    assert sorted(str(run) for run in workspace.list_runs(project.id)) == sorted(s["snapshot_id"] for s in kept)
    last = workspace.get_run(project.id, snapshots[-1]["snapshot_id"])
    scores = {
        r.metric_value_location.metric.params["column"]: r.value
        for r in last.metric_results.values()
        if r.metric_value_location is not None
        and r.metric_value_location.metric.params["type"] == "evidently:metric_v2:ValueDrift"
    }
    assert scores == pytest.approx({c["column"]: c["score"] for c in checked.summaries[-1]["drift"]["columns"]})
    assert last.metadata["production_version"] == "v0001" and last.metadata["new_rows"] == str(checked.summaries[-1]["rows"])
    titles = [panel.title for panel in workspace.get_dashboard(project.id).panels]
    assert "Accuracy on labelled new rows" in titles and "Drift score per column" in titles


def test_only_the_newest_reports_are_kept_and_nothing_else_is_touched(checked):
    reports = Path(workspace_params(checked.root).paths.drift_reports)
    kept = [Path(s["report"]).parent for s in checked.summaries[-MONITOR["keep_reports"] :]]
    assert report_folders(reports) == kept
    assert (reports / "notes").is_dir() and (reports / "20200101T000000000000Z").is_file()
    assert all((folder / "summary.json").is_file() and (folder / "report.html").is_file() for folder in kept)


def test_the_artifacts_show_the_scores_over_time_written_for_people(checked):
    history, markdown, link = (checked.artifacts[k] for k in ("drift-history", "drift-report", "drift-snapshot"))
    kept = checked.summaries[-MONITOR["keep_reports"] :]
    assert history[0] == {
        "column": "drifted columns",
        **dict(zip(list(history[0])[1:], [percent(s["drift"]["drifted_share"]) for s in kept], strict=True)),
    }
    assert [row["column"] for row in history[2:]] == [c["column"] for c in kept[-1]["drift"]["columns"]]
    assert not any(RAW_FLOAT.search(cell) for row in history for cell in row.values())

    last = checked.summaries[-1]
    assert f"Drifted columns: {percent(last['drift']['drifted_share'])};" in markdown
    assert last["snapshot"]["snapshot_id"] in markdown and Path(last["report"]).as_uri() in markdown
    assert not RAW_FLOAT.search(markdown), markdown
    assert link.endswith(f"](http://127.0.0.1:{DEFAULT_UI_PORT}{last['snapshot']['ui_path']})")  # [text](link)


def test_a_workspace_that_cannot_be_written_costs_the_snapshot_not_the_verdict(served, harness, tmp_path, monkeypatch, caplog):
    root = clone_workspace(served, tmp_path / "workspace")
    params = workspace_params(root)
    blocked = Path(params.paths.evidently)
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("a file where the Evidently workspace should be")
    land_era_batch(params, 3)
    monkeypatch.setenv("EVERGREEN_ROOT", str(root))
    with caplog.at_level(logging.WARNING, logger="pipeline.lifecycle.dashboard"):
        summary = drift_monitor(retrain_deployment=None)
    assert summary["snapshot"] is None and summary["decision"]["retrain"] is False
    assert json.loads((Path(summary["report"]).parent / "summary.json").read_text())["key"] == summary["key"]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "pipeline.lifecycle.dashboard"]
    assert warning.startswith(f"drift check not added to the Evidently workspace {blocked}:")


def test_the_command_without_a_subcommand_still_runs_one_drift_check(served, harness, tmp_path, monkeypatch):
    root = clone_workspace(served, tmp_path / "workspace")
    params = workspace_params(root)
    land_era_batch(params, 4)
    monkeypatch.setenv("EVERGREEN_ROOT", str(root))
    main(["--no-trigger"])
    (folder,) = report_folders(Path(params.paths.drift_reports))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["batches"] == ["era_4.parquet"] and summary["snapshot"]["project"] == "tabular: wrkstat"


# ---------------------------------------------------------------- the UI


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str, data: bytes | None = None) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with opener.open(request, timeout=60) as response:
        assert response.status in (200, 201), url
        return bytes(response.read())


def wait_for_line(process: subprocess.Popen, lines: queue.Queue, text: str, seconds: float) -> None:
    """Until the process prints a line with ``text``; fails with its output if it exits or takes too long."""
    seen = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            pytest.fail(f"the UI exited ({process.wait()}):\n{''.join(seen)}")
        seen.append(line)
        if text in line:
            return
    pytest.fail(f"no {text!r} within {seconds:g}s:\n{''.join(seen)}")


def test_the_ui_serves_the_workspace_offline(tmp_path):
    root = tmp_path / "workspace"
    root.mkdir()
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    reference, current = make_frames()
    checks = [
        detect_drift(reference, current, NUMERIC, CATEGORICAL),
        detect_drift(reference, reference.sample(n=1500, random_state=1), NUMERIC, CATEGORICAL),
    ]
    start = datetime(2026, 3, 1, 6, tzinfo=UTC)
    recorded = [
        add_check(root / "reports" / "evidently", "tabular: wrkstat", drift, CheckFigures(2000, 0), start + timedelta(days=i))
        for i, drift in enumerate(checks)
    ]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.monitor", "ui", "--port", str(port)],
        cwd=REPO,
        env={**tool_env(), "EVERGREEN_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: everything it starts is stopped with it
    )
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_for_line(process, lines, "Uvicorn running on", seconds=180)
        base = f"http://127.0.0.1:{port}"
        page = get(base + "/").decode()
        assets = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
        for asset in assets:  # every script, style sheet and icon comes from the package, through this server
            body = get(base + asset)
            assert body
            if asset.endswith(".css"):
                assert not re.search(rb"@import|url\(\s*['\"]?https?:", body), asset

        (project,) = json.loads(get(base + "/api/projects"))
        assert (project["name"], project["id"]) == ("tabular: wrkstat", recorded[0].project_id)
        dashboard = json.loads(get(f"{base}/api/v2/dashboards/{project['id']}"))
        assert "Share of drifted columns" in [panel["title"] for panel in dashboard["panels"]]
        share = {"metric": "evidently:metric_v2:DriftedColumnsCount", "metric_labels": {"value_type": "share"}}
        series = json.loads(
            get(
                f"{base}/api/v2/snapshots/{project['id']}/data_series_batch",
                json.dumps({"series_filter": [{**share, "tags": [], "metadata": {}}]}).encode(),
            )
        )
        (line,) = series["series"]
        assert line["values"] == pytest.approx([drift.drifted_share for drift in checks])  # one point per check
        report = json.loads(get(f"{base}/api/projects/{project['id']}/{recorded[0].snapshot_id}/data"))
        assert report["widgets"] and NUMERIC[0] in json.dumps(report)  # the check's own Evidently report
        assert '<div id="root">' in get(base + recorded[0].ui_path).decode()
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process's group (uvicorn shuts down), up to 30 s for it to exit, then SIGKILL to whatever is
    left of the group."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group is gone
    process.wait()
