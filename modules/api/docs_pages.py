"""/docs (Swagger UI) and /redoc served offline: FastAPI's pages load their JavaScript and CSS from a CDN, which a
machine without network (or a browser that cannot reach it) shows as a blank page. These are FastAPI's own
page builders pointed at the copies of Swagger UI and ReDoc that the `fastapi-offline` package ships, served
from /docs-assets."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def assets_folder() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Adds /docs, its OAuth2 redirect page, /redoc and the assets they load to `app` (created with
    docs_url=None, redoc_url=None so that FastAPI's CDN pages are not registered)."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_folder()), name="docs-assets")
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    def assets(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}"

    # Plain routes, as FastAPI adds its own doc pages: pages of the server, not API routes.
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect}", swagger_js_url=f"{assets(request)}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets(request)}/swagger-ui.css", swagger_favicon_url=f"{assets(request)}/favicon.png",
            # validatorUrl None: no badge fetched from the validator's host
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})})

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{assets(request)}/redoc.standalone.js",
                              redoc_favicon_url=f"{assets(request)}/favicon.png", with_google_fonts=False)

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    app.add_route(oauth2_redirect, swagger_ui_redirect, include_in_schema=False)
    app.add_route(redoc_url, redoc, include_in_schema=False)
