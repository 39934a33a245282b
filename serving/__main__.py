"""Start the prediction service: ``python -m serving [--host H] [--port P] [--database-url URL]``.

Defaults come from the ``serve`` section of params.yaml (127.0.0.1:8000, SQLite log in data/).
"""

from __future__ import annotations

import argparse
import logging
import os


def main() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import uvicorn

    from pipeline.core.cli import setup_logging
    from pipeline.params import load_params, prediction_log_url
    from serving.app import create_app

    params = load_params()
    parser = argparse.ArgumentParser(prog="python -m serving", description="Evergreen prediction service")
    parser.add_argument("--host", default=params.serve.host)
    parser.add_argument("--port", type=int, default=params.serve.port)
    parser.add_argument(
        "--database-url",
        default=prediction_log_url(params.serve),
        help="default: $EVERGREEN_DATABASE_URL or serve.database_url",
    )
    parser.add_argument("--registry", default=params.paths.registry)
    parser.add_argument("--sqlite-synchronous", choices=["FULL", "NORMAL"], default=params.serve.sqlite_synchronous)
    args = parser.parse_args()
    settings = params.serve.model_copy(
        update={
            "host": args.host,
            "port": args.port,
            "database_url": args.database_url,
            "sqlite_synchronous": args.sqlite_synchronous,
        }
    )
    setup_logging()
    logging.getLogger("uvicorn.access").disabled = True
    uvicorn.run(create_app(settings, args.registry), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
