"""Database URLs, canonicalised in one place: PostgreSQL's driver made explicit, the password masked for logs."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# How PostgreSQL URLs are often written (libpq, Heroku, many tools): no SQLAlchemy driver named.
BARE_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def with_driver(url: str, driver: str) -> str:
    """``postgresql://...`` (or ``postgres://...``) with the driver the caller's library needs: ``psycopg`` for
    SQLAlchemy's engines (the prediction log, Optuna), ``asyncpg`` for Prefect's server. Without one,
    SQLAlchemy would pick psycopg2, which Evergreen does not install. Any other URL is returned unchanged."""
    for scheme in BARE_POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return f"postgresql+{driver}://{url[len(scheme) :]}"
    return url


def redact(url: str) -> str:
    """A database URL fit for a log line or a report: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"
