"""Middleware around the app: Host allow-list (DNS rebinding), body size limit, cross-site request refusal, CORS,
framing refusal, served-file headers, timing header, request log."""
from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware

from modules.api.errors import error_body, install_error_handlers
from modules.api.host_policy import HostPolicy
from modules.untrusted.user_regex import PatternTooSlow, UserPattern

MAX_ORIGIN_CHARS = 2048        # far longer than any real origin (scheme, host, port)
ORIGIN_MATCH_SECONDS = 0.05    # for --cors-allow-origins-regex, per request
BODY_IDLE_SECONDS = 30         # a body that stops arriving for this long is given up (408)
MAX_BODY_BYTES = 128 * 1024 * 1024   # room for several base64 images in later img2img/ControlNet requests
# Every path a client may change state through outside the UI; auth and the Origin check cover them all.
API_PREFIXES = ("/sdapi/", "/controlnet/", "/internal/")
GRADIO_FILE_PREFIX = "/gradio_api/file="
# Served inline from /gradio_api/file=; anything else (SVG, HTML, …) could run script on this origin if
# opened as a page, so it is sent as a download.
INLINE_FILE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif", "image/avif", "image/bmp"}


class OriginPolicy:
    """Which web pages may call the server from a browser: its own (an origin naming an allowed host, the one
    the request was sent to: see HostPolicy), and those allowed by --cors-allow-origins (exact) or
    --cors-allow-origins-regex (whole origin, as starlette matches it)."""

    def __init__(self, origins: str | None, origin_regex: str | None, hosts: HostPolicy | None = None):
        self.hosts = hosts or HostPolicy()
        self.origins = [origin.strip() for origin in (origins or "").split(",") if origin.strip()]
        # The Origin header is the client's to choose: a pattern that backtracks without end must not freeze the
        # server on a long one, so it is matched with a time limit (and overlong origins are refused first).
        self.regex = (UserPattern(origin_regex, "--cors-allow-origins-regex", ORIGIN_MATCH_SECONDS, per_call=True)
                      if origin_regex else None)

    @property
    def configured(self) -> bool:
        return bool(self.origins or self.regex)

    def listed(self, origin: str) -> bool:
        """Allowed by the CORS flags."""
        if origin in self.origins:
            return True
        if self.regex is None or len(origin) > MAX_ORIGIN_CHARS:
            return False
        try:
            return self.regex.fullmatch(origin)
        except PatternTooSlow:
            return False

    def allows(self, origin: str, host: str | None) -> bool:
        """`host`: the Host header."""
        if origin == "null":   # sandboxed frames and file:// pages: anyone can make one
            return False
        return self.hosts.is_own_origin(origin, host) or self.listed(origin)


class HostCheck:
    """Every request, HTTP or websocket, must be sent to a host this server answers to (HostPolicy), and a
    websocket must come from an allowed page (browsers do not apply CORS to websockets). Pure ASGI and
    outermost, so that nothing, not even a CORS preflight, answers a rebound name."""

    def __init__(self, app, policy: OriginPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host")
        refusal = None
        if not self.policy.hosts.allows_host_header(host):
            refusal = (f"this server does not answer to the host name {host[:100]!r}; start it with "
                       "--allowed-hosts to allow that name")
        elif scope["type"] == "websocket":
            origin = headers.get("origin")
            if origin is not None and not self.policy.allows(origin, host):
                refusal = f"cross-origin websocket from {origin} refused"
        if refusal is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008, "reason": refusal[:120]})
        status = 400 if "host name" in refusal else 403
        response = JSONResponse(status_code=status, content=error_body("Forbidden" if status == 403 else "BadHost",
                                                                       refusal, refusal))
        await response(scope, receive, send)


class BodyLimit:
    """Bodies over MAX_BODY_BYTES get a 413: at once when Content-Length says so, and while they arrive when
    it is absent (chunked uploads), so no handler ever holds more. A body that stops arriving for
    BODY_IDLE_SECONDS gets a 408, so half-sent requests do not hold the server's resources. Pure ASGI: it has
    to wrap `receive`. Starlette's RequestBodyLimitMiddleware answers in plain text; this raises our
    HTTPException in the handler reading the body, so the A1111 error body comes back. It must be the innermost
    middleware: a BaseHTTPMiddleware inside it would turn the exception into an ExceptionGroup."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = MAX_BODY_BYTES
        message = f"request bodies are limited to {limit} bytes"
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            response = JSONResponse(status_code=413, content=error_body("PayloadTooLarge", message, message))
            return await response(scope, receive, send)
        received = 0
        complete = False

        async def limited_receive():
            nonlocal received, complete
            if complete:   # after the body, receive() waits for the client to go away: no time limit on that
                return await receive()
            try:
                event = await asyncio.wait_for(receive(), BODY_IDLE_SECONDS)
            except asyncio.TimeoutError:
                raise HTTPException(status_code=408, detail=f"the request body stopped arriving for "
                                                            f"{BODY_IDLE_SECONDS} s") from None
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                complete = not event.get("more_body", False)
                if received > limit:   # raised inside the handler's body read: the error handlers answer
                    raise HTTPException(status_code=413, detail=message)
            return event

        await self.app(scope, limited_receive, send)


def add_origin_check(app: FastAPI, policy: OriginPolicy) -> None:
    """Refuse state-changing calls from other sites' pages (CSRF), to the API and to the UI's own routes
    alike: a browser always sends Origin with them, and a page on another site cannot forge it."""

    @app.middleware("http")
    async def origin_check(request: Request, call_next):
        origin = request.headers.get("origin")
        if (origin is not None and request.method not in ("GET", "HEAD", "OPTIONS")
                and not policy.allows(origin, request.headers.get("host"))):
            message = (f"cross-origin request from {origin} refused; allow the site with --cors-allow-origins "
                       "or --cors-allow-origins-regex")
            return JSONResponse(status_code=403, content=error_body("Forbidden", message, message))
        return await call_next(request)


class NoCorsHeaders:
    """Without CORS flags no Access-Control-* header leaves the server: Gradio's own CORS middleware answers
    any origin once the server is reached by a non-local name (A1111 removes it for that reason).
    Pure ASGI, headers only, so Gradio's event streams pass untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_without_cors(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name in [name for name in headers if name.lower().startswith("access-control-")]:
                    del headers[name]
            await send(message)

        await self.app(scope, receive, send_without_cors)


class NoFraming:
    """No page of another site may show this one in a frame (clickjacking: a hidden frame over a decoy button
    that lands on Extensions → Install). Every response says so, in the old header and in CSP's."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_rules(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Frame-Options"] = "SAMEORIGIN"
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = "frame-ancestors 'self'"
            await send(message)

        await self.app(scope, receive, send_with_rules)


class ServedFileRules:
    """/gradio_api/file=: `nosniff` on every file, anything but a plain image sent as a download, and no
    `file=<url>` at all: Gradio would fetch the URL itself, asking dns.google when the name does not resolve
    to a public address, and this UI never shows remote files. Pure ASGI, as above."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(GRADIO_FILE_PREFIX):
            return await self.app(scope, receive, send)
        if scope["path"][len(GRADIO_FILE_PREFIX):].lower().startswith(("http:", "https:")):
            message = "this server fetches no URLs for the UI"
            return await JSONResponse(status_code=403, content=error_body("Forbidden", message, message))(
                scope, receive, send)

        async def send_with_rules(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                media_type = headers.get("content-type", "").split(";")[0].strip().lower()
                if message["status"] < 300 and media_type not in INLINE_FILE_TYPES:
                    _, sep, parameters = headers.get("content-disposition", "").partition(";")
                    headers["Content-Disposition"] = "attachment" + sep + parameters
            await send(message)

        await self.app(scope, receive, send_with_rules)


class PolicyCors(CORSMiddleware):
    """starlette's CORS middleware asking the OriginPolicy (its own regex match has no time limit)."""

    def __init__(self, app, policy: OriginPolicy, **kwargs):
        super().__init__(app, **kwargs)
        self.policy = policy

    def is_allowed_origin(self, origin: str) -> bool:
        return self.policy.listed(origin)


def add_cors(app: FastAPI, policy: OriginPolicy) -> None:
    """A1111's CORS: starlette's middleware with exactly the operator's origins. Gradio sees it on the app and
    leaves CORS to it."""
    app.add_middleware(PolicyCors, policy=policy, allow_origins=policy.origins, allow_credentials=True,
                       allow_methods=["*"], allow_headers=["*"])


def add_request_log(app: FastAPI) -> None:
    """--api-log: one line per API request, with its status and duration."""
    log = logging.getLogger("api")

    @app.middleware("http")
    async def request_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        if request.url.path.startswith(API_PREFIXES):
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
    """Everything the app gets around its routes (and the UI mounted later), from the flags. Added last is
    outermost: the Host check comes before anything answers, then CORS answers preflights before the other guards,
    and sees (or strips) every response's headers."""
    policy = OriginPolicy(args.cors_allow_origins, args.cors_allow_origins_regex, HostPolicy.from_args(args))
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    add_process_time(app)
    add_origin_check(app, policy)
    if args.api_log:
        add_request_log(app)
    app.add_middleware(ServedFileRules)
    app.add_middleware(NoFraming)
    if policy.configured:
        add_cors(app, policy)
    else:
        app.add_middleware(NoCorsHeaders)
    app.add_middleware(HostCheck, policy=policy)
