"""The prediction log on a real PostgreSQL server (and the same checks on SQLite): a versioned schema
migrated in order, unique request records, several writers losing and duplicating nothing, a monitor
watermark that never steps past a commit still in flight, and the late-label join."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from serving.predlog import (
    IDLE_IN_TRANSACTION_SECONDS,
    SCHEMA_VERSION,
    WRITE_LOCK,
    PredictionLog,
    make_engine,
    predictions,
    read_log,
)

pytestmark = pytest.mark.slow  # a database server


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request, tmp_path) -> str:
    """A new, empty log database: a SQLite file, or a database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.sqlite'}"
    return request.getfixturevalue("postgres").database("log")


@pytest.fixture
def pg_url(postgres) -> str:
    return postgres.database("log")


@pytest.fixture
def engines() -> Iterator[Callable[[str], sa.Engine]]:
    """``make_engine``, each engine disposed at the end of the test."""
    made: list[sa.Engine] = []

    def make(url: str) -> sa.Engine:
        made.append(make_engine(url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def request_rows(request_id: str, records: int, first: int = 0, version: str = "v0001") -> list[dict]:
    """The rows /predict logs for one request; each record's input ``n`` numbers it across the test."""
    return [
        {
            "request_id": request_id,
            "record_index": i,
            "logged_at": "2026-01-01T00:00:00+00:00",
            "model_version": version,
            "inputs": f'{{"n": {first + i}}}',
            "label": "a",
            "probabilities": "[1.0]",
        }
        for i in range(records)
    ]


def run_writes(log: PredictionLog, requests: list[list[dict]], concurrency: int = 16) -> None:
    """Write the requests through the log as a service would: ``concurrency`` at a time on one event loop."""

    async def main() -> None:
        slots = asyncio.Semaphore(concurrency)

        async def one(rows: list[dict]) -> None:
            async with slots:
                await log.write(rows)

        await asyncio.gather(*(one(rows) for rows in requests))

    asyncio.run(main())


def versions(engine: sa.Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.scalars(sa.text("SELECT version FROM schema_version ORDER BY version")))


def indexes(engine: sa.Engine) -> dict[str, tuple[tuple[str, ...], bool]]:
    return {
        index["name"]: (tuple(index["column_names"]), bool(index["unique"]))
        for index in sa.inspect(engine).get_indexes("predictions")
    }


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
        time.sleep(0.02)


def test_a_new_log_has_the_latest_schema_and_refuses_a_record_twice(log_url, engines):
    engine = engines(log_url)

    assert versions(engine) == list(range(1, SCHEMA_VERSION + 1)) == [1, 2]
    assert indexes(engine) == {"uq_predictions_request_record": (("request_id", "record_index"), True)}
    rows = request_rows(uuid.uuid4().hex, 2)
    with engine.begin() as connection:
        connection.execute(predictions.insert(), rows)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(predictions.insert(), rows[1:])  # the same request id and record index again
    with engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(predictions)) == 2


def test_a_log_made_before_versioning_is_upgraded_in_place_rows_kept(log_url, engines, tmp_path):
    # The log's shape before versioning: no schema_version table, a plain (non-unique) index on request_id.
    old = sa.MetaData()
    sa.Table(
        "predictions",
        old,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, index=True),
        sa.Column("record_index", sa.Integer, nullable=False),
        sa.Column("logged_at", sa.String(40), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("probabilities", sa.Text, nullable=False),
    )
    plain = sa.create_engine(log_url)
    old.create_all(plain)
    with plain.begin() as connection:
        connection.execute(old.tables["predictions"].insert(), request_rows(uuid.uuid4().hex, 3))
    plain.dispose()

    engine = engines(log_url)

    assert versions(engine) == [1, 2]
    fresh = engines(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    assert indexes(engine) == indexes(fresh)  # upgraded and new logs end with one schema
    frame, last = read_log(engine)
    assert list(frame["n"]) == [0, 1, 2] and last == 3
    assert sorted(sa.inspect(engine).get_table_names()) == sorted(sa.inspect(fresh).get_table_names())


def test_replicas_starting_together_migrate_once(log_url):
    made: list[sa.Engine] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def replica() -> None:
        start.wait()
        try:
            made.append(make_engine(log_url))
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    try:
        assert errors == []
        assert versions(made[0]) == [1, 2]  # each step applied once
    finally:
        for engine in made:
            engine.dispose()


def test_a_log_of_a_newer_schema_is_refused_by_name(pg_url, engines):
    with engines(pg_url).begin() as connection:
        connection.exec_driver_sql("INSERT INTO schema_version VALUES (7, 'from the future', 'now')")

    with pytest.raises(RuntimeError) as info:
        make_engine(pg_url)

    assert f"has schema version 7, newer than this code's {SCHEMA_VERSION}" in str(info.value)
    assert "postgresql+psycopg://postgres@127.0.0.1" in str(info.value)


def test_two_replicas_writing_one_log_lose_and_duplicate_nothing(log_url, engines):
    """Two logs (two replicas' writers, each its own group commit) write together while a monitor reads with
    its watermark: every record is in the log once, and the watermark reads each exactly once."""
    per_replica, reader_engine = 300, engines(log_url)
    replicas = [PredictionLog(log_url), PredictionLog(log_url)]
    batches = {
        k: [request_rows(uuid.uuid4().hex, 1 + i % 3, first=(k * per_replica + i) * 3) for i in range(per_replica)]
        for k in range(2)
    }
    seen: list[int] = []
    writing = True

    def monitor() -> None:
        after = 0
        while True:
            done = not writing  # read once more after the writers stop
            frame, after = read_log(reader_engine, after)
            seen.extend(frame["n"] if len(frame) else [])
            if done:
                return

    reader = threading.Thread(target=monitor)
    reader.start()
    writers = [threading.Thread(target=run_writes, args=(replicas[k], batches[k])) for k in range(2)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    writing = False
    reader.join()
    commits = [log.commits for log in replicas]
    for log in replicas:
        log.close()

    expected = sorted(row["request_id"] + f":{row['record_index']}" for k in range(2) for r in batches[k] for row in r)
    with reader_engine.connect() as connection:
        logged = sorted(
            f"{r}:{i}" for r, i in connection.execute(sa.select(predictions.c.request_id, predictions.c.record_index))
        )
    assert logged == expected  # nothing lost, nothing twice
    assert sorted(seen) == sorted(int(row["inputs"][6:-1]) for k in range(2) for r in batches[k] for row in r)
    assert all(0 < n < per_replica for n in commits)  # each replica grouped its requests into fewer commits


def test_the_watermark_never_steps_past_a_commit_still_in_flight(pg_url, engines):
    """Replica A takes ids and is slow to commit (a trigger sleeps in its transaction); replica B commits later
    rows meanwhile. A monitor reading then must not move its watermark past A's ids, or it skips them for ever."""
    engine = engines(pg_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$"
            )
        )
        connection.execute(
            sa.text(
                "CREATE TRIGGER slow AFTER INSERT ON predictions FOR EACH ROW WHEN (NEW.request_id LIKE 'slow%') "
                "EXECUTE FUNCTION slow_commit()"
            )
        )
    a, b = PredictionLog(pg_url), PredictionLog(pg_url)

    def waiting(event: str) -> bool:
        with engine.connect() as connection:
            return bool(
                connection.scalar(sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = :e"), {"e": event})
            )

    try:
        slow = threading.Thread(target=run_writes, args=(a, [request_rows("slow" + uuid.uuid4().hex[4:], 2, first=0)]))
        slow.start()
        wait_for(lambda: waiting("PgSleep"), "slow commit in flight")
        fast = threading.Thread(target=run_writes, args=(b, [request_rows(uuid.uuid4().hex, 2, first=2)]))
        fast.start()
        # B either committed (ids after A's, visible before A's) or waits its turn on the write lock.
        wait_for(lambda: not fast.is_alive() or waiting("advisory"), "second commit done or waiting")
        assert slow.is_alive()  # A's commit is still in flight while the monitor reads
        first, watermark = read_log(engine, 0)
        slow.join()
        fast.join()
        second, _ = read_log(engine, watermark)
    finally:
        a.close()
        b.close()

    read = [*(first["n"] if len(first) else []), *second["n"]]
    assert sorted(read) == [0, 1, 2, 3]  # every record read once: none skipped by the watermark


def test_a_stuck_replica_holds_the_others_up_for_the_idle_timeout_at_most(pg_url, engines):
    """A replica frozen inside its commit (here a session holding the write lock, a row inserted, then silent)
    is ended by PostgreSQL after IDLE_IN_TRANSACTION_SECONDS; the other replica's commit then goes through."""
    stuck = engines(pg_url).connect()
    stuck.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
    stuck.execute(predictions.insert(), request_rows(uuid.uuid4().hex, 1, first=0))
    log = PredictionLog(pg_url)
    started = time.monotonic()
    try:
        run_writes(log, [request_rows(uuid.uuid4().hex, 1, first=1)])
        waited = time.monotonic() - started
    finally:
        log.close()

    assert IDLE_IN_TRANSACTION_SECONDS - 1 < waited < IDLE_IN_TRANSACTION_SECONDS + 10
    with pytest.raises(sa.exc.DBAPIError, match="idle-in-transaction timeout"):  # ended, its uncommitted row gone
        stuck.exec_driver_sql("SELECT 1")
    stuck.invalidate()
    stuck.close()
    frame, _ = read_log(engines(pg_url))
    assert list(frame["n"]) == [1]


def test_late_labels_join_the_log_from_either_replica(log_url, engines):
    """Labels posted through both replicas, the same ones twice at once (an upsert), join their records."""
    one, two = PredictionLog(log_url), PredictionLog(log_url)
    request_ids = [uuid.uuid4().hex for _ in range(4)]
    try:
        run_writes(one, [request_rows(r, 2, first=2 * k) for k, r in enumerate(request_ids)])
        labels = [{"request_id": r, "index": 1, "label": f"true-{k}"} for k, r in enumerate(request_ids[:3])]
        posters = [threading.Thread(target=log.add_labels, args=(labels, "2026-01-02")) for log in (one, two, one, two)]
        for thread in posters:
            thread.start()
        for thread in posters:
            thread.join()
        assert two.scored(request_ids[:2]) == {request_ids[0]: ("v0001", 2), request_ids[1]: ("v0001", 2)}
        frame, last = read_log(engines(log_url), 0, target="y")
    finally:
        one.close()
        two.close()

    assert last == 8
    assert list(frame["n"]) == list(range(8))
    assert list(frame["y"]) == [None, "true-0", None, "true-1", None, "true-2", None, None]


def test_a_postgresql_url_without_a_driver_opens_the_log_with_psycopg(pg_url, engines):
    """``postgresql://`` as libpq and most tools write it: SQLAlchemy alone would look for psycopg2."""
    bare = "postgresql://" + pg_url.split("://", 1)[1]
    log = PredictionLog(bare)
    try:
        assert log.engine.dialect.driver == "psycopg"
    finally:
        log.close()
