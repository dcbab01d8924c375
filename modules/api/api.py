"""The API's routes assembled: /sdapi/v1 (a router per resource, modules/api/routes/), the ControlNet extension's
/controlnet and /internal/ping; with --api-server-stop also the server-* routes.

Every router carries the `--api-auth` dependency, so auth covers all of them (A1111's plain `@app` routes
escaped it).
"""
from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from modules.api.a1111_api import Api, decode_base64_to_image, encode_pil_to_base64  # noqa: F401 - A1111's names
from modules.api.routes import (checkpoints, controlnet, extras, generation, interrogate, jobs, networks, options,
                                scripts, server, training, upscalers)
from modules.api.server import ServerControl
from modules.services import Services

# /sdapi/v1's resources, in the order their routes are registered (and listed in /docs)
SDAPI_RESOURCES = (generation, extras, interrogate, upscalers, scripts, jobs, checkpoints, options, networks, training,
                   server)


def _auth_dependency(credentials: str | None):
    if not credentials:
        return []
    allowed = [tuple(pair.split(":", 1)) for pair in credentials.split(",") if ":" in pair]
    basic = HTTPBasic()

    def check(given: HTTPBasicCredentials = Depends(basic)):
        for user, password in allowed:
            if secrets.compare_digest(given.username, user) and secrets.compare_digest(given.password, password):
                return
        raise HTTPException(status_code=401, detail="incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return [Depends(check)]


def create_routers(services: Services, server_control: ServerControl | None = None) -> list[APIRouter]:
    """/sdapi/v1, the ControlNet extension's /controlnet and /internal/ping, all behind --api-auth; with
    --api-server-stop also the server-* routes, acting through `server_control`."""
    auth = _auth_dependency(services.args.api_auth)

    def behind_auth(prefix: str, *parts: APIRouter) -> APIRouter:
        router = APIRouter(prefix=prefix, dependencies=auth)
        for part in parts:
            router.include_router(part)
        return router

    routers = [behind_auth("/sdapi/v1", *(resource.create_router(services) for resource in SDAPI_RESOURCES)),
               behind_auth("/controlnet", controlnet.create_router(services)),
               behind_auth("/internal", server.create_internal_router())]
    if services.args.api_server_stop:
        if server_control is None:
            raise ValueError("--api-server-stop needs the server's control (webui.main passes it)")
        routers.append(behind_auth("/sdapi/v1", server.create_control_router(services, server_control)))
    return routers
