"""Middleware around the API: body size limit, cross-site request refusal, request log."""
from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
            return JSONResponse(status_code=413, content={"error": "PayloadTooLarge",
                                                          "detail": f"request bodies are limited to "
                                                                    f"{MAX_BODY_BYTES} bytes"})
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and request.url.path.startswith("/sdapi/"):
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin != own and origin not in allowed:
                return JSONResponse(status_code=403, content={"error": "Forbidden",
                                                              "detail": f"cross-origin request from {origin}"})
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
