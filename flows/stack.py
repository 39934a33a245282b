"""Bring Evergreen's Prefect stack up and down: server, process work pool, deployments, worker.

    python -m flows.stack up       # server on 127.0.0.1:4200, pool "evergreen", prefect.yaml deployed, a worker
    python -m flows.stack status
    python -m flows.stack down

State lives in ``.prefect/`` (PREFECT_HOME: the SQLite database, logs, process ids). Telemetry is
off for every process started here. The integration tests drive the same ``Stack`` class on a
free port with a temporary home.

The server's database is SQLite in PREFECT_HOME unless a URL is given (the zero-set-up default);
for PostgreSQL, shared by a team and by servers on other hosts:

    python -m flows.stack up --database-url postgresql+asyncpg://prefect:PASSWORD@db-host:5432/prefect

or ``$PREFECT_SERVER_DATABASE_CONNECTION_URL`` (Prefect 3's name; ``$PREFECT_API_DATABASE_CONNECTION_URL``,
the older one, is read too), or ``Stack(database_url=...)``. Prefect's server needs the asyncpg driver
(``postgresql+asyncpg://``) and creates and migrates its tables itself on start. The URL goes to the
server process only: workers and flow runs talk to the API, not to its database.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flows import TELEMETRY_OFF
from pipeline.core.dburl import redact, with_driver
from pipeline.core.io import atomic_write

log = logging.getLogger(__name__)

POOL = "evergreen"
DEFAULT_PORT = 4200
# Prefect 3 reads its database URL from the first of these that is set.
DATABASE_URL_ENV = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_from_env() -> str | None:
    """The Prefect server's database URL the environment sets, if any (None: SQLite in PREFECT_HOME)."""
    return next((os.environ[name] for name in DATABASE_URL_ENV if os.environ.get(name)), None)


@dataclass
class Stack:
    root: Path
    home: Path
    port: int = DEFAULT_PORT
    database_url: str | None = None  # the server's database (postgresql+asyncpg://...); None: SQLite in home

    def __post_init__(self) -> None:
        if self.database_url is not None:
            self.database_url = with_driver(self.database_url, "asyncpg")  # postgresql:// as libpq writes it
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql+asyncpg://", "sqlite+aiosqlite://")
        ):
            raise ValueError(
                f"Prefect server database {redact(self.database_url)}: Prefect's server needs an async driver; "
                "use postgresql+asyncpg://user:password@host:5432/name (or sqlite+aiosqlite:///path)"
            )

    @property
    def database(self) -> str:
        """Where the server keeps its state, for people (password masked)."""
        url = self.database_url or database_url_from_env()
        return redact(url) if url else f"SQLite in {self.home}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "evergreen-pids.json"

    def env(self) -> dict[str, str]:
        """The environment every Prefect process of this stack (and every flow run) gets: the server's
        database URL (it may hold a password) is not in it; ``server_env`` adds it for the server alone."""
        env = {key: value for key, value in os.environ.items() if key not in DATABASE_URL_ENV}
        env.update(TELEMETRY_OFF)
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(self.port),
            PREFECT_UI_URL=self.ui_url,
            EVERGREEN_ROOT=str(self.root),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        return env

    def _prefect(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed: {(result.stdout + result.stderr).strip()[-2000:]}")
        return result

    def server_env(self) -> dict[str, str]:
        """The server's environment: the stack's, plus its database URL under both of Prefect's names."""
        env, url = self.env(), self.database_url or database_url_from_env()
        if url is not None:
            env.update(dict.fromkeys(DATABASE_URL_ENV, with_driver(url, "asyncpg")))
        return env

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> int:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", *args],
                cwd=self.root,
                env=env or self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return process.pid

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def start_server(self, timeout: float = 120.0) -> None:
        """Start the server alone (on its database) and wait until it answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.healthy():
            raise RuntimeError(f"something already answers on {self.api_url}; run `python -m flows.stack down` first")
        server = ("server", "start", "--host", "127.0.0.1", "--port", str(self.port))
        atomic_write(self.pid_file, json.dumps({"server": self._spawn("server", *server, env=self.server_env())}))
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                self.down()
                raise RuntimeError(f"Prefect server did not start within {timeout:.0f}s; see {self.home / 'logs/server.log'}")
            time.sleep(0.5)
        log.info("Prefect server on %s (database: %s)", self.api_url, self.database)

    def up(self, timeout: float = 120.0) -> None:
        """Start the server, create the pool, deploy prefect.yaml, start a worker."""
        self.start_server(timeout)
        pids = json.loads(self.pid_file.read_text())
        if self._prefect("work-pool", "inspect", POOL, check=False).returncode != 0:
            self._prefect("work-pool", "create", POOL, "--type", "process")
        self._prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(self.root / "prefect.yaml"))
        pids["worker"] = self._spawn("worker", "worker", "start", "--pool", POOL, "--limit", "2")
        atomic_write(self.pid_file, json.dumps(pids))
        log.info("Prefect UI: %s (deployments: retrain, retrain-remote, drift-monitor; work pool: %s)", self.ui_url, POOL)

    def down(self) -> None:
        """Stop the worker (it needs a second SIGTERM to exit) and then the server."""
        if not self.pid_file.exists():
            return
        pids = json.loads(self.pid_file.read_text())
        for name in ("worker", "server"):
            pid = pids.get(name)
            if pid is not None:
                _terminate(pid, name)
        self.pid_file.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pid: int, name: str, grace: float = 15.0) -> None:
    """SIGTERM the process group twice (Prefect workers wait for the second), then SIGKILL."""
    for attempt in range(3):
        if not _alive(pid):
            return
        sig = signal.SIGKILL if attempt == 2 else signal.SIGTERM
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace / 3
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                if not _alive(pid):
                    return
            time.sleep(0.2)
    log.warning("%s (pid %d) still running after SIGKILL", name, pid)


PORT_ENV = "EVERGREEN_PREFECT_PORT"


def workspace_stack(root: Path | None = None, port: int | None = None, database_url: str | None = None) -> Stack:
    """The stack of a workspace, as ``make prefect-up`` starts it: PREFECT_HOME in ``<root>/.prefect``, the port
    from $EVERGREEN_PREFECT_PORT or 4200."""
    root = (root or Path.cwd()).resolve()
    port = port if port is not None else int(os.environ.get(PORT_ENV, DEFAULT_PORT))
    return Stack(root=root, home=root / ".prefect", port=port, database_url=database_url)


def main(argv: list[str] | None = None, prog: str = "python -m flows.stack") -> None:
    parser = argparse.ArgumentParser(
        prog=prog, description="The Prefect server, the evergreen work pool, prefect.yaml's deployments and a worker."
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV, DEFAULT_PORT)))
    parser.add_argument(
        "--database-url",
        default=database_url_from_env(),
        help=f"the server's database, postgresql+asyncpg://... (default: ${DATABASE_URL_ENV[0]}, "
        f"${DATABASE_URL_ENV[1]}, else SQLite in .prefect/)",
    )
    parser.add_argument("--json", action="store_true", help="status: one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stack = workspace_stack(port=args.port, database_url=args.database_url)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "up":
        try:
            stack.up()  # logs the server's address and the UI once
        except RuntimeError as exc:
            log.error("%s", exc)
            sys.exit(1)
        sys.stdout.write(f"export PREFECT_API_URL={stack.api_url}   # for prefect commands in another shell\n")
    elif args.command == "down":
        stack.down()
    else:
        status = {"up": stack.healthy(), "ui": stack.ui_url, "api": stack.api_url, "database": stack.database}
        if args.json:
            sys.stdout.write(json.dumps(status) + "\n")
        else:
            sys.stdout.write(f"{'up' if status['up'] else 'down'}: {stack.ui_url} (database: {stack.database})\n")
        sys.exit(0 if status["up"] else 3)


if __name__ == "__main__":
    main()
