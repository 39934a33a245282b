"""Issue 9's cases for processes and state: telemetry off in every process, the monitor's state file,
the gate's champion (verified, of the same lineage, and a first model held to the trained baseline),
the registry's history reconciled with its versions, and the retrain's child processes and DVC's lock."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.states import Failed

from flows.common import MonitorState, clear_stale_dvc_locks, dvc, run_in_group, update_state
from flows.retrain import DvcLockBusy, _lock_contention, champion, stage_failure
from pipeline.core.io import write_json
from pipeline.lifecycle.gate import comparable, decide, trained_baseline
from pipeline.lifecycle.registry import Registry, RegistryError
from pipeline.onnxio.card import parse_card
from pipeline.params import GateParams
from tests.conftest import REPO
from tests.unit.onnxio.fixtures import old_card_data


def bare_env(tmp_path: Path) -> dict[str, str]:
    """What a user's shell might hold: no telemetry switches at all."""
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / ".prefect")}


# ---------------------------------------------------------------- telemetry


def test_the_flows_run_with_telemetry_off_from_a_bare_environment(tmp_path):
    code = (
        "import os, flows.retrain, flows.monitor\n"
        "from prefect.settings import get_current_settings\n"
        "print(get_current_settings().server.analytics_enabled)\n"
        "print(' '.join(os.environ[k] for k in ('DO_NOT_TRACK', 'ORT_DISABLE_TELEMETRY', 'DVC_NO_ANALYTICS')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=bare_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["False", "1 1 1"]


# ---------------------------------------------------------------- the monitor's state file


def test_a_truncated_monitor_state_is_moved_aside_and_the_state_starts_fresh(tmp_path, caplog):
    path = tmp_path / "monitor_state.json"
    MonitorState(checked_batches=["a" * 64], last_check_at="2026-01-01T00:00:00+00:00").save(path)
    path.write_bytes(path.read_bytes()[:25])  # a crash or a full disk under a non-atomic writer

    with caplog.at_level(logging.WARNING, logger="flows.common"):
        state = update_state(path, last_retrain_at="2026-02-01T00:00:00+00:00")

    assert state == MonitorState(last_retrain_at="2026-02-01T00:00:00+00:00")
    (aside,) = tmp_path.glob("monitor_state.json.damaged-*")
    assert aside.read_bytes().startswith(b'{\n  "checked_batches"')
    assert f"{path} is damaged" in caplog.text and aside.name in caplog.text
    assert MonitorState.load(path) == state  # the fresh state was written, whole


def test_a_monitor_state_of_the_wrong_shape_is_moved_aside_too(tmp_path):
    path = tmp_path / "monitor_state.json"
    write_json(path, {"checked_batches": "not-a-list"})
    assert MonitorState.load(path) == MonitorState()
    assert not path.exists() and len(list(tmp_path.glob("monitor_state.json.damaged-*"))) == 1


# ---------------------------------------------------------------- the gate's champion


def register_card(registry: Registry, tmp_path: Path, card: dict, tag: str):
    """A version whose model card is ``card``; the other files are small stand-ins (only hashed here)."""
    folder = tmp_path / "runs" / tag
    folder.mkdir(parents=True)
    files = {
        "onnx": "model.onnx",
        "model_card": "model_card.json",
        "metrics": "metrics.json",
        "params": "params.yaml",
        "dvc_lock": "dvc.lock",
        "reference": "reference.parquet",
    }
    sources = {argument: folder / name for argument, name in files.items()}
    for argument, path in sources.items():
        path.write_text(json.dumps(card) if argument == "model_card" else f"{argument}-{tag}")
    sources["metrics"].write_text(json.dumps(card["metrics"]))
    return registry.register(**sources, git_revision=f"rev-{tag}")


def test_a_corrupted_champion_stops_the_gate_with_one_line_naming_the_file(tmp_path):
    registry = Registry(tmp_path / "registry")
    card = old_card_data("tabular")
    version = register_card(registry, tmp_path, card, "champion")
    registry.promote(version.number, reason="first")
    write_json(tmp_path / "challenger_card.json", card)
    os.chmod(version.path, 0o755)
    os.chmod(version.onnx, 0o644)
    version.onnx.write_bytes(b"bit rot")  # scored as it was, this model lost to any challenger

    with pytest.raises(RegistryError) as raised:
        champion(registry, tmp_path / "challenger_card.json")
    message = str(raised.value)
    assert "\n" not in message
    assert "the production model is corrupt" in message and str(version.onnx) in message


def test_a_champion_of_another_target_and_schema_is_not_scored_but_starts_a_new_lineage(tmp_path):
    registry = Registry(tmp_path / "registry")
    old = old_card_data("tabular")
    version = register_card(registry, tmp_path, old, "gss")
    registry.promote(version.number, reason="first")
    # The user switched params.yaml to their own data: another target and other columns.
    new = old_card_data("tabular")
    new["target"] = "churned"
    new["inputs"] = [{**new["inputs"][0], "name": "tenure_months"}, *new["inputs"][1:]]
    write_json(tmp_path / "challenger_card.json", new)

    production, why = champion(registry, tmp_path / "challenger_card.json")

    assert production == version
    assert why == "champion v0001 not comparable: the champion's target is 'wrkstat', the challenger's 'churned'"
    new["target"] = "wrkstat"
    why = comparable(parse_card(new, "card"), parse_card(old, "card"))
    assert why == (
        "the champion's input schema differs (inputs only the champion takes: ['realrinc']; "
        "only the challenger: ['tenure_months'])"
    )
    # Retrained on the same data, with a new category seen: the same lineage.
    new = old_card_data("tabular")
    new["inputs"][-1]["known_values"] = [*new["inputs"][-1]["known_values"], "a new category"]
    assert comparable(parse_card(new, "card"), parse_card(old, "card")) is None


def test_a_diverged_first_model_that_edges_past_the_majority_class_is_rejected_with_the_numbers():
    # evaluate's metrics of a `train.lr: 1e6` run: the network predicts (almost) one class.
    metrics = {
        "model": {"accuracy": 0.4712},
        "baseline_majority": {"accuracy": 0.4650},
        "baseline_hgb": {"accuracy": 0.6790},
    }
    cfg = GateParams(metric="accuracy", tolerance=0.005)
    trained = trained_baseline(metrics, "accuracy")
    assert trained == ("baseline_hgb", 0.6790)

    decision = decide(0.4712, None, 0.4650, True, cfg, trained)

    assert not decision.promote
    assert decision.reason == (
        "first model: accuracy 0.4712 < the hgb baseline 0.6790 - tolerance 0.005 "
        "(training went wrong? check train.lr and the loss curve)"
    )
    assert decide(0.6760, None, 0.4650, True, cfg, trained).promote  # within the tolerance of HGB


# ---------------------------------------------------------------- the registry's history


def test_a_version_published_without_its_history_line_is_reconciled_on_open(tmp_path):
    registry = Registry(tmp_path / "registry")
    register_card(registry, tmp_path, old_card_data("tabular"), "a")
    version = register_card(registry, tmp_path, old_card_data("tabular"), "b")
    # The on-disk state of a crash between the version's rename and its history line.
    lines = registry.history_file.read_text().splitlines(keepends=True)
    registry.history_file.write_text("".join(lines[:-1]))

    reopened = Registry(registry.root)
    events = reopened.history()
    assert [(e["event"], e["version"], e.get("reconciled")) for e in events] == [
        ("register", "v0001", None),
        ("register", "v0002", True),
    ]
    assert events[-1]["onnx_sha256"] == version.onnx_sha256 and events[-1]["time"] == version.meta["created"]
    assert Registry(registry.root).history() == events  # idempotent


# ---------------------------------------------------------------- the retrain's processes and DVC's lock

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")

# A stage's command: starts a grandchild (as dvc starts `python -m pipeline.stages.train`), reports both pids.
STAGE = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1] + ".tmp", "w") as handle:
    handle.write(f"{os.getpid()} {grandchild.pid}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""
# The flow's process: runs the stage through run_in_group, as run_stage runs `dvc repro`.
FLOW = """
import os, sys
from pathlib import Path
from flows.common import run_in_group
run_in_group([sys.executable, "-c", sys.argv[1], sys.argv[2]], Path.cwd(), dict(os.environ))
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap a killed orphan)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {seconds:g}s")
        time.sleep(0.05)


@linux_only
def test_a_sigkilled_flow_takes_its_dvc_process_and_their_children_down(tmp_path):
    pids_file = tmp_path / "pids"
    flow = subprocess.Popen([sys.executable, "-c", FLOW, STAGE, str(pids_file)], cwd=REPO, env=dict(os.environ))
    try:
        wait_for(pids_file.exists, 60, "the stage's pids")
        stage, grandchild = map(int, pids_file.read_text().split())
        assert running(stage) and running(grandchild)

        flow.kill()  # what an OOM kill, `kill -9` or a lost worker does: no finally runs
        flow.wait()

        wait_for(lambda: not running(stage) and not running(grandchild), 30, "the stage and its child ending")
    finally:
        flow.kill()
        flow.wait()


@linux_only
def test_a_timed_out_command_ends_with_its_whole_group(tmp_path):
    pids_file = tmp_path / "pids"
    command = [sys.executable, "-c", STAGE + "\n", str(pids_file)]
    with pytest.raises(subprocess.TimeoutExpired):
        run_in_group(command, tmp_path, dict(os.environ), timeout=6)
    stage, grandchild = map(int, pids_file.read_text().split())
    wait_for(lambda: not running(stage) and not running(grandchild), 30, "the stage and its child ending")


@linux_only
def test_a_command_that_leaves_a_background_child_returns_and_the_child_is_ended(tmp_path):
    """A straggler holding the output pipes open must neither hang the call nor outlive it."""
    pid_file = tmp_path / "straggler"
    script = f"sleep 600 & echo $! > {pid_file}; echo started"
    result = run_in_group(["sh", "-c", script], tmp_path, dict(os.environ), timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "started"
    straggler = int(pid_file.read_text())
    wait_for(lambda: not running(straggler), 30, "the backgrounded child ending")


def dvc_workspace(root: Path) -> Path:
    """A DVC project with one stage whose output ``out.txt`` a lock entry can claim."""
    root.mkdir()
    assert dvc(root, "init", "--no-scm", "-q").returncode == 0
    (root / "dvc.yaml").write_text("stages:\n  s:\n    cmd: echo hi > out.txt\n    outs:\n      - out.txt\n")
    return root


def claim(root: Path, pid: int) -> None:
    """An entry of DVC's rwlock as `dvc repro` writes it while it runs the stage."""
    owner = {"pid": pid, "cmd": "/venv/lib/python3.11/site-packages/dvc/__main__.py repro"}
    out = str(root / "out.txt")
    (root / ".dvc/tmp").mkdir(exist_ok=True)
    (root / ".dvc/tmp/rwlock").write_text(json.dumps({"write": {out: owner}, "read": {out: [owner]}}))


def test_a_dvc_lock_left_by_a_killed_run_is_reported_and_cleared(tmp_path, caplog):
    root = dvc_workspace(tmp_path / "ws")
    # The killed run's pid now belongs to another program (pids are reused): DVC would see it alive, "busy".
    other = subprocess.Popen(["sleep", "600"])
    try:
        claim(root, other.pid)
        with caplog.at_level(logging.WARNING, logger="flows.common"):
            cleared = clear_stale_dvc_locks(root)
        assert len(cleared) == 2 and f"pid {other.pid}" in caplog.text and "stale DVC lock" in caplog.text
        assert json.loads((root / ".dvc/tmp/rwlock").read_text()) == {"write": {}, "read": {}}
        result = dvc(root, "repro", "--single-item", "s")
        assert result.returncode == 0, result.stderr
    finally:
        other.kill()
        other.wait()


def test_a_dvc_lock_held_by_a_live_dvc_process_is_kept_and_counts_as_contention(tmp_path):
    root = dvc_workspace(tmp_path / "ws")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "dvc", "repro"])
    try:
        claim(root, holder.pid)
        assert clear_stale_dvc_locks(root) == []
        result = dvc(root, "repro", "--single-item", "s")
        assert result.returncode != 0
        error = stage_failure("s", result.stdout + result.stderr)
        assert isinstance(error, DvcLockBusy) and "is busy" in str(error)
        assert _lock_contention(None, None, Failed(data=error))  # run_stage retries it
        assert not _lock_contention(None, None, Failed(data=stage_failure("s", "ERROR: failed to reproduce 's'")))
    finally:
        holder.kill()
        holder.wait()


def test_a_registry_whose_history_cannot_be_read_still_opens(tmp_path, caplog):
    """Opening a registry (the service does at start) never fails on a damaged history: reads say why later."""
    root = tmp_path / "registry"
    (root / "versions" / "v0001").mkdir(parents=True)
    (root / "history.jsonl").mkdir()  # not a file: reading it is an OSError
    with caplog.at_level(logging.WARNING):
        Registry(root)
    assert "history not reconciled with the versions" in caplog.text
