"""Start the prediction service: ``python -m serving [--host H] [--port P] [--database-url URL] [--workers N]``.

Defaults come from the ``serve`` section of params.yaml (127.0.0.1:8000, SQLite log in data/). With
``$EVERGREEN_API_TOKEN`` set, /predict, /labels and /metrics need ``Authorization: Bearer <token>``;
binding a non-loopback address without one logs a warning.

With ``serve.workers`` above 1 the socket is bound once and that many worker processes, forked after it,
accept on it: each loads the model, watches the registry and group-commits to the one prediction log (the
database takes their commits in turn). Each worker answers /metrics with its own counts.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn

    from pipeline.params import ServeParams

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def api_token() -> str | None:
    """The bearer token from $EVERGREEN_API_TOKEN; unset or empty: no token check."""
    from serving.app import API_TOKEN_ENV

    return os.environ.get(API_TOKEN_ENV) or None


def warn_if_exposed(host: str, token: str | None) -> None:
    from serving.app import API_TOKEN_ENV

    if token is None and not is_loopback(host):
        log.warning(
            "binding %s, reachable beyond this machine, with no token: anyone who reaches it can predict, post labels "
            "and read metrics; set $%s to require Authorization: Bearer",
            host,
            API_TOKEN_ENV,
        )


def server_config(settings: ServeParams, registry: str | Path, token: str | None) -> uvicorn.Config:
    """The uvicorn configuration of the service: its app, address and the guarded HTTP protocol."""
    import uvicorn

    from serving.app import create_app
    from serving.protocol import guarded_protocol

    warn_if_exposed(settings.host, token)
    return uvicorn.Config(
        create_app(settings, registry, api_token=token),
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.header_timeout_seconds, settings.body_timeout_seconds, settings.max_header_bytes),
        log_level="info",  # uvicorn's own lines: the URL it listens on, startup and shutdown
        access_log=settings.access_log,  # one line per request (serve.access_log; off in the benchmarks)
    )


def main(argv: list[str] | None = None, prog: str = "python -m serving") -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import uvicorn

    from pipeline.core.cli import setup_logging
    from pipeline.core.dburl import redact
    from pipeline.params import load_params, prediction_log_url
    from pipeline.params.paths import registry_location

    params = load_params()
    parser = argparse.ArgumentParser(prog=prog, description="Evergreen prediction service")
    parser.add_argument("--host", default=params.serve.host)
    parser.add_argument("--port", type=int, default=params.serve.port)
    parser.add_argument(
        "--database-url",
        default=prediction_log_url(params.serve),
        help="default: $EVERGREEN_DATABASE_URL or serve.database_url",
    )
    parser.add_argument("--registry", default=registry_location(params.paths))  # $EVERGREEN_REGISTRY or paths.registry
    parser.add_argument("--sqlite-synchronous", choices=["FULL", "NORMAL"], default=params.serve.sqlite_synchronous)
    parser.add_argument("--workers", type=int, default=params.serve.workers, help="worker processes (default: serve.workers)")
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=params.serve.access_log,
        help="one log line per request (default: serve.access_log)",
    )
    args = parser.parse_args(argv)
    settings = params.serve.model_copy(
        update={
            "host": args.host,
            "port": args.port,
            "database_url": args.database_url,
            "sqlite_synchronous": args.sqlite_synchronous,
            "access_log": args.access_log,
            "workers": args.workers,
        }
    )
    setup_logging()
    log.info(
        "Evergreen service: http://%s:%d (POST /predict, GET /model, API docs at /docs); registry %s, prediction log %s",
        settings.host,
        settings.port,
        args.registry,
        redact(settings.database_url),
    )
    if settings.workers == 1:
        uvicorn.Server(server_config(settings, args.registry, api_token())).run()
    else:
        sys.exit(run_workers(settings, args.registry, api_token()))


def run_workers(settings: ServeParams, registry: str | Path, token: str | None) -> int:
    """Serve with ``settings.workers`` processes on one listening socket; the exit status of the first to end.

    Forked after binding, before any thread or model exists here: each worker builds its own app. A signal
    to this process goes to every worker (each finishes its requests and closes its log); a worker that
    ends stops the others, so a supervisor sees the service stop rather than run on short of a worker."""
    import uvicorn

    # Only to bind as uvicorn binds (and say where it listens); the app is built in each worker.
    listening = uvicorn.Config("serving.app:create_app", host=settings.host, port=settings.port, log_level="info")
    sock = listening.bind_socket()
    workers: list[int] = []
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # a worker: serve until told to stop, and never return into the parent's code
            ended = 1
            try:
                stop_with_parent()
                uvicorn.Server(server_config(settings, registry, token)).run(sockets=[sock])
                ended = 0
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(ended)
        workers.append(pid)
    log.info("serving with %d worker processes: %s", len(workers), ", ".join(map(str, workers)))

    stopping: list[int] = []  # the signal this process was sent, once it was

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status: int | None = None
    while workers:
        pid, code = os.wait()
        workers.remove(pid)
        ended = os.waitstatus_to_exitcode(code)
        # uvicorn ends a worker it stopped by raising the signal again, after its shutdown: not a failure.
        ended = 0 if stopping and -ended in (signal.SIGTERM, signal.SIGINT) else ended
        if status is None:
            status = ended
            if workers and not stopping:
                log.warning("worker %d ended (status %d): stopping the others", pid, ended)
                forward(signal.SIGTERM, None)
    sock.close()
    return abs(status or 0)


def stop_with_parent() -> None:
    """Have the kernel send this worker SIGTERM should the parent die (Linux; elsewhere a no-op)."""
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


if __name__ == "__main__":
    main()
