"""pipeline.lifecycle.registry.objectstore: the registry on an object store, against a real S3 server.

The S3 server is moto in server mode (tests/s3.py), the stand-in for AWS S3; ``memory://`` runs the same
behaviour tests in process. Writers racing are real threads and processes; crashes are SIGKILLs of a
writer process at a random instant.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import fsspec
import pytest

from pipeline.lifecycle.registry import ObjectRegistry, ProductionChanged, RegistryError, open_registry
from pipeline.lifecycle.registry.objectstore import CLAIMS_DIR, POINTERS_DIR, VERSIONS_DIR
from tests.unit.lifecycle.test_registry import SOURCE_NAMES, make_sources, register

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["memory", "s3"])
def store_url(request) -> str:
    if request.param == "memory":
        return f"memory://registry-{uuid.uuid4().hex[:8]}"
    return request.getfixturevalue("s3").bucket() + "/models"


@pytest.fixture
def store(store_url, tmp_path) -> ObjectRegistry:
    return ObjectRegistry(store_url, cache_dir=tmp_path / "cache")


def other_host(store: ObjectRegistry, tmp_path: Path, name: str = "other") -> ObjectRegistry:
    """The same store seen from another machine: nothing shared but the store (its own cache)."""
    return ObjectRegistry(store.root, cache_dir=tmp_path / f"cache-{name}")


def test_open_registry_picks_the_store_by_location(tmp_path):
    assert type(open_registry(f"memory://r-{uuid.uuid4().hex[:6]}")).__name__ == "ObjectRegistry"
    assert type(open_registry(tmp_path / "r")).__name__ == "Registry"
    assert type(open_registry(f"file://{tmp_path}/r")).__name__ == "Registry"
    assert open_registry("registry", base=tmp_path).root == tmp_path / "registry"


def test_a_store_without_atomic_create_is_refused_in_one_line():
    with pytest.raises(RegistryError, match=r"http:// gives no atomic create-if-absent") as caught:
        ObjectRegistry("http://127.0.0.1:9/registry")
    assert "\n" not in str(caught.value)


def test_register_promote_rollback_and_history_as_the_folder_registry(store, tmp_path):
    first = register(store, tmp_path, "a")
    second = register(store, tmp_path, "b")
    assert (first.name, second.name) == ("v0001", "v0002")
    second.verify()
    sources = make_sources(tmp_path / "check", "b")
    for argument, name in SOURCE_NAMES.items():
        assert (second.path / name).read_bytes() == sources[argument].read_bytes()
    assert store.production() is None and store.pointer_token() is None

    store.promote(1, reason="first")
    token = store.pointer_token()
    store.promote("v2", reason="better", decision={"accuracy": 0.9}, expected_current="v0001")
    assert store.production().name == "v0002" and store.pointer_token() != token
    store.record({"event": "rejected", "version": "v0002", "reason": "worse"})
    assert store.rollback(reason="bad in production").name == "v0001"
    with pytest.raises(RegistryError, match="first production version"):
        store.rollback()
    assert store.rollback(to="v2", reason="fixed").name == "v0002"

    history = store.history()
    assert [(e["event"], e["version"]) for e in history] == [
        ("register", "v0001"),
        ("register", "v0002"),
        ("promote", "v0001"),
        ("promote", "v0002"),
        ("rejected", "v0002"),
        ("rollback", "v0001"),
        ("rollback", "v0002"),
    ]
    assert history[3]["decision"] == {"accuracy": 0.9} and history[3]["previous"] == "v0001"
    assert store.find_by_onnx_sha256(first.onnx_sha256).name == "v0001"
    assert [v.name for v in store.versions()] == ["v0001", "v0002"]


def test_another_host_sees_every_write_and_fetches_the_files_into_its_own_cache(store, tmp_path):
    version = register(store, tmp_path, "a")
    store.promote(version.number, reason="first")
    elsewhere = other_host(store, tmp_path)
    served = elsewhere.production()
    assert served.name == "v0001" and served.path.is_relative_to(tmp_path / "cache-other")
    served.verify()
    assert served.onnx.read_bytes() == version.onnx.read_bytes()
    register(elsewhere, tmp_path, "b")
    elsewhere.promote(2, reason="from the other host", expected_current="v0001")
    assert store.production().name == "v0002"  # no stale listing: the first host sees it at once


def test_a_tampered_cached_file_fails_verification(store, tmp_path):
    version = register(store, tmp_path, "a")
    fetched = other_host(store, tmp_path).get(1)
    fetched.metrics_file.write_text('{"accuracy": 1.0}')
    with pytest.raises(RegistryError, match=r"v0001: metrics\.json changed after registration"):
        fetched.verify()
    version.verify()  # the store itself is intact


def test_a_version_without_meta_json_is_invisible_and_its_number_stays_retired(store, tmp_path):
    fs, base = fsspec.core.url_to_fs(store.root)
    # What a writer killed after claiming v0001 and uploading some files leaves behind.
    fs.pipe_file(f"{base}/{CLAIMS_DIR}/v0001", b"{}")
    fs.pipe_file(f"{base}/{VERSIONS_DIR}/v0001/model.onnx", b"half")
    assert store.versions() == [] and store.history() == []
    with pytest.raises(RegistryError, match=r"v0001 is not in the registry .* \(it is empty\)"):
        store.get(1)
    assert register(store, tmp_path, "a").name == "v0002"


def test_a_damaged_pointer_object_is_named_and_rollback_to_replaces_it(store, tmp_path):
    register(store, tmp_path, "a")
    store.promote(1, reason="first")
    fs, base = fsspec.core.url_to_fs(store.root)
    fs.pipe_file(f"{base}/{POINTERS_DIR}/0000000002.json", b"{not json")
    with pytest.raises(RegistryError, match=r"production/0000000002\.json: not valid JSON .* rollback --to"):
        store.production()
    assert store.rollback(to=1, reason="repair").name == "v0001"
    assert store.production().name == "v0001"


def test_two_writers_gated_against_the_same_champion_cannot_both_switch(store, tmp_path):
    for tag in ("a", "b", "c"):
        register(store, tmp_path, tag)
    store.promote(1, reason="first")
    hosts = [other_host(store, tmp_path, f"w{i}") for i in (2, 3)]
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def promote(host: ObjectRegistry, number: int) -> None:
        barrier.wait()
        try:
            host.promote(number, reason=f"challenger {number}", expected_current="v0001")
            outcomes[number] = "promoted"
        except ProductionChanged:
            outcomes[number] = "changed"

    threads = [threading.Thread(target=promote, args=(host, n)) for host, n in zip(hosts, (2, 3), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["changed", "promoted"]
    winner = next(n for n, outcome in outcomes.items() if outcome == "promoted")
    assert store.production().number == winner
    assert [e["version"] for e in store.history() if e["event"] == "promote"] == ["v0001", f"v{winner:04d}"]


def test_concurrent_writers_get_distinct_version_numbers(store, tmp_path):
    hosts = [other_host(store, tmp_path, f"w{i}") for i in range(4)]
    names: list[str] = []
    lock = threading.Lock()

    def write(host: ObjectRegistry, index: int) -> None:
        for round_ in range(3):
            version = register(host, tmp_path / f"w{index}", f"w{index}-{round_}")
            with lock:
                names.append(version.name)

    threads = [threading.Thread(target=write, args=(host, i)) for i, host in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(names) == [f"v{n:04d}" for n in range(1, 13)]
    assert [v.name for v in store.versions()] == sorted(names)


WRITER = """
import itertools, json, sys
from pathlib import Path
from pipeline.lifecycle.registry import ObjectRegistry
store = ObjectRegistry(sys.argv[1], cache_dir=sys.argv[2])
sources = {k: Path(v) for k, v in json.loads(sys.argv[3]).items()}
print("ready", flush=True)
for i in itertools.count():
    version = store.register(**sources, git_revision=f"crash-{i}", extra={"i": i})
    store.promote(version.number, reason=f"loop {i}")
    if i % 3 == 2:
        store.rollback(reason="loop rollback")
"""


@pytest.mark.slow
def test_a_writer_killed_at_any_instant_leaves_the_old_or_the_new_production(s3, tmp_path):
    """SIGKILL a process that registers, promotes and rolls back in a loop, at random instants: after each
    kill production is a complete, verified version, every switch in the history names one, and the
    next writer carries on (numbers never reused)."""
    url = s3.bucket() + "/models"
    sources = make_sources(tmp_path / "sources", "crash")
    store = ObjectRegistry(url, cache_dir=tmp_path / "reader")
    register(store, tmp_path, "base")
    store.promote(1, reason="base")
    rng = random.Random(7)
    for round_ in range(6):
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                url,
                str(tmp_path / f"writer-{round_}"),
                json.dumps({k: str(v) for k, v in sources.items()}),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert writer.stdout.readline().strip() == "ready"
        try:
            writer.wait(timeout=rng.uniform(0.3, 2.5))
        except subprocess.TimeoutExpired:
            os.killpg(writer.pid, signal.SIGKILL)
        writer.wait()
        assert writer.returncode == -signal.SIGKILL, f"the writer stopped by itself ({writer.returncode})"

        production = store.production()
        production.verify()
        published = {v.name for v in store.versions()}
        assert production.name in published
        assert all(e["version"] in published for e in store.history() if e["event"] in ("promote", "rollback"))
    numbers = [v.number for v in store.versions()]
    after = register(store, tmp_path, "after")
    assert after.number > max(numbers)
    store.promote(after.number, reason="after the crashes")
    assert store.production().name == after.name
