"""The ``evergreen`` command: every command answers --help, user errors are one line with exit 1, the
outcome lines say what happened, and reset-demo deletes only the demo's state, after a confirmation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evergreen.cli import COMMANDS, monitor_line, outcome_line, retrain_outcome
from flows.stack import free_port
from pipeline.lifecycle.registry import Registry
from tests.conftest import REPO, tool_env
from tests.unit.lifecycle.test_registry import promoted_chain

CONSOLE_SCRIPT = Path(sys.executable).with_name("evergreen")


def evergreen(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None, stdin: str | None = None):
    environment = {**tool_env(), **(env or {})}
    environment.pop("PREFECT_API_URL", None)
    environment.setdefault("EVERGREEN_PREFECT_PORT", str(free_port()))  # no stack answers there
    return subprocess.run(
        [sys.executable, "-m", "evergreen", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
    )


def test_the_console_script_is_installed_and_lists_every_command():
    assert CONSOLE_SCRIPT.is_file(), "pip install -e . installs the evergreen console script"
    shown = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, env=tool_env())
    assert shown.returncode == 0
    for name in ("repro", "stack", "retrain", "monitor", "land", "registry", "serve", "score", "tune", "reset-demo"):
        assert name in COMMANDS and f"    {name}" in shown.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_help(name):
    if name == "repro":  # dvc's own help, through the wrapper
        result = evergreen(name, "--help")
        assert result.returncode == 0 and "dvc repro" in result.stdout
        return
    result = evergreen(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: evergreen {name}")


def test_an_unknown_command_is_a_usage_error():
    result = evergreen("retrian")
    assert result.returncode == 2 and "invalid choice: 'retrian'" in result.stderr


def test_retrain_without_a_server_says_how_to_start_one():
    result = evergreen("retrain", "--watch")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Prefect server at http://127.0.0.1:" in lines[0] and "evergreen stack up" in lines[0]


def test_stack_status_says_down_with_its_own_exit_code():
    result = evergreen("stack", "status", "--json")
    assert result.returncode == 3
    status = json.loads(result.stdout)
    assert status["up"] is False and status["api"].startswith("http://127.0.0.1:")


def test_registry_commands_through_evergreen(tmp_path):
    registry = Registry(tmp_path / "registry")
    promoted_chain(registry, tmp_path, 2)
    history = evergreen("registry", "--root", str(registry.root), "history")
    assert history.returncode == 0 and history.stdout.splitlines()[0].startswith("TIME (UTC)")
    listed = json.loads(evergreen("registry", "--root", str(registry.root), "--json", "list").stdout)
    assert [(v["version"], v["production"]) for v in listed] == [("v0001", False), ("v0002", True)]


GATE = {"metric": "accuracy", "challenger": 0.67123, "champion": 0.665, "baseline": 0.41, "reason": "0.6712 >= 0.665 - 0.005"}


def test_outcome_lines_say_what_the_retrain_decided():
    promoted = {
        "event": "promote",
        "version": "v0002",
        "reason": "drift: better",
        "decision": {"champion_version": "v0001", "decision": GATE},
    }
    assert outcome_line(promoted) == "promoted v0002: accuracy 0.6712 vs v0001's 0.665; drift: better"
    first = {
        "event": "promote",
        "version": "v0001",
        "decision": {"champion_version": None, "decision": {**GATE, "champion": None}},
    }
    assert outcome_line(first).startswith("promoted v0001: accuracy 0.6712 (no champion; baseline 0.41); 0.6712")
    assert outcome_line({"event": "unchanged", "version": "v0001"}) == (
        "unchanged v0001: the new model is byte-identical to production"
    )
    assert outcome_line(None).startswith("no decision recorded")
    history = [
        {"event": "promote", "version": "v0001", "time": "2026-12-01T10:00:00.000+00:00"},
        {"event": "register", "version": "v0002", "time": "2026-12-01T11:00:00.000+00:00"},
        {"event": "rejected", "version": "v0002", "time": "2026-12-01T11:00:01.000+00:00"},
    ]
    assert retrain_outcome(history, "2026-12-01T10:30:00.000+00:00")["event"] == "rejected"
    assert retrain_outcome(history, "2026-12-01T12:00:00.000+00:00") is None


def test_monitor_line_counts_columns_rows_and_names_the_retrain():
    summary = {
        "rows": 1234,
        "drift": {"drifted_share": 0.6667, "columns": [{}, {}, {}], "drifted_columns": ["a", "b"]},
        "decision": {"retrain": True, "blocked_by": None},
    }
    assert (
        monitor_line(summary, "crimson-wolf")
        == "drift: 2/3 columns drifted (67%) on 1,234 new rows; retrain triggered: crimson-wolf"
    )
    assert monitor_line(summary, None).endswith("retrain wanted, not triggered (--no-trigger)")
    blocked = {**summary, "decision": {"retrain": False, "blocked_by": "cooldown: last retrain at 2026-12-01"}}
    assert monitor_line(blocked, None).endswith("no retrain: cooldown: last retrain at 2026-12-01")
    assert monitor_line({"checked": False}, None).startswith("nothing new to check")


@pytest.fixture
def demo(tmp_path) -> Path:
    """A workspace in the middle of the demo: landed and quarantined batches, a registry, a log."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    landing = tmp_path / "data" / "landing"
    landing.mkdir(parents=True)
    (landing / ".gitignore").write_text("*\n!.gitignore\n")
    (landing / "year_2016.parquet").write_bytes(b"batch")
    (tmp_path / "data" / "quarantine").mkdir()
    (tmp_path / "data" / "quarantine" / "bad.csv").write_text("x")
    (tmp_path / "data" / "predictions.sqlite").write_bytes(b"log")
    promoted_chain(Registry(tmp_path / "models" / "registry"), tmp_path / "runs", 1)
    (tmp_path / "models" / "model.onnx").write_bytes(b"the pipeline's own output")
    return tmp_path


def test_reset_demo_asks_first_and_keeps_the_pipelines_outputs(demo):
    refused = evergreen("reset-demo", cwd=demo)  # no terminal to ask on: refuses without --yes
    assert refused.returncode == 1 and "confirm with --yes" in refused.stderr
    assert (demo / "models" / "registry").is_dir()

    done = evergreen("reset-demo", "--yes", cwd=demo)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (demo / "data" / "landing").iterdir()) == [".gitignore"]
    assert not (demo / "models" / "registry").exists() and not (demo / "data" / "quarantine").exists()
    assert not (demo / "data" / "predictions.sqlite").exists()
    assert (demo / "models" / "model.onnx").read_bytes() == b"the pipeline's own output"
    assert evergreen("reset-demo", "--yes", cwd=demo).stdout == "nothing to reset\n"


def test_reset_demo_never_touches_a_shared_registry(demo):
    result = evergreen("reset-demo", "--yes", cwd=demo, env={"EVERGREEN_REGISTRY": "s3://team/registry"})
    assert result.returncode == 1 and "$EVERGREEN_REGISTRY is set" in result.stderr
    assert (demo / "models" / "registry").is_dir()


def test_the_cli_module_loads_no_torch_and_nothing_imports_it():
    probe = "import sys, evergreen.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO).stdout.strip() == "False"
    assert os.environ.get("EVERGREEN_REGISTRY") is None  # the test environment never points at a shared one


@pytest.mark.slow
def test_monitor_ui_serves_the_workspace_on_loopback(tmp_path):
    import signal
    import time
    import urllib.request

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "evergreen", "monitor", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert f"http://127.0.0.1:{port}" in first and str(tmp_path / "reports" / "evidently") in first
        deadline = time.monotonic() + 60
        while True:  # the UI answers once its server is up: nothing to await but its port
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/projects", timeout=2) as response:
                    assert response.status == 200 and json.loads(response.read()) == []
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the Evidently UI did not start"
                time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
