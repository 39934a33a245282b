"""/docs and /redoc work on a machine with no internet: every script, style and icon they load is served by the
service itself, and Swagger UI makes no call to an outside validator. /openapi.json stays where it was."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from pipeline.params import parse_params
from serving.app import DOCS_ASSETS_URL, create_app

# src=... / href=... in the pages, and any absolute URL anywhere in them (scripts included).
REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
EXTERNAL = re.compile(r"(?:https?:)?//[a-z0-9.-]+", re.IGNORECASE)


@pytest.fixture
def client(raw_params, tmp_path):
    """The service with an empty registry (no model: /docs needs none) and its own prediction log."""
    settings = parse_params(raw_params).serve.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'log.sqlite'}"})
    with TestClient(create_app(settings, tmp_path / "registry")) as client:
        yield client


@pytest.mark.parametrize(("page", "assets"), [("/docs", 3), ("/redoc", 2)])
def test_the_docs_pages_load_only_the_services_own_assets(client, page, assets):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not EXTERNAL.findall(html), f"{page} references {EXTERNAL.findall(html)}"
    references = REFERENCE.findall(html)
    assert len(references) == assets and all(ref.startswith(f"{DOCS_ASSETS_URL}/") for ref in references), references
    for ref in references:
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 1000, ref


def test_swagger_ui_reads_the_schema_from_the_service_and_calls_no_validator(client):
    html = client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1") and "/predict" in schema["paths"]
    assert not any(path.startswith(DOCS_ASSETS_URL) for path in schema["paths"])  # the assets are no API


def test_the_bundled_swagger_ui_reads_openapi_3_1(client):
    # Swagger UI before 5 refuses an `openapi: 3.1.x` schema ("Unable to render this definition"): FastAPI writes 3.1.
    bundle = client.get(f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js").text
    assert "isOAS31" in bundle
