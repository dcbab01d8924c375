"""Stopping, restarting and killing the running server: what A1111's server-* routes (`--api-server-stop`,
modules/api/routes/server.py) and the UI's Extensions tab (its restart) act through.

webui.main owns the uvicorn server: it hands it to a ServerControl, runs it, and re-executes itself when a
restart was asked for.
"""
from __future__ import annotations

import os


class ServerControl:
    """What the server-* routes and the Extensions tab do to the running process."""

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
