"""pipeline.lifecycle.registry: immutable versions, atomic production switches, history, rollback, crash safety.

Everything runs on real files under ``tmp_path``. Crashes are real too: a child process replaces one
``os`` call with ``os._exit`` so no ``finally`` or cleanup code runs, exactly like a power cut at
that instant (short of losing the page cache, which the fsyncs are there for).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.io import file_sha256
from pipeline.lifecycle.registry import VERSION_FILES, ModelVersion, ProductionChanged, Registry, RegistryError, parse_version

REPO = Path(__file__).resolve().parents[3]
CRASH_CODE = 77
SOURCE_NAMES = {
    "onnx": "model.onnx",
    "model_card": "model_card.json",
    "metrics": "metrics.json",
    "params": "params.yaml",
    "dvc_lock": "dvc.lock",
    "reference": "reference.parquet",
}


def make_sources(directory: Path, tag: str) -> dict[str, Path]:
    """Small stand-ins for a pipeline run's outputs; ``tag`` makes each run's bytes distinct."""
    directory.mkdir(parents=True, exist_ok=True)
    contents = {
        "onnx": f"onnx-graph-{tag}",
        "model_card": json.dumps({"model": tag, "classes": ["a", "b"]}),
        "metrics": json.dumps({"accuracy": 0.8, "tag": tag}),
        "params": f"seed: 42  # {tag}\n",
        "dvc_lock": f"schema: '2.0'  # {tag}\n",
        "reference": f"training-rows-{tag}",
    }
    paths = {}
    for argument, text in contents.items():
        paths[argument] = directory / SOURCE_NAMES[argument]
        paths[argument].write_text(text)
    return paths


def register(registry: Registry, tmp_path: Path, tag: str) -> ModelVersion:
    sources = make_sources(tmp_path / "runs" / tag, tag)
    return registry.register(**sources, git_revision=f"rev-{tag}", extra={"rows": 100, "tag": tag})


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def promoted_chain(registry: Registry, tmp_path: Path, count: int) -> list[ModelVersion]:
    versions = [register(registry, tmp_path, f"m{i}") for i in range(1, count + 1)]
    for version in versions:
        registry.promote(version.number, reason=f"promote {version.name}")
    return versions


def switches(registry: Registry) -> list[tuple[str, str, str | None]]:
    return [(e["event"], e["version"], e["previous"]) for e in registry.history() if e["event"] in ("promote", "rollback")]


def crash_child(root: Path, os_call: str, action: str, argument: str) -> None:
    """Run one registry action in a child whose ``os.<os_call>`` kills the process on the spot."""
    code = f"""
import json, os, sys
from pathlib import Path
from pipeline.lifecycle.registry import Registry
registry = Registry(sys.argv[1])
setattr(os, {os_call!r}, lambda *args, **kwargs: os._exit({CRASH_CODE}))
if {action!r} == "promote":
    registry.promote(sys.argv[2], reason="crashing")
else:
    registry.register(**{{k: Path(v) for k, v in json.loads(sys.argv[2]).items()}}, git_revision="crash")
"""
    result = subprocess.run([sys.executable, "-c", code, str(root), argument], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == CRASH_CODE, result.stderr


# ---------------------------------------------------------------- register, verify, get


def test_register_writes_numbered_read_only_versions_with_hashes(registry, tmp_path):
    first = register(registry, tmp_path, "a")
    second = register(registry, tmp_path, "b")

    assert (first.name, second.name) == ("v0001", "v0002")
    assert [v.number for v in registry.versions()] == [1, 2]
    sources = make_sources(tmp_path / "check", "b")
    for name in VERSION_FILES:
        path = second.path / name
        assert path.read_bytes() == sources[next(k for k, v in SOURCE_NAMES.items() if v == name)].read_bytes()
        assert second.meta["sha256"][name] == file_sha256(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert stat.S_IMODE(second.path.stat().st_mode) == 0o555
    assert stat.S_IMODE((second.path / "meta.json").stat().st_mode) == 0o444
    meta = json.loads((second.path / "meta.json").read_text())
    assert meta["version"] == "v0002" and meta["number"] == 2
    assert meta["data_sha256"] == file_sha256(second.reference)
    assert meta["git_revision"] == "rev-b"
    assert meta["extra"] == {"rows": 100, "tag": "b"}
    assert meta["created"].endswith("+00:00")
    assert second.metrics()["tag"] == "b" and second.card_data()["model"] == "b"
    assert second.onnx.name == "model.onnx" and second.metrics_file.name == "metrics.json"
    first.verify()
    second.verify()
    assert [e["event"] for e in registry.history()] == ["register", "register"]


def test_verify_names_the_changed_or_missing_file(registry, tmp_path):
    version = register(registry, tmp_path, "a")
    os.chmod(version.metrics_file, 0o644)
    version.metrics_file.write_text('{"accuracy": 0.99}')
    with pytest.raises(RegistryError, match=r"v0001: metrics\.json changed after registration"):
        version.verify()

    os.chmod(version.path, 0o755)
    version.reference.unlink()
    version.metrics_file.write_text(json.dumps({"accuracy": 0.8, "tag": "a"}))  # metrics restored
    with pytest.raises(RegistryError, match=r"v0001: reference\.parquet is missing"):
        version.verify()


def test_register_rejects_missing_or_invalid_inputs_before_taking_a_number(registry, tmp_path):
    sources = make_sources(tmp_path / "run", "a")
    with pytest.raises(RegistryError, match=r"register: onnx file .*nowhere\.onnx not found"):
        registry.register(**{**sources, "onnx": tmp_path / "nowhere.onnx"})
    sources["metrics"].write_text("{not json")
    with pytest.raises(RegistryError, match=r"register: metrics file .*metrics\.json is not valid JSON"):
        registry.register(**sources)
    assert registry.versions() == []
    assert register(registry, tmp_path, "b").name == "v0001"


def test_get_accepts_every_spelling_and_names_an_unknown_version(registry, tmp_path):
    register(registry, tmp_path, "a")
    second = register(registry, tmp_path, "b")
    for spec in (2, "2", "v2", "v0002", "V2", " v02 "):
        assert registry.get(spec) == second
    with pytest.raises(RegistryError, match=r"model version v0099 is not in the registry .*v0001 to v0002"):
        registry.get("v99")
    with pytest.raises(RegistryError, match=r"'latest' is not a model version"):
        registry.get("latest")
    with pytest.raises(RegistryError, match=r"versions start at v0001"):
        parse_version(0)


def test_find_by_onnx_sha256(registry, tmp_path):
    first = register(registry, tmp_path, "a")
    register(registry, tmp_path, "b")
    assert registry.find_by_onnx_sha256(file_sha256(first.onnx)) == first
    assert registry.find_by_onnx_sha256("0" * 64) is None


# ---------------------------------------------------------------- promote, record


def test_promote_switches_production_and_records_it(registry, tmp_path):
    assert registry.production() is None
    first, second = register(registry, tmp_path, "a"), register(registry, tmp_path, "b")

    registry.promote(1, reason="first model")
    assert registry.production() == first
    registry.promote("v2", reason="better", decision={"challenger": 0.9, "champion": 0.8})
    assert registry.production() == second

    pointer = json.loads(registry.pointer_file.read_text())
    assert (pointer["version"], pointer["reason"], pointer["earlier"]) == ("v0002", "better", ["v0001"])
    assert switches(registry) == [("promote", "v0001", None), ("promote", "v0002", "v0001")]
    last = registry.history()[-1]
    assert last["decision"] == {"challenger": 0.9, "champion": 0.8} and last["time"].endswith("+00:00")

    registry.promote(2, reason="retry of the same promotion")  # idempotent: a retried task changes nothing
    assert len(switches(registry)) == 2


def test_promote_refuses_a_tampered_version(registry, tmp_path):
    first, second = register(registry, tmp_path, "a"), register(registry, tmp_path, "b")
    registry.promote(1, reason="first")
    os.chmod(second.onnx, 0o644)
    second.onnx.write_bytes(b"corrupted")
    with pytest.raises(RegistryError, match=r"v0002: model\.onnx changed"):
        registry.promote(2, reason="would serve a corrupted model")
    assert registry.production() == first


def test_record_logs_rejections_but_not_switches(registry, tmp_path):
    register(registry, tmp_path, "a")
    registry.record({"event": "rejected", "version": "v0001", "champion": None, "reason": "below baseline"})
    event = registry.history()[-1]
    assert event["event"] == "rejected" and event["reason"] == "below baseline" and "time" in event
    with pytest.raises(RegistryError, match=r"'promote' events move production; call Registry\.promote\(\)"):
        registry.record({"event": "promote", "version": "v0001"})
    with pytest.raises(RegistryError, match="string 'event' key"):
        registry.record({"version": "v0001"})


def test_production_names_a_missing_pointer_target(registry, tmp_path):
    register(registry, tmp_path, "a")
    registry.promote(1, reason="first")
    (registry.versions_dir / "v0001").rename(registry.versions_dir / "gone")
    with pytest.raises(RegistryError, match=r"production\.json points at .*v0001 is not in the registry"):
        registry.production()


# ---------------------------------------------------------------- rollback


def test_repeated_rollbacks_walk_back_through_production_history(registry, tmp_path):
    v1, v2, v3 = promoted_chain(registry, tmp_path, 3)

    assert registry.rollback(reason="v3 misbehaves") == v2
    assert registry.production() == v2
    assert registry.rollback() == v1
    assert registry.production() == v1
    with pytest.raises(RegistryError, match=r"v0001 is the first production version; there is no earlier one"):
        registry.rollback()
    assert registry.production() == v1

    assert switches(registry)[-2:] == [("rollback", "v0002", "v0003"), ("rollback", "v0001", "v0002")]
    assert registry.history()[-2]["reason"] == "v3 misbehaves"


def test_rollback_after_a_new_promotion_returns_to_the_version_it_replaced(registry, tmp_path):
    v1, v2, v3 = promoted_chain(registry, tmp_path, 3)
    registry.rollback()  # v2
    v4 = register(registry, tmp_path, "m4")
    registry.promote(v4.number, reason="fixed model")
    assert registry.rollback() == v2
    assert registry.rollback() == v1


def test_a_promotion_decided_against_another_champion_is_refused_and_changes_nothing(registry, tmp_path):
    """Two retrains that gated against the same champion: the first switches, the second finds production
    moved under the registry's lock (a compare-and-swap) and leaves it where the first put it."""
    v1, v2, v3 = (register(registry, tmp_path, tag) for tag in ("a", "b", "c"))
    registry.promote(v1.number, reason="first", expected_current=None)
    registry.promote(v2.number, reason="gated against v1", expected_current="v0001")
    with pytest.raises(ProductionChanged, match="production is v0002, not v0001"):
        registry.promote(v3.number, reason="also gated against v1", expected_current="v0001")
    assert registry.production().name == "v0002" and switches(registry)[-1][1] == "v0002"
    with pytest.raises(ProductionChanged, match="production is v0002, not none"):
        registry.promote(v3.number, reason="gated as a first model", expected_current=None)


def test_rollback_to_a_named_version(registry, tmp_path):
    v1, v2, v3 = promoted_chain(registry, tmp_path, 3)
    assert registry.rollback(to="v1", reason="back to the known-good one") == v1
    with pytest.raises(RegistryError, match="no earlier one"):
        registry.rollback()  # v2 and v3 were rolled back past, so nothing lies below v1

    v4 = register(registry, tmp_path, "m4")  # never production: rolling "back" to it pushes like a promotion
    assert registry.rollback(to=v4.number) == v4
    assert registry.rollback() == v1
    with pytest.raises(RegistryError, match="v0001 is already production"):
        registry.rollback(to=1)
    with pytest.raises(RegistryError, match="model version v0042 is not in the registry"):
        registry.rollback(to=42)


def test_rollback_with_nothing_in_production(registry, tmp_path):
    register(registry, tmp_path, "a")
    with pytest.raises(RegistryError, match="nothing is in production yet"):
        registry.rollback()
    registry.promote(1, reason="first")
    with pytest.raises(RegistryError, match="no earlier one"):
        registry.rollback()


def test_rollback_to_repairs_a_damaged_pointer(registry, tmp_path):
    v1, v2 = promoted_chain(registry, tmp_path, 2)
    registry.pointer_file.write_text('{"version": "v00')
    with pytest.raises(RegistryError, match=r"production\.json: not valid JSON.*rollback --to VERSION"):
        registry.production()
    assert registry.rollback(to=1, reason="repair") == v1
    assert registry.production() == v1


# ---------------------------------------------------------------- crash safety


def test_crash_before_the_pointer_swap_keeps_the_old_production(registry, tmp_path):
    v1, v2 = register(registry, tmp_path, "a"), register(registry, tmp_path, "b")
    registry.promote(1, reason="first")

    crash_child(registry.root, "replace", "promote", "2")

    stray = list(registry.root.glob(".production.json.*.tmp"))
    assert len(stray) == 1, "the crash should have left its temporary pointer behind"
    assert registry.production() == v1
    assert switches(registry) == [("promote", "v0001", None)]

    assert registry.promote(2, reason="after the crash") == v2  # the registry keeps working
    assert registry.production() == v2
    assert not stray[0].exists()
    assert registry.rollback() == v1


def test_failed_pointer_swap_in_process_leaves_no_temp_file(registry, tmp_path, monkeypatch):
    v1, _ = register(registry, tmp_path, "a"), register(registry, tmp_path, "b")
    registry.promote(1, reason="first")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", disk_full)
        with pytest.raises(OSError, match="No space left"):
            registry.promote(2, reason="fails")
    assert registry.production() == v1
    assert list(registry.root.glob(".production.json.*.tmp")) == []
    assert registry.promote(2, reason="disk freed").name == "v0002"


def test_crash_mid_register_leaves_an_invisible_folder_whose_number_is_retired(registry, tmp_path):
    register(registry, tmp_path, "a")
    sources = make_sources(tmp_path / "runs" / "crash", "crash")

    crash_child(registry.root, "rename", "register", json.dumps({k: str(v) for k, v in sources.items()}))

    leftovers = [p.name for p in registry.versions_dir.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-v0002-")
    assert [v.name for v in registry.versions()] == ["v0001"]
    with pytest.raises(RegistryError, match="v0002 is not in the registry"):
        registry.get(2)

    third = register(registry, tmp_path, "b")
    assert third.name == "v0003", "v0002 was handed to the crashed writer and must not be reused"
    assert not any(p.name.startswith(".tmp-") for p in registry.versions_dir.iterdir())
    assert register(registry, tmp_path, "c").name == "v0004"  # still retired after its folder is gone
    third.verify()


def test_failed_register_cleans_up_and_retires_its_number(registry, tmp_path, monkeypatch):
    register(registry, tmp_path, "a")
    real_copy = shutil.copyfile

    def copy_until_reference(source, target, *args, **kwargs):
        if Path(target).name == "reference.parquet":
            raise OSError(28, "No space left on device")
        return real_copy(source, target, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfile", copy_until_reference)
        with pytest.raises(OSError, match="No space left"):
            register(registry, tmp_path, "b")
    assert [p.name for p in registry.versions_dir.iterdir()] == ["v0001"]
    assert register(registry, tmp_path, "c").name == "v0003"


def test_crash_between_pointer_swap_and_history_append_is_logged_on_the_next_write(registry, tmp_path):
    v1, v2 = promoted_chain(registry, tmp_path, 2)
    # The on-disk state of a crash right after os.replace: pointer at v2, the log without that line.
    lines = registry.history_file.read_text().splitlines(keepends=True)
    registry.history_file.write_text("".join(lines[:-1]))
    assert switches(registry) == [("promote", "v0001", None)]
    assert registry.production() == v2

    registry.record({"event": "rejected", "version": "v0001", "reason": "re-check"})

    events = registry.history()
    tail = [(e["event"], e["version"], e.get("recovered")) for e in events[-2:]]
    assert tail == [("promote", "v0002", True), ("rejected", "v0001", None)]
    assert registry.rollback() == v1


def test_torn_last_history_line_is_skipped_and_the_next_event_starts_a_new_line(registry, tmp_path, caplog):
    promoted_chain(registry, tmp_path, 1)
    before = registry.history()
    with open(registry.history_file, "a") as handle:
        handle.write('{"event": "promote", "version": "v00')  # a crash mid-append

    with caplog.at_level(logging.WARNING, logger="pipeline.lifecycle.registry"):
        assert registry.history() == before
    assert "torn by a crash mid-append" in caplog.text

    registry.record({"event": "rejected", "version": "v0001", "reason": "after the tear"})
    events = registry.history()
    assert events[:-1] == before and events[-1]["reason"] == "after the tear"


def test_a_damaged_history_fails_loudly(registry, tmp_path):
    promoted_chain(registry, tmp_path, 1)
    with open(registry.history_file, "a") as handle:
        handle.write("garbage\n" * 6)
    with pytest.raises(RegistryError, match=r"history\.jsonl: 6 unreadable lines"):
        registry.history()
    # Writes still work: production and rollback depend on the pointer, never on the log.
    assert registry.promote(register(registry, tmp_path, "b").number, reason="still possible").name == "v0002"
    assert registry.rollback().name == "v0001"


# ---------------------------------------------------------------- concurrency


def _register_in_child(root: str, source_dirs: list[str], start) -> None:
    """Wait for the start signal so both processes hit the lock at the same moment."""
    start.wait(30)
    registry = Registry(root)
    for directory in source_dirs:
        registry.register(**{k: Path(directory) / v for k, v in SOURCE_NAMES.items()}, git_revision="race")


PER_PROCESS = 8  # enough overlap that a missing lock shows up as a collision


def test_two_processes_registering_at_once_get_distinct_complete_versions(registry, tmp_path):
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    plans = []
    for worker in ("p", "q"):
        dirs = [tmp_path / "runs" / f"{worker}{i}" for i in range(PER_PROCESS)]
        for directory in dirs:
            make_sources(directory, directory.name)
        plans.append([str(d) for d in dirs])
    processes = [context.Process(target=_register_in_child, args=(str(registry.root), plan, start)) for plan in plans]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0]

    versions = registry.versions()
    assert [v.number for v in versions] == list(range(1, 2 * PER_PROCESS + 1))
    for version in versions:
        version.verify()
    tags = sorted(v.metrics()["tag"] for v in versions)
    assert tags == sorted(f"{w}{i}" for w in "pq" for i in range(PER_PROCESS))
    assert sorted(e["version"] for e in registry.history()) == [v.name for v in versions]


def test_a_writer_stuck_holding_the_lock_makes_others_fail_with_one_line_naming_it(registry, tmp_path):
    version = register(registry, tmp_path, "a")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pipeline.core.io import file_lock\n"
            "with file_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)",
            str(registry.root / ".lock"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RegistryError) as caught:
            Registry(registry.root, lock_timeout=0.2).promote(version.number, reason="blocked")
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    assert str(caught.value) == (
        f"{registry.root / '.lock'}: another process has held the registry lock for 0.2s; check for a stuck register/promote"
    )
    assert registry.production() is None
    assert registry.promote(version.number, reason="holder gone") == version


# ---------------------------------------------------------------- command line


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.lifecycle.registry", "--root", str(root), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


def test_cli_list_show_history_rollback(registry, tmp_path):
    promoted_chain(registry, tmp_path, 2)
    registry.record({"event": "rejected", "version": "v0001", "reason": "worse than v0002"})

    listing = cli(registry.root, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:2] == ["VERSION", "CREATED"] and lines[-1] == "* production"
    assert [line.split()[1] for line in lines[1:-1] if line.startswith("*")] == ["v0002"]
    assert [line.split()[0] for line in lines[1:-1] if not line.startswith("*")] == ["v0001"]

    shown = cli(registry.root, "show")
    assert shown.returncode == 0 and shown.stdout.startswith("v0002 (production)")
    assert json.loads(shown.stdout.split("\n", 1)[1])["metrics"]["tag"] == "m2"

    history = cli(registry.root, "history")
    assert history.returncode == 0
    header, *rows = history.stdout.splitlines()
    assert header.split()[:4] == ["TIME", "(UTC)", "DECISION", "VERSION"]
    assert [line.split()[2] for line in rows] == ["register", "register", "promote", "promote", "rejected"]
    assert rows[3].rstrip().endswith("promote v0002 (was v0001)") and rows[4].rstrip().endswith("worse than v0002")
    assert json.loads(cli(registry.root, "--json", "history").stdout)[-1]["reason"] == "worse than v0002"

    rolled = cli(registry.root, "rollback", "--reason", "pager alert")
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.strip() == "production: v0001 (was v0002)"
    assert registry.production().name == "v0001"
    assert registry.history()[-1]["reason"] == "pager alert"


def test_cli_history_shows_the_gate_verdict_and_diff_what_changed(registry, tmp_path):
    first, second = promoted_chain(registry, tmp_path, 2)
    verdict = {
        "trigger": "drift",
        "champion_version": "v0001",
        "decision": {
            "promote": False,
            "reason": "challenger 0.61 < champion 0.65 - 0.005",
            "metric": "accuracy",
            "challenger": 0.6123456,
            "champion": 0.65,
            "baseline": 0.4,
        },
    }
    registry.record({"event": "rejected", "version": "v0002", "decision": verdict})
    row = cli(registry.root, "history").stdout.splitlines()[-1]
    assert "rejected" in row and "accuracy 0.6123 vs v0001's 0.65" in row and "drift: challenger 0.61 < champion" in row

    diff = cli(registry.root, "diff", "v1", "v2")
    assert diff.returncode == 0, diff.stderr
    lines = {line.split()[0]: line.split()[1:] for line in diff.stdout.splitlines()[1:]}
    assert lines["metrics.tag"] == ["m1", "m2"] and lines["git_revision"] == ["rev-m1", "rev-m2"]
    assert "metrics.accuracy" not in lines  # the same in both
    data = json.loads(cli(registry.root, "--json", "diff", "v0001").stdout)  # against production
    assert data["b"] == "v0002" and data["changed"]["metrics.tag"] == ["m1", "m2"]
    assert cli(registry.root, "diff", "v1", "v1").stdout == "v0001 and v0001 are identical\n"


def test_cli_unknown_version_is_one_line_and_exit_1(registry, tmp_path):
    register(registry, tmp_path, "a")
    result = cli(registry.root, "show", "v99")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model version v0099 is not in the registry" in lines[0]


def test_optional_int8_model_is_stored_hashed_and_served_when_chosen(tmp_path):
    sources = tmp_path / "src"
    sources.mkdir()
    files = {}
    for name, text in (
        ("onnx", "fp32"),
        ("model_card", "{}"),
        ("metrics", "{}"),
        ("params", "a: 1"),
        ("dvc_lock", "x"),
        ("reference", "r"),
    ):
        (sources / name).write_text(text)
        files[name] = sources / name
    (sources / "int8").write_text("int8")
    registry = Registry(tmp_path / "registry")
    plain = registry.register(**files)
    assert plain.onnx_int8 is None and plain.serving_onnx == plain.onnx
    chosen = registry.register(**files, onnx_int8=sources / "int8", extra={"serve": "int8"})
    assert chosen.onnx_int8.read_text() == "int8" and chosen.serving_onnx == chosen.onnx_int8
    chosen.verify()
    kept = registry.register(**files, onnx_int8=sources / "int8", extra={"serve": "fp32"})
    assert kept.serving_onnx == kept.onnx


def test_a_reference_of_another_format_keeps_its_suffix(registry, tmp_path):
    sources = make_sources(tmp_path / "images", "npz")
    sources["reference"] = sources["reference"].rename(sources["reference"].with_name("train.npz"))
    version = registry.register(**sources, git_revision="rev")
    assert version.reference.name == "reference.npz" and not (version.path / "reference.parquet").exists()
    assert version.meta["data_sha256"] == file_sha256(version.reference)
    version.verify()
