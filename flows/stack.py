"""Bring Evergreen's Prefect stack up and down: server, process work pool, deployments, worker.

    python -m flows.stack up       # server on 127.0.0.1:4200, pool "evergreen", prefect.yaml deployed, a worker
    python -m flows.stack status
    python -m flows.stack down

State lives in ``.prefect/`` (PREFECT_HOME: the SQLite database, logs, process ids). Telemetry is
off for every process started here. The integration tests drive the same ``Stack`` class on a
free port with a temporary home.
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
from pipeline.core.io import atomic_write

log = logging.getLogger(__name__)

POOL = "evergreen"
DEFAULT_PORT = 4200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    root: Path
    home: Path
    port: int = DEFAULT_PORT

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
        """The environment every Prefect process of this stack (and every flow run) gets."""
        env = dict(os.environ, **TELEMETRY_OFF)
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

    def _spawn(self, name: str, *args: str) -> int:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", *args],
                cwd=self.root,
                env=self.env(),
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

    def up(self, timeout: float = 120.0) -> None:
        """Start the server, create the pool, deploy prefect.yaml, start a worker."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.healthy():
            raise RuntimeError(f"something already answers on {self.api_url}; run `python -m flows.stack down` first")
        pids = {"server": self._spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port))}
        atomic_write(self.pid_file, json.dumps(pids))
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                self.down()
                raise RuntimeError(f"Prefect server did not start within {timeout:.0f}s; see {self.home / 'logs/server.log'}")
            time.sleep(0.5)
        if self._prefect("work-pool", "inspect", POOL, check=False).returncode != 0:
            self._prefect("work-pool", "create", POOL, "--type", "process")
        self._prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(self.root / "prefect.yaml"))
        pids["worker"] = self._spawn("worker", "worker", "start", "--pool", POOL, "--limit", "2")
        atomic_write(self.pid_file, json.dumps(pids))
        log.info("Prefect UI: %s (deployments: retrain, drift-monitor; work pool: %s)", self.ui_url, POOL)

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.stack")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("EVERGREEN_PREFECT_PORT", DEFAULT_PORT)))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path.cwd()
    stack = Stack(root=root, home=root / ".prefect", port=args.port)
    if args.command == "up":
        stack.up()
        sys.stdout.write(
            f"Prefect UI: {stack.ui_url}  (Deployments: retrain, drift-monitor; export PREFECT_API_URL={stack.api_url})\n"
        )
    elif args.command == "down":
        stack.down()
    else:
        sys.stdout.write(f"{'up' if stack.healthy() else 'down'}: {stack.ui_url}\n")


if __name__ == "__main__":
    main()
