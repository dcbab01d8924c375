"""Composition root: parse the flags, build the backend services, mount the API and the UI, serve.

    python webui.py [A1111 flags]      (launch.py prepares the environment first, then runs this)
"""
from __future__ import annotations

import logging
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # offline always: nothing is fetched at run time
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")

STARTED = time.perf_counter()

from fastapi import FastAPI  # noqa: E402
from starlette.routing import Mount  # noqa: E402

from modules import cmd_args, services as services_module, shared  # noqa: E402
from modules.version import VERSION  # noqa: E402

log = logging.getLogger("webui")
# How long a stop waits for open requests; the UI's event streams never end on their own.
GRACEFUL_SHUTDOWN_SECONDS = 5


def create_app(services: services_module.Services, server_control=None) -> FastAPI:
    """The ASGI app: /sdapi/v1 when --api or --nowebui, the Gradio UI at / unless --nowebui.
    `server_control` (modules.api.server.ServerControl) serves the --api-server-stop routes."""
    from modules.api.api import create_routers
    from modules.api.docs_pages import install_docs
    from modules.api.middleware import install_middleware

    args = services.args
    services.load_scripts()
    app = FastAPI(title="Stable Diffusion web UI API", version=VERSION, docs_url=None, redoc_url=None)
    install_docs(app)   # /docs and /redoc with their assets served here, not from a CDN
    install_middleware(app, args)
    if args.api or args.nowebui:
        for router in create_routers(services, server_control):
            app.include_router(router)
    blocks = None
    if not args.nowebui:
        import gradio as gr

        from modules.ui import create_ui, extension_files, launch_options

        extension_files.install(app, services)   # A1111's file=<path> for extensions' own files
        blocks = create_ui(services, server_control=server_control)
        shared.demo = blocks   # A1111's page, for extensions that read shared.demo
        app = gr.mount_gradio_app(app, blocks, path="/", **launch_options(services))
    else:   # the scripts' default args come from their ui(), built off-page
        from modules.ui.scripts import record_defaults

        record_defaults(services.scripts)
    services.scripts.callbacks.fire("app_started", blocks, app)   # extensions add their routes here
    # The UI is mounted at "/", which would answer for every path added after it: it goes last.
    mounts = [route for route in app.router.routes if isinstance(route, Mount) and route.path == ""]
    app.router.routes[:] = [route for route in app.router.routes if route not in mounts] + mounts
    return app


def prepare_extensions(parser, known) -> None:
    """Before the flags are parsed: run enabled extensions' install.py (unless --skip-install) and their
    preload.py, which may add flags. Failures are reported, never fatal."""
    from modules import paths as paths_module
    from modules.addons import extensions, pip_constraints, script_loading
    from modules.untrusted import json_file

    paths = paths_module.from_args(known)
    settings = json_file.read_json_object(paths.config_file) if paths.config_file.is_file() else {}
    found = [extension for extension in extensions.discover(paths, settings, known) if extension.enabled]
    if not known.skip_install:
        for extension in found:
            ok, output = extensions.run_installer(extension)
            report = pip_constraints.record(paths.extensions, extension.name, ok, output)
            if report:   # also listed in the Extensions tab
                log.error("Extension %s: %s", extension.name, report)
    script_loading.preload(cmd_args.ExtensionFlags(parser), found)


def exposure_warnings(args) -> list[str]:
    """Loud warnings for a server other machines can reach without a password."""
    if not cmd_args.is_non_local(args):
        return []
    open_parts = []
    if (args.api or args.nowebui) and not args.api_auth:
        open_parts.append("the API (/sdapi/v1) has no --api-auth")
    if not args.nowebui and not cmd_args.gradio_credentials(args):
        open_parts.append("the UI has no --gradio-auth")
    banner = "*" * 78
    return [f"{banner}\n  WARNING: listening on the network and {part}: anyone who can reach this machine can "
            f"use it.\n{banner}" for part in open_parts]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = cmd_args.parse_args(argv, preload=prepare_extensions)
    if sys.version_info < (3, 10) and not args.skip_python_version_check:
        sys.exit("Python 3.10 or newer is needed (3.11 is tested); --skip-python-version-check to try anyway")
    services = services_module.create(args)
    log.info("Device: %s", services.devices.describe())
    if not services.registry.items():
        log.warning("No checkpoint found. Put a .safetensors or .ckpt file in %s, then press the refresh "
                    "button next to the checkpoint list.", services.paths.checkpoints)
    services.load_initial_model()
    from modules.api.server import ServerControl

    control = ServerControl()
    app = create_app(services, control)

    import uvicorn

    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    for warning in exposure_warnings(args):
        log.warning("%s", warning)
    log.info("Starting on http://%s:%d (set up in %.1fs)", host, args.port, time.perf_counter() - STARTED)
    if args.autolaunch and not args.nowebui:
        import threading
        import webbrowser

        threading.Timer(2.0, webbrowser.open, args=(f"http://127.0.0.1:{args.port}/",)).start()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=args.port, log_level="warning",
                                           timeout_keep_alive=args.timeout_keep_alive,
                                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS))
    control.server = server
    try:
        server.run()
    finally:
        services.shutdown()
    if control.restart_requested:
        log.info("Restarting")
        # __main__.__file__ is absolute (Python 3.9+); argv[0] may be relative to a directory launch.py has left.
        script = sys.modules["__main__"].__file__
        os.execv(sys.executable, [sys.executable, script, *argv])


if __name__ == "__main__":
    main()
