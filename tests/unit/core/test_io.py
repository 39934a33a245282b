"""pipeline.core.io: durable writes (atomic_write, atomic_path, append_line), file_lock, write_json's bytes.

Crashes are real: a child process is killed with SIGKILL (no ``finally``, no cleanup), either at a
chosen ``os`` call or at an arbitrary moment while it rewrites a file in a loop.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import LockTimeout
from pipeline.core.io import append_line, atomic_leftovers, atomic_path, atomic_write, file_lock, write_json

REPO = Path(__file__).resolve().parents[3]


def run_child(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, capture_output=True, text=True, timeout=60, **kwargs
    )


def spawn_child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---------------------------------------------------------------- atomic_write


def test_atomic_write_takes_bytes_or_text_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "deep" / "folder" / "out.txt"
    atomic_write(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_sets_the_requested_mode(tmp_path):
    target = tmp_path / "pointer.json"
    atomic_write(target, "{}", mode=0o644)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    atomic_write(target, "{}", mode=0o444)
    assert stat.S_IMODE(target.stat().st_mode) == 0o444


def test_a_failed_write_keeps_the_old_content_and_removes_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic_write(target, "old")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert atomic_leftovers(target) == []


def test_atomic_path_removes_the_temporary_when_the_writer_fails(tmp_path):
    target = tmp_path / "table.parquet"
    with pytest.raises(ValueError, match="writer failed"):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise ValueError("writer failed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


CRASH_AT = """
import os, signal, sys
from pipeline.core.io import atomic_write
real = getattr(os, sys.argv[2])
def crash(*args, **kwargs):
    if sys.argv[2] != "open" or args[1] & os.O_DIRECTORY:  # open: only fsync_dir's, after the swap
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(os, sys.argv[2], crash)
atomic_write(sys.argv[1], "new content")
"""


@pytest.mark.parametrize(
    "os_call, survivor",
    [("fsync", "old content"), ("replace", "old content"), ("open", "new content")],
    ids=["killed-before-fsync", "killed-before-replace", "killed-after-replace"],
)
def test_sigkill_at_each_step_leaves_the_old_or_the_new_content(tmp_path, os_call, survivor):
    target = tmp_path / "state.json"
    atomic_write(target, "old content")

    result = run_child(CRASH_AT, str(target), os_call)

    assert result.returncode == -signal.SIGKILL, result.stderr
    assert target.read_text() == survivor
    if survivor == "old content":  # the killed writer's temporary stays, hidden, for the next writer to remove
        assert len(atomic_leftovers(target)) == 1


REWRITE_FOREVER = """
import sys
from pipeline.core.io import atomic_write
payloads = [bytes([65 + i]) * int(sys.argv[2]) for i in range(2)]
atomic_write(sys.argv[1], payloads[0])
print("ready", flush=True)
i = 0
while True:
    i += 1
    atomic_write(sys.argv[1], payloads[i % 2])
"""


def test_sigkill_at_an_arbitrary_moment_leaves_one_complete_version(tmp_path):
    target = tmp_path / "big.bin"
    size = 4 << 20  # a few MB: each write takes long enough for the kill to land inside one
    rng = np.random.default_rng(0)
    for delay in rng.uniform(0.05, 0.4, size=3):
        child = spawn_child(REWRITE_FOREVER, str(target), str(size))
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        content = target.read_bytes()
        assert content in (b"A" * size, b"B" * size), f"torn file: {len(content)} bytes, starts {content[:4]!r}"


# ---------------------------------------------------------------- write_json


def test_write_json_bytes_are_sorted_indented_and_newline_terminated(tmp_path):
    payload = {"b": np.float32(0.5), "a": [np.int64(1), 2], "c": {"z": None, "y": "text"}}
    write_json(tmp_path / "x.json", payload)
    expected = json.dumps({"a": [1, 2], "b": 0.5, "c": {"y": "text", "z": None}}, indent=2, sort_keys=True) + "\n"
    assert (tmp_path / "x.json").read_text() == expected


# ---------------------------------------------------------------- append_line


def test_append_line_appends_whole_lines_and_terminates_a_torn_one(tmp_path):
    log = tmp_path / "history.jsonl"
    append_line(log, '{"n": 1}')
    append_line(log, '{"n": 2}')
    with open(log, "a") as handle:
        handle.write('{"n": 3')  # a crash mid-append
    append_line(log, '{"n": 4}')
    assert log.read_text().splitlines() == ['{"n": 1}', '{"n": 2}', '{"n": 3', '{"n": 4}']


def test_append_line_fsyncs_every_line(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    append_line(tmp_path / "log.txt", "one")  # new file: the line, then its folder entry
    append_line(tmp_path / "log.txt", "two")
    assert len(synced) == 3


# ---------------------------------------------------------------- file_lock


HOLD_LOCK = """
import sys, time
from pipeline.core.io import file_lock
with file_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""

TRY_LOCK = """
import sys
from pipeline.core.errors import LockTimeout
from pipeline.core.io import file_lock
try:
    with file_lock(sys.argv[1], timeout=float(sys.argv[2])):
        print("acquired")
except LockTimeout as exc:
    print(exc)
    sys.exit(3)
"""


def test_file_lock_excludes_another_process_and_times_out_naming_the_file(tmp_path):
    lock = tmp_path / "locks" / "registry.lock"
    holder = spawn_child(HOLD_LOCK, str(lock))
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        start = time.monotonic()
        with pytest.raises(LockTimeout) as caught:
            with file_lock(lock, timeout=0.3):
                pytest.fail("acquired a lock another process holds")
        assert time.monotonic() - start >= 0.3
        message = str(caught.value)
        assert str(lock) in message and "\n" not in message
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    # The holder died without unlocking: the kernel released its lock.
    with file_lock(lock, timeout=5):
        pass


def test_a_held_lock_keeps_another_process_out_until_released(tmp_path):
    lock = tmp_path / "workspace.lock"
    with file_lock(lock):
        refused = run_child(TRY_LOCK, str(lock), "0")
    assert refused.returncode == 3 and refused.stdout.strip().startswith(f"{lock}:"), refused.stderr
    admitted = run_child(TRY_LOCK, str(lock), "0")
    assert admitted.returncode == 0 and admitted.stdout.strip() == "acquired", admitted.stderr


def test_a_table_is_read_in_chunks_or_as_a_seeded_sample_without_loading_it_whole(tmp_path):
    import numpy as np
    import pandas as pd

    from pipeline.core.io import iter_table, read_table_sample, table_rows, write_table

    frame = pd.DataFrame({"n": np.arange(10_000), "word": [f"w{i % 7}" for i in range(10_000)]})
    frame["word"] = frame["word"].astype("category")
    path = tmp_path / "t.parquet"
    write_table(path, frame)
    assert table_rows(path) == 10_000
    chunks = list(iter_table(path, rows=4096))
    assert [len(c) for c in chunks] == [4096, 4096, 1808]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), frame)  # dtypes kept (category too)

    whole, total = read_table_sample(path, 20_000, seed=1)
    assert total == 10_000 and whole.equals(frame)
    sample, total = read_table_sample(path, 1000, seed=1)
    again, _ = read_table_sample(path, 1000, seed=1)
    assert total == 10_000 and len(sample) == 1000 and sample.equals(again)  # seeded: the same rows every time
    assert sample["n"].is_monotonic_increasing and sample["n"].is_unique  # file order, no row twice
    assert sample["word"].dtype == "category"
    assert not sample.equals(read_table_sample(path, 1000, seed=2)[0])
