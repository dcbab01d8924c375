"""The Gradio UI: `create_ui(services)` builds the page, `launch_options(services)` the mount options.

webui.py mounts it with `gr.mount_gradio_app(app, create_ui(services), path="/", **launch_options(services))`.
In Gradio 6 the theme, CSS and head scripts are options of mounting (or `launch`), not of `gr.Blocks`.
Only tabs that work are shown.
"""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from modules.cmd_args import gradio_credentials
from modules.ui import extras, img2img, pnginfo, send_to, topbar, txt2img

HERE = Path(__file__).resolve().parent


def create_ui(services) -> gr.Blocks:
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        bar = topbar.create_topbar(demo, services)
        with gr.Tabs(elem_id="tabs") as tabs:   # A1111's order and tab ids
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                txt2img_tab = txt2img.create_tab(services, demo=demo, topbar=bar)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                img2img_tab = img2img.create_tab(services, demo=demo, topbar=bar)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras_tab = extras.create_tab(services, demo=demo)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                pnginfo_tab = pnginfo.create_tab()
        send_to.connect(services, tabs=tabs, topbar=bar, txt2img=txt2img_tab, img2img=img2img_tab,
                        extras=extras_tab, pnginfo=pnginfo_tab)
    return demo


def parse_auth(text: str | None) -> list[tuple[str, str]]:
    """--gradio-auth "user:pass,user2:pass2" → [("user", "pass"), ("user2", "pass2")]; a password may hold ':'."""
    pairs = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user:
            raise ValueError("--gradio-auth must look like user:password[,user2:password2]")
        pairs.append((user, password))
    return pairs


def head_html(services) -> str:
    script = (HERE / "script.js").read_text(encoding="utf-8")
    settings = {"theme": getattr(services.args, "theme", None)}
    return f"<script>window.webuiSettings = {json.dumps(settings)};\n{script}</script>"


def served_paths(services) -> tuple[list[str], list[str]]:
    """Gradio's allowed and blocked paths for /gradio_api/file=: outputs and every --gradio-allowed-path
    (Gradio adds its own temp and upload folders). The settings file and the --gradio-auth-path logins stay
    blocked even inside an allowed folder (A1111 users often allow the whole data folder)."""
    args = services.args
    allowed = [str(services.paths.outputs), *(str(Path(path).resolve()) for path in args.gradio_allowed_path)]
    secrets = [services.paths.config_file, args.gradio_auth_path]
    return allowed, [str(Path(path).resolve()) for path in secrets if path]


def launch_options(services) -> dict:
    """Keyword arguments for `gr.mount_gradio_app`: login, served folders, look; nothing that reaches the network."""
    allowed, blocked = served_paths(services)
    options = {
        "allowed_paths": allowed,
        "blocked_paths": blocked,
        "theme": gr.themes.Default(),   # built in; its fonts are served locally
        "css": (HERE / "style.css").read_text(encoding="utf-8"),
        "head": head_html(services),
        "footer_links": ["gradio", "settings"],
        "run_history": False,     # nothing about runs kept in the browser or offered for upload
        "ssr_mode": False,
        "mcp_server": False,
        "enable_monitoring": False,
        "pwa": False,
        "show_error": True,
    }
    auth = parse_auth(gradio_credentials(services.args))   # --gradio-auth and --gradio-auth-path
    if auth:
        options["auth"] = auth
    return options
