"""Errors in A1111's API shape, `{error, detail, body, errors}`: a 4xx names the field and the rule; and the one
table from the backend's kinds of job failure to HTTP status codes."""
from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modules.jobs import (Interrupted, InternalError, Job, JobError, NotFound, NotReady, OutOfMemory, ScriptFailed,
                          StorageFull, public_message)

log = logging.getLogger("api")


# Each kind of job failure → the status the API answers with. A kind not listed (an extension's subclass) takes
# its nearest listed base's.
STATUS_OF_KIND: dict[type[JobError], int] = {
    JobError: 422,       # an invalid request
    NotFound: 404,
    NotReady: 409,
    Interrupted: 409,
    OutOfMemory: 507,
    StorageFull: 507,
    ScriptFailed: 500,
    InternalError: 500,
}


def status_of(kind: type[JobError]) -> int:
    return next(STATUS_OF_KIND[base] for base in kind.__mro__ if base in STATUS_OF_KIND)


def failed_job_response(job: Job, error: str) -> JSONResponse:
    """A failed job in A1111's error body, named `error` (e.g. "GenerationError"), with its kind's status."""
    return JSONResponse(status_code=status_of(job.error_kind), content=error_body(error, job.error, job.error))


def validation_error(loc: list, message: str, kind: str = "value_error") -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", *loc], "msg": message, "type": kind}])


def error_body(error: str, detail, summary: str) -> dict:
    """A1111's body: `detail` keeps FastAPI's meaning (a message, or a list of {loc, msg, type});
    `body` is never an echo of the request, which may hold megabytes of base64."""
    return {"error": error, "detail": detail, "body": "", "errors": summary}


def _summary(detail) -> str:
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(part) for part in item.get('loc', []))}: {item.get('msg', '')}"
                         for item in detail if isinstance(item, dict))
    return str(detail)


def install_error_handlers(app: FastAPI) -> None:
    # starlette's class: FastAPI's derives from it, and starlette raises its own for 404, 405 and bodies
    # it cannot parse.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse(status_code=error.status_code, headers=error.headers,
                            content=error_body(type(error).__name__, error.detail, _summary(error.detail)))

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, error: RequestValidationError):
        # Only loc, msg and type: FastAPI's items also carry the offending input, which may be huge.
        detail = [{"loc": list(item.get("loc", [])), "msg": item.get("msg", ""), "type": item.get("type", "")}
                  for item in error.errors()]
        return JSONResponse(status_code=422, content=error_body("RequestValidationError", detail, _summary(detail)))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(status_code=500, content=error_body(type(error).__name__, "internal error; see the "
                                                                 "server log", public_message(error)))
