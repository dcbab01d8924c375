"""Stopping, restarting and killing the server over the API: A1111's server-* routes (`--api-server-stop`).

webui.main owns the uvicorn server: it hands it to a ServerControl, runs it, and re-executes itself when a
restart was asked for. Each route answers first and acts afterwards (a background task runs once the
response is sent), so the client always gets its reply before the process goes away.
"""
from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from starlette.background import BackgroundTask

from modules.services import Services


class ServerControl:
    """What the routes do to the running process."""

    def __init__(self):
        self.server = None               # the uvicorn.Server; webui.main sets it once the server exists
        self.restart_requested = False   # read by webui.main after the server has stopped

    def stop(self) -> None:
        # uvicorn's graceful shutdown: stop accepting, let open requests answer, run the app's shutdown.
        self.server.should_exit = True

    def restart(self) -> None:
        self.restart_requested = True
        self.stop()

    def kill(self) -> None:
        os._exit(0)   # A1111's server-kill: no clean-up at all


def create_router(services: Services, control: ServerControl, auth: list) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", dependencies=auth)

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
