from pipeline.core.dburl import redact, with_driver


def test_a_bare_postgres_url_gets_the_driver_the_caller_needs():
    assert with_driver("postgresql://u:p@db:5432/log", "psycopg") == "postgresql+psycopg://u:p@db:5432/log"
    assert with_driver("postgres://u@db/prefect", "asyncpg") == "postgresql+asyncpg://u@db/prefect"


def test_other_urls_are_left_as_they_are():
    for url in ("postgresql+psycopg://u@db/log", "postgresql+asyncpg://u@db/p", "sqlite:///x.db", "mysql://u@db/x"):
        assert with_driver(url, "psycopg") == url


def test_redact_masks_the_password_and_survives_garbage():
    assert redact("postgresql+psycopg://user:secret@db/log") == "postgresql+psycopg://user:***@db/log"
    assert redact("::not a url") == "<unparseable URL>"
