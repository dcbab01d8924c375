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

from modules import cmd_args, services as services_module  # noqa: E402
from modules.version import VERSION  # noqa: E402

log = logging.getLogger("webui")


def create_app(services: services_module.Services) -> FastAPI:
    """The ASGI app: /sdapi/v1 when --api or --nowebui, the Gradio UI at / unless --nowebui."""
    from modules.api.api import create_routers
    from modules.api.middleware import install_middleware

    args = services.args
    app = FastAPI(title="Stable Diffusion web UI API", version=VERSION, docs_url="/docs", redoc_url="/redoc")
    install_middleware(app, args)
    if args.api or args.nowebui:
        for router in create_routers(services):
            app.include_router(router)
    if not args.nowebui:
        import gradio as gr

        from modules.ui import create_ui, launch_options

        blocks = create_ui(services)
        app = gr.mount_gradio_app(app, blocks, path="/", **launch_options(services))
    return app


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = cmd_args.parse_args(sys.argv[1:] if argv is None else argv)
    if sys.version_info < (3, 10) and not args.skip_python_version_check:
        sys.exit("Python 3.10 or newer is needed (3.11 is tested); --skip-python-version-check to try anyway")
    services = services_module.create(args)
    log.info("Device: %s", services.devices.describe())
    if not services.registry.items():
        log.warning("No checkpoint found. Put a .safetensors or .ckpt file in %s, then press the refresh "
                    "button next to the checkpoint list.", services.paths.checkpoints)
    services.load_initial_model()
    app = create_app(services)

    import uvicorn

    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    if cmd_args.is_non_local(args) and args.api and not args.api_auth:
        log.warning("The API is reachable from other machines without --api-auth: anyone on the network "
                    "can use it.")
    log.info("Starting on http://%s:%d (set up in %.1fs)", host, args.port, time.perf_counter() - STARTED)
    if args.autolaunch and not args.nowebui:
        import threading
        import webbrowser

        threading.Timer(2.0, webbrowser.open, args=(f"http://127.0.0.1:{args.port}/",)).start()
    try:
        uvicorn.run(app, host=host, port=args.port, log_level="warning", timeout_keep_alive=30)
    finally:
        services.shutdown()


if __name__ == "__main__":
    main()
