"""The server itself: GET /sdapi/v1/memory, /internal/ping ("is it up?"), and with --api-server-stop A1111's POST
/sdapi/v1/server-stop, /server-restart and /server-kill.

Each server-* route answers first and acts afterwards (a background task runs once the response is sent), so the
client always gets its reply before the process goes away.
"""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from starlette.background import BackgroundTask

from modules.api.server import ServerControl
from modules.services import Services


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    @router.get("/memory")
    def memory():
        from modules.devices import memory_stats

        return memory_stats(services.devices.device)

    return router


def create_internal_router() -> APIRouter:
    router = APIRouter()

    @router.get("/ping")
    def ping():   # "is the server up?", e.g. after a restart
        return {}

    return router


def create_control_router(services: Services, control: ServerControl) -> APIRouter:
    router = APIRouter()

    def stop_jobs_then(action):
        """Interrupt the running job and cancel the queued ones, so that the requests waiting on them answer
        at once instead of holding the graceful shutdown; then `action`."""
        def run():
            for job in services.queue.pending():
                services.queue.interrupt(job.id)
            services.queue.interrupt()
            action()

        return BackgroundTask(run)

    @router.post("/server-stop", response_class=PlainTextResponse)
    def server_stop():
        return PlainTextResponse("Stopping.", background=stop_jobs_then(control.stop))

    @router.post("/server-restart", response_class=PlainTextResponse)
    def server_restart():
        return PlainTextResponse("Restarting.", background=stop_jobs_then(control.restart))

    @router.post("/server-kill", response_class=PlainTextResponse)
    def server_kill():
        return PlainTextResponse("Killing.", background=BackgroundTask(control.kill))

    return router
