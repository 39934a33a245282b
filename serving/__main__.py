"""Start the prediction service: ``python -m serving [--host H] [--port P] [--database-url URL] [--workers N|auto]``.

Defaults come from the ``serve`` section of params.yaml (127.0.0.1:8000, SQLite log in data/). With
``$EVERGREEN_API_TOKEN`` set, /predict, /labels and /metrics need ``Authorization: Bearer <token>``;
binding a non-loopback address without one logs a warning.

``serve.workers`` (``--workers``): a number, or ``auto`` (the default: one per CPU this process may use, at most
4). Above 1 the socket is bound once and that many worker processes, forked after it, accept on it: each
loads the model, watches the registry and group-commits to the one prediction log (the database takes their
commits in turn). Each worker keeps its metrics in files in a private directory the parent made before
forking (prometheus_client's multiprocess mode) and removes when the service stops, so whichever worker
answers /metrics reports the service's totals. One worker keeps them in memory, as before.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
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


def workers_option(value: str) -> int | str:
    """``--workers``: a whole number from 1, or auto; anything else is an error naming serve.workers."""
    from pipeline.params.lifecycle import MAX_WORKERS, WORKERS_CHOICES

    if value == "auto" or (value.isdigit() and 1 <= int(value) <= MAX_WORKERS):
        return value if value == "auto" else int(value)
    raise argparse.ArgumentTypeError(f"{value!r}: serve.workers {WORKERS_CHOICES}")


def server_config(
    settings: ServeParams, registry: str | Path, token: str | None, metrics_dir: Path | None = None
) -> uvicorn.Config:
    """The uvicorn configuration of the service: its app, address and the guarded HTTP protocol (``metrics_dir``:
    one worker of several, see ``serving.app.ServiceMetrics``)."""
    import uvicorn

    from serving.app import create_app
    from serving.protocol import guarded_protocol

    warn_if_exposed(settings.host, token)
    return uvicorn.Config(
        create_app(settings, registry, api_token=token, metrics_dir=metrics_dir),
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
    from pipeline.params import AUTO_WORKERS_MAX, load_params, prediction_log_url, serve_workers
    from pipeline.params.paths import registry_location

    setup_logging()
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
    parser.add_argument(
        "--workers",
        type=workers_option,
        default=params.serve.workers,
        help="worker processes: N, or auto, one per usable CPU, at most 4 (default: serve.workers)",
    )
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
            "workers": serve_workers(args.workers),
        }
    )
    log.info(
        "Evergreen service: http://%s:%d (POST /predict, GET /model, API docs at /docs); registry %s, prediction log %s",
        settings.host,
        settings.port,
        args.registry,
        redact(settings.database_url),
    )
    if args.workers == "auto":
        log.info(
            "serve.workers auto: %d worker process(es), one per usable CPU (at most %d)", settings.workers, AUTO_WORKERS_MAX
        )
    warn_if_metrics_env_set()
    if settings.workers == 1:
        from serving.app import keep_metrics_in

        keep_metrics_in(None)  # in memory, in this process
        hangup_as_terminate()
        uvicorn.Server(server_config(settings, args.registry, api_token())).run()
    else:
        sys.exit(run_workers(settings, args.registry, api_token()))


def warn_if_metrics_env_set() -> None:
    """Say that a $PROMETHEUS_MULTIPROC_DIR in the environment is not used: the service keeps its metrics in
    memory (one worker) or in a fresh directory of its own (several). A directory others write to, or one left
    from an earlier run, would add their counts to this service's totals."""
    from serving.app import MULTIPROC_ENV

    for name in (MULTIPROC_ENV, MULTIPROC_ENV.lower()):
        if os.environ.get(name):
            log.warning("$%s is set (%s) and not used: the service keeps its own metrics", name, os.environ[name])


def run_workers(settings: ServeParams, registry: str | Path, token: str | None) -> int:
    """Serve with ``settings.workers`` processes on one listening socket; the exit status of the first to end.

    Forked after binding, before any model or metric exists here: each worker builds its own app. SIGTERM,
    SIGINT or SIGHUP to this process stops every worker (each finishes its requests and closes its log); a worker that
    ends stops the others, so a supervisor sees the service stop rather than run on short of a worker.
    The workers' metrics live in a private directory made here before forking and removed once they ended
    (by the workers, should this process be killed outright)."""
    metrics_dir = Path(tempfile.mkdtemp(prefix="evergreen-metrics-"))  # mode 0700: this user's only
    try:
        return serve_forked(settings, registry, token, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def serve_forked(settings: ServeParams, registry: str | Path, token: str | None, metrics_dir: Path) -> int:
    """``run_workers`` once its metrics directory exists."""
    import uvicorn
    from prometheus_client.multiprocess import mark_process_dead

    from pipeline.params import serve_workers
    from serving.app import keep_metrics_in

    # Only to bind as uvicorn binds (and say where it listens); the app is built in each worker.
    listening = uvicorn.Config("serving.app:create_app", host=settings.host, port=settings.port, log_level="info")
    sock = listening.bind_socket()
    workers: list[int] = []
    parent = os.getpid()
    for _ in range(serve_workers(settings.workers)):  # main resolved "auto" already
        pid = os.fork()
        if pid == 0:  # a worker: serve until told to stop, and never return into the parent's code
            ended = 1
            try:
                stop_with_parent(parent)
                end_as_signalled(parent, metrics_dir)
                keep_metrics_in(metrics_dir)
                uvicorn.Server(server_config(settings, registry, token, metrics_dir)).run(sockets=[sock])
                ended = 0
            except SystemExit as exc:  # uvicorn's exit after a failed startup, which it has logged itself
                ended = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                orphan_cleanup(parent, metrics_dir)
                os._exit(ended)
        workers.append(pid)
    log.info("serving with %d worker processes: %s", len(workers), ", ".join(map(str, workers)))

    stopping: list[int] = []  # the signal this process was sent, once it was

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        # SIGTERM whichever came: a Ctrl-C already sent each worker SIGINT (it signals the whole process group),
        # and a second SIGINT would make uvicorn skip the app's shutdown, which closes the log.
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    status: int | None = None
    while workers:
        pid, code = os.wait()
        workers.remove(pid)
        mark_process_dead(pid, str(metrics_dir))  # its model gauge goes; its counts stay in the totals
        ended = os.waitstatus_to_exitcode(code)
        # uvicorn ends a worker it stopped by raising the signal again, after its shutdown: not a failure.
        ended = 0 if stopping and -ended in STOP_SIGNALS else ended
        if status is None:
            status = ended
            if workers and not stopping:
                log.warning("worker %d ended (status %d): stopping the others", pid, ended)
                forward(signal.SIGTERM, None)
    sock.close()
    return abs(status or 0)


# The signals that stop the service: SIGHUP too, which a closed terminal or a dropped ssh session sends the
# whole process group (its default would kill every worker at once, before any closes its log).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def hangup_as_terminate() -> None:
    """SIGHUP stops this process as SIGTERM does (uvicorn handles only SIGTERM and SIGINT)."""
    signal.signal(signal.SIGHUP, lambda _signum, _frame: os.kill(os.getpid(), signal.SIGTERM))


def end_as_signalled(parent: int, metrics_dir: Path) -> None:
    """A worker's SIGTERM and SIGINT, once uvicorn has shut down and raised them again: the process ends as
    the signal ends it (the status the parent expects), after ``orphan_cleanup``. SIGHUP: ``hangup_as_terminate``."""

    def end(signum: int, _frame: object) -> None:
        orphan_cleanup(parent, metrics_dir)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    hangup_as_terminate()


def orphan_cleanup(parent: int, metrics_dir: Path) -> None:
    """Remove the metrics directory when the parent was killed outright (SIGKILL): nobody else will. Every
    worker of a killed parent tries; a worker still shutting down keeps writing to its files, now unlinked."""
    if os.getppid() != parent:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def stop_with_parent(parent: int) -> None:
    """Have the kernel send this worker SIGTERM should the parent die (Linux; elsewhere a no-op). A parent
    that died between the fork and this call sent nothing: such a worker ends at once."""
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        raise SystemExit(0)


if __name__ == "__main__":
    from pipeline.core.cli import run_or_exit

    run_or_exit(main)  # a params error: one line, exit status 1
