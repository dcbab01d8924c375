"""Middleware around the API: body size limit, cross-site request refusal, timing header, request log."""
from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from modules.api.errors import error_body, install_error_handlers

MAX_BODY_BYTES = 128 * 1024 * 1024   # room for several base64 images in later img2img/ControlNet requests


def add_request_guards(app: FastAPI, allowed_origins: str | None) -> None:
    """Refuse oversized bodies, and state-changing API calls from other sites' pages (CSRF).

    No permissive CORS middleware is ever added (A1111 removes Gradio's for the same reason).
    """
    allowed = {origin.strip() for origin in (allowed_origins or "").split(",") if origin.strip()}

    @app.middleware("http")
    async def request_guard(request: Request, call_next):
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            message = f"request bodies are limited to {MAX_BODY_BYTES} bytes"
            return JSONResponse(status_code=413, content=error_body("PayloadTooLarge", message, message))
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and request.url.path.startswith("/sdapi/"):
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin != own and origin not in allowed:
                message = f"cross-origin request from {origin}"
                return JSONResponse(status_code=403, content=error_body("Forbidden", message, message))
        return await call_next(request)


def add_request_log(app: FastAPI) -> None:
    """--api-log: one line per API request, with its status and duration."""
    log = logging.getLogger("api")

    @app.middleware("http")
    async def request_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        if request.url.path.startswith("/sdapi/"):
            log.info("%s %s -> %d in %.3fs", request.method, request.url.path, response.status_code,
                     time.perf_counter() - started)
        return response


def add_process_time(app: FastAPI) -> None:
    """A1111 puts X-Process-Time (seconds) on every response; some clients log it."""

    @app.middleware("http")
    async def process_time(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Process-Time"] = f"{time.perf_counter() - started:.4f}"
        return response


def install_middleware(app: FastAPI, args) -> None:
    """Everything the API's app gets around its routes, from the flags."""
    install_error_handlers(app)
    add_process_time(app)
    add_request_guards(app, args.cors_allow_origins)
    if args.api_log:
        add_request_log(app)
