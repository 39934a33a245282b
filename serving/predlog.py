"""The prediction log: every scored record, committed before its response is sent.

SQLite in WAL mode by default (``synchronous=FULL``: a commit survives a crash of the process or
the machine), any SQLAlchemy URL by setting. Concurrent requests share commits: a single writer
thread takes everything queued since its last commit and writes it in one transaction (group
commit), then releases every waiting request. A request is answered only after its records are
in a committed transaction, so killing the server loses no acknowledged record.

Labels that arrive later are stored by (request id, record index) and joined when the monitor
reads the log; storing the same label again changes nothing (an upsert, safe under concurrent posts).

While commits fail (a full disk, a lost database), ``failing`` holds the reason and the writer
probes the database every ``PROBE_SECONDS`` with a one-row write, so the service turns ready again on
its own once a commit succeeds, with or without traffic.

PostgreSQL (``postgresql+psycopg://user@host/db``) holds one log for several service replicas.
Each replica group-commits as above; a request id is unique (a unique index on request id and
record index: a record can be in the log once only), and the commits of all replicas take turns
on a transaction-level advisory lock (``WRITE_LOCK``), as SQLite's write lock makes them take turns
on one file. Without it two replicas could commit out of id order (one takes ids 100-110, the other
111-120 and commits first), and a monitor reading ``id > watermark`` in between would step past
100-110 for ever; with it ids are assigned in commit order, and ``read_log``'s watermark is exact.
A replica stuck inside a commit (frozen, its host lost) holds that lock until PostgreSQL ends its
session, after ``IDLE_IN_TRANSACTION_SECONDS`` idle in the transaction; the others wait no longer.

The schema is versioned: a ``schema_version`` table records each step of ``MIGRATIONS`` applied,
and every engine made here applies the missing ones in order before first use, inside one
transaction under a lock (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so
replicas starting together migrate once. A log made before versioning (its tables, no
``schema_version``) is upgraded in place, rows kept. Why not Alembic: the log is three tables the
service and the monitor create themselves on start, on SQLite files made per test and per
workspace as well as on a shared server; Alembic would add a migrations folder, an ``env.py`` and
a command to run before each service starts, for what two short steps below do. Each step checks
what exists before it changes anything, so a new log and an upgraded one end with the same schema.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.core.dburl import with_driver
from pipeline.kinds.base import LOGGED_LABEL

log = logging.getLogger(__name__)

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("record_index", sa.Integer, nullable=False),
    sa.Column("logged_at", sa.String(40), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON of the model's input fields only
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON list in the order of the model's classes
)
# A record is logged once: the same (request id, record index) twice is refused by the database. It also
# serves the lookups by request id (its leading column), which a plain index on request_id served before.
unique_records = sa.Index("uq_predictions_request_record", predictions.c.request_id, predictions.c.record_index, unique=True)
labels = sa.Table(
    "labels",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("record_index", sa.Integer, primary_key=True),
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("received_at", sa.String(40), nullable=False),
)

# One row, rewritten by the probe commit while commits fail: a real write, as small as one can be.
heartbeat = sa.Table(
    "log_heartbeat",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
)

# Applied migrations, one row each: the schema's version is the largest.
schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.String(40), nullable=False),
)

PROBE_SECONDS = 1.0  # how often a failing log retries a commit when no request does
# Writer threads of a FULL SQLite log, so flushes of its WAL in flight at once (see ``PredictionLog``). A disk
# takes several flushes together in about the time of one (benchmark machine: 4 at once, 0.45 ms each, 3.4 ms alone).
WRITER_THREADS = 4
SQLITE_BUSY_SECONDS = 30  # how long a SQLite connection waits for another's write lock
# PostgreSQL advisory lock keys (one 64-bit key space per database): the replicas' commits, and migrations.
WRITE_LOCK = 0x65766C6F67_0001
SCHEMA_LOCK = 0x65766C6F67_0002
# A session idle inside a transaction this long is ended by PostgreSQL, releasing its locks: a stuck
# replica holds up the others' commits this long at most. A commit is never idle: insert, then commit.
IDLE_IN_TRANSACTION_SECONDS = 5

INSERT_COLUMNS = ("request_id", "record_index", "logged_at", "model_version", "inputs", "label", "probabilities")


def make_engine(url: str, synchronous: str = "FULL") -> sa.Engine:
    """An engine; SQLite gets WAL, a busy timeout (readers never block the writer) and
    ``synchronous``: FULL fsyncs every commit (survives power loss), NORMAL survives a crash of
    the process (SIGKILL included) but may lose the last commits on power loss."""
    url = with_driver(url, "psycopg")  # postgresql:// as libpq writes it
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            _wal(cursor)
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
        if engine.dialect.name == "postgresql":

            @sa.event.listens_for(engine, "connect")
            def _session(connection, _record) -> None:
                autocommit, connection.autocommit = connection.autocommit, True  # a SET outside any transaction
                cursor = connection.cursor()
                cursor.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_SECONDS}s'")
                cursor.close()
                connection.autocommit = autocommit

    migrate(engine)
    return engine


def _wal(cursor: sqlite3.Cursor) -> None:
    """WAL mode. A new file switches to it only while no other connection writes, and SQLite answers
    "database is locked" at once rather than wait (two services, or a service and a monitor, opening a new
    log together): wait here as the busy timeout would. Once in WAL (it persists in the file) it takes no lock."""
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _create_tables(connection: sa.Connection) -> None:
    """Version 1: the log's tables (a log made before versioning has them already)."""
    metadata.create_all(connection, tables=[predictions, labels, heartbeat], checkfirst=True)


def _unique_request_records(connection: sa.Connection) -> None:
    """Version 2: (request id, record index) unique; the plain request_id index it replaces dropped."""
    existing = {index["name"] for index in sa.inspect(connection).get_indexes("predictions")}
    if unique_records.name not in existing:
        unique_records.create(connection)
    if "ix_predictions_request_id" in existing:  # plain DDL: an sa.Index made here would join the table's own
        connection.exec_driver_sql("DROP INDEX ix_predictions_request_id")


# (version, what it does, the step), applied in order; a new step is appended, never edited.
MIGRATIONS: tuple[tuple[int, str, Callable[[sa.Connection], None]], ...] = (
    (1, "prediction log tables", _create_tables),
    (2, "request id and record index unique", _unique_request_records),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def current_version(connection: sa.Connection) -> int:
    """The schema version of the log (0: none recorded, a new log or one made before versioning)."""
    if not sa.inspect(connection).has_table(schema_version.name):
        return 0
    return connection.scalar(sa.select(sa.func.max(schema_version.c.version))) or 0


def migrate(engine: sa.Engine) -> int:
    """Bring the log's schema to ``SCHEMA_VERSION``, applying the missing steps in order; the version."""
    with engine.connect() as connection:
        if current_version(connection) == SCHEMA_VERSION:  # the usual start: one read, no lock
            return SCHEMA_VERSION
    dialect = engine.dialect.name
    with engine.connect() as connection:
        # One migrator at a time, the version read again under the lock: a replica that waited finds it done.
        if dialect == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # DDL inside the transaction, the write lock held
        elif dialect == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK)))
        version = current_version(connection)
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"prediction log {engine.url.render_as_string(hide_password=True)} has schema version {version}, newer "
                f"than this code's {SCHEMA_VERSION}: run a newer Evergreen against it"
            )
        schema_version.create(connection, checkfirst=True)
        for number, description, step in MIGRATIONS[version:]:
            try:
                step(connection)
            except sa.exc.DBAPIError as exc:
                raise RuntimeError(
                    f"prediction log {engine.url.render_as_string(hide_password=True)}: migration {number} "
                    f"({description}) failed: {commit_error(exc)}"
                ) from exc
            connection.execute(
                schema_version.insert(),
                {"version": number, "description": description, "applied_at": datetime.now(UTC).isoformat()},
            )
            log.info("prediction log schema: version %d (%s)", number, description)
        connection.commit()
    return SCHEMA_VERSION


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class PredictionLog:
    """Durable, group-committed log of scored records.

    A SQLite file log with ``synchronous=FULL`` (the default) commits as FULL would, with the flush moved out
    of the write lock. FULL fsyncs the WAL file inside each commit, holding the write lock through the flush,
    so one flush at a time: a closed loop of clients then falls into step, all of them waiting on the same
    flush while the CPUs idle (on the benchmark machine an idle flush takes ~4 ms, a busy one ~0.3 ms). Here
    ``WRITER_THREADS`` writer threads take turns to commit, with ``synchronous=NORMAL`` (the frames written
    to the WAL file, not flushed), each then flushes the WAL file (``fdatasync``) outside the turn and only
    then releases its batch. A released record is therefore on disk exactly as under FULL, whose commit is
    that same flush of the same file; the next batches commit while flushes are in flight. Under NORMAL
    SQLite still flushes the WAL before each checkpoint and the database file after it, so a record flushed
    here stays durable when the WAL is checkpointed and restarted. ``synchronous=NORMAL`` in the settings
    keeps its meaning (no flush per commit), and it and PostgreSQL commit from one writer thread as before.
    """

    def __init__(self, url: str, synchronous: str = "FULL"):
        self.url = url
        self.engine = make_engine(url, synchronous)
        self._queue: list[_Pending] = []
        self._gathered: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}  # per event loop, this turn's writes
        self._wake = threading.Condition()
        self._stopping = False
        marker = "%s" if self.engine.dialect.paramstyle in ("format", "pyformat") else "?"
        self._insert_sql = (
            f"INSERT INTO predictions ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join([marker] * len(INSERT_COLUMNS))})"
        )
        self._values = operator.itemgetter(*INSERT_COLUMNS)  # a row dict -> its insert tuple, in C
        self._serialised = self.engine.dialect.name == "postgresql"
        self._file = sqlite_file(self.engine)
        self._flush_wal = self._file is not None and synchronous == "FULL"
        # The writer's own connection (SQLite): a checkout per batch cost as much again as the insert.
        self._pooled: Any = None
        self._connection: sqlite3.Connection | None = None
        self._wal_mode = False  # the writer's connection is in WAL mode (not on a filesystem without shared memory)
        self._wal_fd: int | None = None  # the WAL file the writer threads flush; opened after the first commit
        self._wal_fds: list[int] = []  # every one opened, closed only by close() (a writer may be flushing one)
        self._turn = threading.Lock()  # one writer thread at a time inserts and commits
        self._state = threading.Lock()  # ``commits`` and ``failing``: every writer thread updates them
        self.commits = 0
        self.failing: str | None = None  # why the last commit failed; None once one succeeds
        self._writers = [
            threading.Thread(target=self._run, args=(i == 0,), name=f"prediction-log-writer-{i}", daemon=True)
            for i in range(WRITER_THREADS if self._flush_wal else 1)
        ]
        for thread in self._writers:
            thread.start()

    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows and wait until the transaction holding them has committed (and, on a FULL SQLite log,
        been flushed to disk).

        The rows wait for the end of the event loop's turn: every request scored in that turn goes to the
        writer together, in one hand-over and one transaction (handed one by one, each woke the writer,
        which committed and flushed it alone: per request, more CPU than scoring it)."""
        if self._stopping:
            raise RuntimeError("prediction log is closed")
        loop = asyncio.get_running_loop()
        pending = _Pending(rows, loop.create_future(), loop)
        gathered = self._gathered.get(loop)
        if gathered is None:
            gathered = self._gathered[loop] = []
            loop.call_soon(self._hand_over, loop)  # runs once the requests ready in this turn have run
        gathered.append(pending)
        await pending.future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """The rows written in the loop's last turn, to the writer thread."""
        batch = self._gathered.pop(loop)
        with self._wake:
            if not self._stopping:
                self._queue.extend(batch)
                self._wake.notify()
                return
        _settle([item.future for item in batch], RuntimeError("prediction log is closed"))

    def _run(self, probes: bool) -> None:
        """A writer thread: take everything queued, commit it, flush the WAL (FULL SQLite), release it.
        While commits fail, the ``probes`` thread alone retries one every ``PROBE_SECONDS`` without traffic."""
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    if not self._wake.wait(timeout=PROBE_SECONDS if self.failing and probes else None) and probes:
                        break  # a failing log with no traffic: probe below
                if not self._queue and self._stopping:
                    return
                batch, self._queue = self._queue, []
            if not batch:
                self._probe()
                continue
            try:
                with self._turn:
                    wal = self._insert(batch)
                if wal is not None:  # committed, not yet on disk: answered once flushed (see the class docstring)
                    os.fdatasync(wal)
            except Exception as exc:  # every waiter must learn the commit failed, whatever the cause
                self._failed(exc)
                _release(batch, exc)
                continue
            self._committed()
            _release(batch, None)

    def _insert(self, batch: list[_Pending]) -> int | None:
        """Insert and commit the batch's rows in one transaction; the WAL file to flush before answering, if any."""
        # Driver-level executemany: the Core insert's per-row overhead holds the GIL the request handlers
        # need (it showed as a p99 tail under load).
        values = [self._values(row) for item in batch for row in item.rows]
        if self._file is None:
            with self.engine.begin() as connection:
                if self._serialised:  # replicas commit in turn: ids in commit order (see the module's docstring)
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
                connection.exec_driver_sql(self._insert_sql, values)
            return None
        writer = self._writer_connection()
        try:
            writer.executemany(self._insert_sql, values)
            writer.commit()
        except Exception:
            self._rollback()
            raise
        if self._flush_wal and self._wal_fd is None and self._wal_mode:
            # After a commit the WAL file exists, and stays while this connection is open.
            self._wal_fd = os.open(f"{self._file}-wal", os.O_RDONLY)
            self._wal_fds.append(self._wal_fd)
        return self._wal_fd

    def _writer_connection(self) -> sqlite3.Connection:
        """The writer's SQLite connection (the engine's pragmas applied), opened on first use or after a failure."""
        if self._connection is None:
            self._pooled = self.engine.raw_connection()
            connection = self._pooled.driver_connection
            self._wal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
            if self._flush_wal and self._wal_mode:  # the writer threads flush each commit (see the class docstring)
                connection.execute("PRAGMA synchronous=NORMAL")
            self._connection = connection
        return self._connection

    def _rollback(self) -> None:
        """End a failed transaction; a connection that cannot even roll back is closed (a new one next batch)."""
        assert self._connection is not None
        try:
            self._connection.rollback()
        except Exception:
            self._drop_connection()

    def _drop_connection(self) -> None:
        if self._pooled is not None:
            self._pooled.invalidate()  # closed, not returned to the pool with synchronous=NORMAL
        self._pooled = self._connection = self._wal_fd = None

    def _probe(self) -> None:
        try:
            with self.engine.begin() as connection:
                # An upsert: two replicas probing together must not collide on the row (a false failure).
                _upsert(connection, heartbeat, [{"id": 1, "at": time.time()}], keys=("id",))
        except Exception as exc:  # the database is still failing: keep saying why
            self._failed(exc)
        else:
            self._committed()

    def _committed(self) -> None:
        with self._state:
            self.commits += 1
            reason, self.failing = self.failing, None  # ready again before the line says so
        if reason is not None:
            log.warning("prediction log commits succeed again (after: %s)", reason)

    def _failed(self, exc: Exception) -> None:
        reason = commit_error(exc)
        with self._state:
            new, self.failing = reason != self.failing, reason
        if new:  # one line per new reason, not one per retry
            log.error("prediction log commit failed: %s", reason)
            with self._wake:  # the probing writer thread may be waiting without a deadline: it now has one
                self._wake.notify_all()

    def close(self) -> None:
        with self._wake:  # the writer threads commit what is queued, then stop
            self._stopping = True
            self._wake.notify_all()
        for thread in self._writers:
            thread.join(timeout=30)
        if self._connection is not None:
            self._drop_connection()
        for fd in self._wal_fds:
            os.close(fd)
        self.engine.dispose()

    def scored(self, request_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """For each of these request ids that is in the log: (model version, number of records scored)."""
        query = (
            sa.select(predictions.c.request_id, sa.func.min(predictions.c.model_version), sa.func.count())
            .where(predictions.c.request_id.in_(sorted(set(request_ids))))
            .group_by(predictions.c.request_id)
        )
        with self.engine.connect() as connection:
            return {request_id: (version, count) for request_id, version, count in connection.execute(query)}

    def add_labels(self, items: list[dict[str, Any]], received_at: str) -> int:
        """Store late labels (request id, record index, label); a repeated one replaces the earlier.

        An upsert where the dialect has one: two concurrent posts of the same label both succeed
        (a delete-then-insert could collide on the key between them)."""
        rows = [
            {"request_id": i["request_id"], "record_index": i["index"], "label": i["label"], "received_at": received_at}
            for i in items
        ]
        with self.engine.begin() as connection:
            _upsert(connection, labels, rows, keys=("request_id", "record_index"))
        return len(items)


def _upsert(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """Insert ``rows``, replacing the rows with the same ``keys``: the dialect's upsert where it has one
    (concurrent upserts of one key all succeed; a delete-then-insert could collide on the key between them)."""
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
        replaced = {column: insert.excluded[column] for column in rows[0] if column not in keys}
        connection.execute(insert.on_conflict_do_update(index_elements=list(keys), set_=replaced), rows)
        return
    for row in rows:
        connection.execute(table.delete().where(sa.and_(*(table.c[key] == row[key] for key in keys))))
    connection.execute(table.insert(), rows)


def commit_error(exc: BaseException) -> str:
    """The database's own one-line reason ("database or disk is full"), without SQLAlchemy's statement,
    parameters (the logged inputs) and help link."""
    original = getattr(exc, "orig", None)
    reason = str(original if original is not None else exc) or type(exc).__name__
    return " ".join(reason.split())


def _release(batch: list[_Pending], outcome: BaseException | None) -> None:
    """Wake the batch's waiters with the outcome: one call into each event loop, not one per request."""
    futures: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
    for item in batch:
        futures.setdefault(item.loop, []).append(item.future)
    for loop, waiting in futures.items():
        try:
            loop.call_soon_threadsafe(_settle, waiting, outcome)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            continue


def _settle(futures: list[asyncio.Future], outcome: BaseException | None) -> None:
    for future in futures:
        if future.done():  # its request was cancelled (the client left)
            continue
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(outcome)


def sqlite_file(engine: sa.Engine) -> str | None:
    """The absolute path of a SQLite log's database file; None for another database or an in-memory one."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def read_log(engine: sa.Engine, after_id: int = 0, target: str | None = None) -> tuple[pd.DataFrame, int]:
    """Logged inputs with id > ``after_id`` as a frame (labels joined into ``target`` when given), and the last id.

    The last id is a watermark for the next read: ids are assigned in commit order (one writer at a time on
    SQLite, the replicas' write lock on PostgreSQL), so no row with a smaller id can commit after this read."""
    query = (
        sa.select(predictions.c.id, predictions.c.inputs, predictions.c.label, labels.c.label.label("true_label"))
        .select_from(
            predictions.outerjoin(
                labels,
                (labels.c.request_id == predictions.c.request_id) & (labels.c.record_index == predictions.c.record_index),
            )
        )
        .where(predictions.c.id > after_id)
        .order_by(predictions.c.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    if not rows:
        return pd.DataFrame(), after_id
    frame = pd.DataFrame([json.loads(r.inputs) for r in rows])
    frame[LOGGED_LABEL] = [r.label for r in rows]  # the class the service answered: a drift frame's prediction
    if target is not None:
        frame[target] = [r.true_label for r in rows]
    return frame, rows[-1].id
