"""/docs and /redoc work offline: their pages load Swagger UI and ReDoc from this server, from no other host."""
from __future__ import annotations

import re

import pytest

from modules import cmd_args, services as services_module
from modules.api.docs_pages import ASSET_FILES, ASSETS_URL
from tests.fixtures.app_client import app_client

EXTERNAL = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        yield client
    services.shutdown()


@pytest.mark.parametrize("page, asset", [("/docs", "swagger-ui-bundle.js"), ("/docs", "swagger-ui.css"),
                                         ("/redoc", "redoc.standalone.js")])
def test_docs_pages_load_their_assets_from_this_server(client, page, asset):
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "cdn.jsdelivr" not in html and "fonts.googleapis" not in html and "tiangolo" not in html
    assert f"{ASSETS_URL}/{asset}" in html
    assert "/openapi.json" in html


@pytest.mark.parametrize("name", ASSET_FILES)
def test_docs_assets_are_served(client, name):
    response = client.get(f"{ASSETS_URL}/{name}")
    assert response.status_code == 200
    assert len(response.content) > 1000


def test_openapi_schema_and_oauth2_redirect_still_answer(client):
    assert client.get("/openapi.json").json()["info"]["title"] == "Stable Diffusion web UI API"
    assert client.get("/docs/oauth2-redirect").status_code == 200
