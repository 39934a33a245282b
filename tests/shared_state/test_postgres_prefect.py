"""The Prefect server's database on a real PostgreSQL server: the server starts on it, a flow run is
recorded there, and no SQLite database appears in PREFECT_HOME."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from flows.stack import DATABASE_URL_ENV, Stack, free_port
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # a database server and a Prefect server

FLOW = textwrap.dedent(
    """
    from prefect import flow

    @flow(name="evergreen-postgres-check")
    def check() -> int:
        return 42

    assert check() == 42
    """
)


def test_a_prefect_server_on_postgresql_records_a_flow_run(postgres, tmp_path):
    url = postgres.database("prefect", driver="asyncpg")
    database = url.rsplit("/", 1)[1]
    stack = Stack(root=REPO, home=tmp_path / "prefect-home", port=free_port(), database_url=url)
    assert stack.database == url  # no password to mask
    try:
        stack.start_server(timeout=180)
        (tmp_path / "check.py").write_text(FLOW)
        result = subprocess.run(
            [sys.executable, str(tmp_path / "check.py")],
            cwd=tmp_path,
            env=stack.env(),  # the API URL only: a flow run never sees the server's database URL
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        stack.down()
    assert not stack.healthy()

    runs = postgres.psql(database, "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id")
    assert runs.splitlines() == ["evergreen-postgres-check|COMPLETED"]
    tables = postgres.psql(database, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
    assert int(tables) > 20  # Prefect's schema, migrated by the server on start
    assert not list(stack.home.rglob("*.db"))  # nothing in SQLite


def test_a_database_url_prefect_cannot_use_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError) as info:
        Stack(root=REPO, home=tmp_path, database_url="postgresql+psycopg://prefect:secret@db:5432/prefect")

    message = str(info.value)
    assert "postgresql+asyncpg://" in message and "prefect:***@db:5432/prefect" in message and "secret" not in message


def test_a_postgresql_url_without_a_driver_gets_asyncpg(tmp_path, monkeypatch):
    """``postgresql://`` as libpq and most tools write it, from the argument or the environment."""
    assert (
        Stack(root=REPO, home=tmp_path, database_url="postgres://p@db/prefect").database_url
        == "postgresql+asyncpg://p@db/prefect"
    )
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql://p@db/prefect")
    assert Stack(root=REPO, home=tmp_path).server_env()[DATABASE_URL_ENV[0]] == "postgresql+asyncpg://p@db/prefect"


def test_the_database_url_reaches_the_server_alone(monkeypatch, tmp_path):
    """From the environment (Prefect's older name here) or the argument: the server gets it under both of
    Prefect's names, and no worker or flow run sees it (it may hold a password)."""
    url = "postgresql+asyncpg://prefect:secret@db:5432/prefect"
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", url)
    for stack in (Stack(root=REPO, home=tmp_path), Stack(root=REPO, home=tmp_path, database_url=url)):
        assert {name: stack.server_env()[name] for name in DATABASE_URL_ENV} == dict.fromkeys(DATABASE_URL_ENV, url)
        assert not set(DATABASE_URL_ENV) & set(stack.env())
        assert stack.database == "postgresql+asyncpg://prefect:***@db:5432/prefect"
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL")
    assert Stack(root=REPO, home=tmp_path).database == f"SQLite in {tmp_path}"
