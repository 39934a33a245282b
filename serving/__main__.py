"""Start the prediction service: ``python -m serving [--host H] [--port P] [--database-url URL]``.

Defaults come from the ``serve`` section of params.yaml (127.0.0.1:8000, SQLite log in data/). With
``$EVERGREEN_API_TOKEN`` set, /predict, /labels and /metrics need ``Authorization: Bearer <token>``;
binding a non-loopback address without one logs a warning.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
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
    uvicorn.Server(server_config(settings, args.registry, api_token())).run()


if __name__ == "__main__":
    main()
