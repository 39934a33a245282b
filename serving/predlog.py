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
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.kinds.base import LOGGED_LABEL

log = logging.getLogger(__name__)

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("record_index", sa.Integer, nullable=False),
    sa.Column("logged_at", sa.String(40), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON of the model's input fields only
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON list in the order of the model's classes
)
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

PROBE_SECONDS = 1.0  # how often a failing log retries a commit when no request does

INSERT_COLUMNS = ("request_id", "record_index", "logged_at", "model_version", "inputs", "label", "probabilities")


def make_engine(url: str, synchronous: str = "FULL") -> sa.Engine:
    """An engine; SQLite gets WAL, a busy timeout (readers never block the writer) and
    ``synchronous``: FULL fsyncs every commit (survives power loss), NORMAL survives a crash of
    the process (SIGKILL included) but may lose the last commits on power loss."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class PredictionLog:
    """Durable, group-committed log of scored records."""

    def __init__(self, url: str, synchronous: str = "FULL"):
        self.url = url
        self.engine = make_engine(url, synchronous)
        self._queue: list[_Pending] = []
        self._wake = threading.Condition()
        self._stopping = False
        marker = "%s" if self.engine.dialect.paramstyle in ("format", "pyformat") else "?"
        self._insert_sql = (
            f"INSERT INTO predictions ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join([marker] * len(INSERT_COLUMNS))})"
        )
        self.commits = 0
        self.failing: str | None = None  # why the last commit failed; None once one succeeds
        self._writer = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._writer.start()

    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows and wait until the transaction holding them has committed."""
        loop = asyncio.get_running_loop()
        pending = _Pending(rows, loop.create_future(), loop)
        with self._wake:
            if self._stopping:
                raise RuntimeError("prediction log is closed")
            self._queue.append(pending)
            self._wake.notify()
        await pending.future

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    if not self._wake.wait(timeout=PROBE_SECONDS if self.failing else None):
                        break  # a failing log with no traffic: probe below
                if not self._queue and self._stopping:
                    return
                batch, self._queue = self._queue, []
            if not batch:
                self._probe()
                continue
            try:
                with self.engine.begin() as connection:
                    # Driver-level executemany: the Core insert's per-row overhead holds the GIL the
                    # request handlers need (it showed as a p99 tail under load).
                    connection.exec_driver_sql(
                        self._insert_sql, [tuple(row[c] for c in INSERT_COLUMNS) for item in batch for row in item.rows]
                    )
                self._committed()
                outcome: BaseException | None = None
            except Exception as exc:  # every waiter must learn the commit failed, whatever the cause
                self._failed(exc)
                outcome = exc
            for item in batch:
                item.loop.call_soon_threadsafe(_settle, item.future, outcome)

    def _probe(self) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(heartbeat.delete())
                connection.execute(heartbeat.insert(), {"id": 1, "at": time.time()})
        except Exception as exc:  # the database is still failing: keep saying why
            self._failed(exc)
        else:
            self._committed()

    def _committed(self) -> None:
        self.commits += 1
        if self.failing is not None:
            reason, self.failing = self.failing, None  # ready again before the line says so
            log.warning("prediction log commits succeed again (after: %s)", reason)

    def _failed(self, exc: Exception) -> None:
        reason = commit_error(exc)
        if reason != self.failing:  # one line per new reason, not one per retry
            log.error("prediction log commit failed: %s", reason)
        self.failing = reason

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._writer.join(timeout=30)
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
        dialect = self.engine.dialect.name
        with self.engine.begin() as connection:
            if dialect in ("sqlite", "postgresql"):
                insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(labels)
                connection.execute(
                    insert.on_conflict_do_update(
                        index_elements=[labels.c.request_id, labels.c.record_index],
                        set_={"label": insert.excluded.label, "received_at": insert.excluded.received_at},
                    ),
                    rows,
                )
            else:
                for row in rows:
                    key = (labels.c.request_id == row["request_id"]) & (labels.c.record_index == row["record_index"])
                    connection.execute(labels.delete().where(key))
                connection.execute(labels.insert(), rows)
        return len(items)


def commit_error(exc: BaseException) -> str:
    """The database's own one-line reason ("database or disk is full"), without SQLAlchemy's statement,
    parameters (the logged inputs) and help link."""
    original = getattr(exc, "orig", None)
    reason = str(original if original is not None else exc) or type(exc).__name__
    return " ".join(reason.split())


def _settle(future: asyncio.Future, outcome: BaseException | None) -> None:
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


def read_log(engine: sa.Engine, after_id: int = 0, target: str | None = None) -> tuple[pd.DataFrame, int]:
    """Logged inputs with id > ``after_id`` as a frame (labels joined into ``target`` when given), and the last id."""
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
