"""The prediction log: every scored record, committed before its response is sent.

SQLite in WAL mode by default (``synchronous=FULL``: a commit survives a crash of the process or
the machine), any SQLAlchemy URL by setting. Concurrent requests share commits: a single writer
thread takes everything queued since its last commit and writes it in one transaction (group
commit), then releases every waiting request. A request is answered only after its records are
in a committed transaction, so killing the server loses no acknowledged record.

Labels that arrive later are stored by (request id, record index) and joined when the monitor
reads the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

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
        self._writer = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._writer.start()
        self.commits = 0

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
                    self._wake.wait()
                if not self._queue and self._stopping:
                    return
                batch, self._queue = self._queue, []
            try:
                with self.engine.begin() as connection:
                    # Driver-level executemany: the Core insert's per-row overhead holds the GIL the
                    # request handlers need (it showed as a p99 tail under load).
                    connection.exec_driver_sql(
                        self._insert_sql, [tuple(row[c] for c in INSERT_COLUMNS) for item in batch for row in item.rows]
                    )
                self.commits += 1
                outcome: BaseException | None = None
            except Exception as exc:  # every waiter must learn the commit failed, whatever the cause
                log.error("prediction log commit failed: %s", exc)
                outcome = exc
            for item in batch:
                item.loop.call_soon_threadsafe(_settle, item.future, outcome)

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._writer.join(timeout=30)
        self.engine.dispose()

    def add_labels(self, items: list[dict[str, Any]], received_at: str) -> int:
        """Store late labels (request id, record index, label); a repeated one replaces the earlier."""
        with self.engine.begin() as connection:
            for item in items:
                key = (labels.c.request_id == item["request_id"]) & (labels.c.record_index == item["index"])
                connection.execute(labels.delete().where(key))
            connection.execute(
                labels.insert(),
                [
                    {
                        "request_id": i["request_id"],
                        "record_index": i["index"],
                        "label": i["label"],
                        "received_at": received_at,
                    }
                    for i in items
                ],
            )
        return len(items)


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
        sa.select(predictions.c.id, predictions.c.inputs, labels.c.label.label("true_label"))
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
    if target is not None:
        frame[target] = [r.true_label for r in rows]
    return frame, rows[-1].id
