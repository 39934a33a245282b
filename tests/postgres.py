"""A real PostgreSQL server for the tests, started from the binaries this machine has.

``initdb`` a cluster in a fresh temporary directory (trust authentication, loopback only: nothing
but this machine can reach it), ``pg_ctl start`` it on a free 127.0.0.1 port with its unix socket in
that directory, create databases on demand, and ``pg_ctl stop -m fast`` and delete it at the end.
The cluster is thrown away, so it runs with ``fsync=off`` unless made ``durable``: a commit
still survives a crash of any process (SIGKILL of a client or of a server backend), not a crash of
the machine, and the shutdown checkpoint does not fsync every database the tests made (that took
15 s). Figures of commit latency need ``durable=True``.
PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user (``runuser``);
as anyone else it belongs to the current user. Where no ``initdb`` is installed (or it cannot run),
``unavailable()`` says why and the fixture skips.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SUPERUSER = "postgres"  # the cluster's superuser role (trust: no password)
CLUSTER_OWNER = "postgres"  # the operating-system user a root test run starts the server as
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as a user it accepts ([] when this one will do)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", CLUSTER_OWNER, "--"]


def unavailable() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    initdb = shutil.which("initdb")
    if initdb is None:
        return "PostgreSQL is not installed: no initdb on PATH (install PostgreSQL's server binaries to run these tests)"
    if shutil.which("pg_ctl") is None:
        return "PostgreSQL is not fully installed: initdb is on PATH but pg_ctl is not"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root and no runuser to start PostgreSQL as a non-root user (it refuses to run as root)"
        try:
            import pwd

            pwd.getpwnam(CLUSTER_OWNER)
        except KeyError:
            return f"running as root and no {CLUSTER_OWNER!r} user to start PostgreSQL as (it refuses to run as root)"
    try:
        subprocess.run([initdb, "--version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"initdb at {initdb} cannot run: {exc}"
    return None


class PostgresCluster:
    """One running cluster: ``database(prefix)`` makes a new empty database and returns its URL."""

    def __init__(self, root: Path, port: int, durable: bool = False):
        self.root = root
        self.data = root / "data"
        self.port = port
        self.durable = durable
        self._names = itertools.count(1)

    def url(self, database: str, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL of a database of this cluster: ``psycopg`` (the log, Optuna) or ``asyncpg`` (Prefect)."""
        return f"postgresql+{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def database(self, prefix: str = "test", driver: str = "psycopg") -> str:
        """A new, empty database (named ``<prefix>_<n>``) and its URL."""
        name = f"{prefix}_{next(self._names)}"
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
        self.psql("postgres", f"CREATE DATABASE {name}")
        return self.url(name, driver)

    def psql(self, database: str, sql: str) -> str:
        """Run SQL with psql over TCP; its unaligned, tuples-only output."""
        result = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port)]
            + ["-U", SUPERUSER, "-d", database, "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} on {database}: {result.stderr.strip()}")
        return result.stdout.strip()

    def postmaster_pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _pg_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*_as_owner(), "pg_ctl", "-D", str(self.data), *args], capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            f"-c max_connections=200 -c fsync={'on' if self.durable else 'off'}"
        )
        result = self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.root / "server.log"), "-o", options)
        if result.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed on port {self.port}: {result.stdout}{result.stderr}{log}")

    def stop(self) -> None:
        """Fast shutdown (active sessions are ended), then make sure no server process is left."""
        pid = self.postmaster_pid()
        self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
        if pid is not None and _alive(pid):  # pg_ctl gave up: no stray server
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown; the postmaster ends its children
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def running_cluster(durable: bool = False, attempts: int = 3) -> Iterator[PostgresCluster]:
    """A started cluster in a new temporary directory, stopped and deleted on exit."""
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    # Not under pytest's tmp_path: its folders are private to the test's user, and the server's user must own this one.
    root = Path(tempfile.mkdtemp(prefix="evergreen-pg-"))
    try:
        owner = _as_owner()
        if owner:
            shutil.chown(root, user=CLUSTER_OWNER, group=None)
        result = subprocess.run(
            [*owner, "initdb", "-D", str(root / "data"), "--auth=trust", f"--username={SUPERUSER}"]
            + ["--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")
        for attempt in range(1, attempts + 1):
            cluster = PostgresCluster(root, _free_port(), durable)
            try:
                cluster.start()
                break
            except RuntimeError:  # the free port was taken between the probe and the bind
                cluster.stop()  # whatever half started
                if attempt == attempts:
                    raise
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
