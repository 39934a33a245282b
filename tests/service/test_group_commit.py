"""Issue 13: the prediction log answers after commit with the flush out of the write lock. Concurrent
requests share commits; each is released only once a flush of the WAL that began after its commit has
returned; a flush that fails fails its requests and turns the log unready until one succeeds."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from serving import predlog
from serving.predlog import PredictionLog


def rows_of(request_id: str, count: int = 2) -> list[dict]:
    return [
        {
            "request_id": request_id,
            "record_index": i,
            "logged_at": "2026-12-01T00:00:00+00:00",
            "model_version": "v0001",
            "inputs": '{"age": 40.0}',
            "label": "Retired",
            "probabilities": "[0.5, 0.5]",
        }
        for i in range(count)
    ]


def committed_ids(database: Path) -> set[str]:
    """Request ids committed so far, read by another connection (as the monitor reads the log)."""
    with sqlite3.connect(database) as connection:
        return {row[0] for row in connection.execute("SELECT request_id FROM predictions")}


class Flushes:
    """Stands in for ``os.fdatasync``: notes what was committed when each flush began, and flushes for real.
    ``hold`` keeps flushes waiting until the test lets them go."""

    def __init__(self, database: Path, real) -> None:
        self.database, self.real = database, real
        self.done: list[set[str]] = []  # per returned flush: the request ids committed when it began
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        self.fail_with: OSError | None = None
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        before = committed_ids(self.database)
        self.started.set()
        self.hold.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.real(fd)
        with self._lock:
            self.done.append(before)

    def covered(self) -> set[str]:
        with self._lock:
            return set().union(*self.done)


@pytest.fixture
def log_and_flushes(tmp_path, monkeypatch):
    database = tmp_path / "log.sqlite"
    flushes = Flushes(database, predlog.os.fdatasync)
    monkeypatch.setattr(predlog.os, "fdatasync", flushes)
    log = PredictionLog(f"sqlite:///{database}")
    yield log, flushes, database
    flushes.hold.set()
    log.close()


def test_concurrent_requests_share_commits_and_each_is_answered_only_after_a_flush_that_holds_it(log_and_flushes):
    log, flushes, database = log_and_flushes
    released_before_flush: list[str] = []

    async def request(n: int) -> None:
        request_id = f"{n:032x}"
        await log.write(rows_of(request_id))
        # Answered now: a flush that began after this request's commit has returned.
        if request_id not in flushes.covered():
            released_before_flush.append(request_id)

    async def traffic() -> None:
        await asyncio.gather(*(request(n) for n in range(200)))

    asyncio.run(traffic())
    assert released_before_flush == []
    assert len(committed_ids(database)) == 200
    assert log.commits < 200  # group commit: requests shared transactions and flushes
    assert log.failing is None


def test_a_committed_request_waits_for_its_flush(log_and_flushes):
    log, flushes, database = log_and_flushes
    flushes.hold.clear()  # flushes begin, and wait

    async def scenario() -> None:
        answered = asyncio.ensure_future(log.write(rows_of("a" * 32)))
        await asyncio.to_thread(flushes.started.wait)  # committed and handed to a flush (which waits)
        assert "a" * 32 in committed_ids(database)  # in the database, readable...
        assert not answered.done()  # ...but not answered before it is on disk
        flushes.hold.set()
        await answered

    asyncio.run(scenario())
    assert "a" * 32 in flushes.covered()


def test_a_failed_flush_fails_its_requests_and_the_log_is_unready_until_one_succeeds(log_and_flushes):
    log, flushes, _ = log_and_flushes
    flushes.fail_with = OSError(5, "Input/output error")

    async def scenario() -> None:
        with pytest.raises(OSError, match="Input/output error"):
            await log.write(rows_of("b" * 32))
        assert log.failing is not None and "Input/output error" in log.failing
        flushes.fail_with = None
        await log.write(rows_of("c" * 32))  # the next flush succeeds: ready again
        assert log.failing is None

    asyncio.run(scenario())


def test_a_log_on_synchronous_normal_flushes_nothing_itself(tmp_path, monkeypatch):
    database = tmp_path / "log.sqlite"
    flushes = Flushes(database, predlog.os.fdatasync)
    monkeypatch.setattr(predlog.os, "fdatasync", flushes)
    log = PredictionLog(f"sqlite:///{database}", synchronous="NORMAL")
    try:
        asyncio.run(log.write(rows_of("d" * 32)))
    finally:
        log.close()
    assert committed_ids(database) == {"d" * 32} and flushes.done == []
