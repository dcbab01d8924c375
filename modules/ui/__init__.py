"""The Gradio UI: `create_ui(services)` builds the page, `launch_options(services)` the mount options.

webui.py mounts it with `gr.mount_gradio_app(app, create_ui(services), path="/", **launch_options(services))`.
In Gradio 6 the theme, CSS and head scripts are options of mounting (or `launch`), not of `gr.Blocks`.
Only tabs that work are shown.

As A1111's `modules.ui` it also holds the names extensions import from there (`create_refresh_button`, `gr_show`,
the symbols, `txt2img_paste_fields`, …: `a1111_names.py`); other A1111 names fail naming the extension.
"""
from __future__ import annotations

import contextlib
import html
import json
import logging
from pathlib import Path

import gradio as gr
from gradio.context import Context

from modules.untrusted import user_files
from modules.cmd_args import gradio_credentials
from modules.ui import extensions as extensions_tab, extras, img2img, pnginfo, send_to, topbar, txt2img
from modules.ui import merger as merger_tab
from modules.ui import controlnet_tab, extension_files, gallery_buttons, settings, settings_pages, train, ui_config
from modules.ui import a1111_extra_networks, a1111_infotext, a1111_paste_buttons, page_options
from modules.addons.missing_names import missing_name
from modules.script_callbacks import error_line
from modules.ui.a1111_names import *  # noqa: F403 - A1111's modules.ui names (its __all__)
from modules.ui.a1111_names import SET_WITH_THE_PAGE, versions_html
from modules.ui.scripts import check_events

HERE = Path(__file__).resolve().parent
RESERVED_TAB_IDS = {"txt2img", "img2img", "controlnet", "extras", "pnginfo", "modelmerger", "train", "settings",
                    "extensions"}
log = logging.getLogger(__name__)


def create_ui(services, server_control=None) -> gr.Blocks:
    """`server_control` (modules.api.server.ServerControl) lets the Extensions tab restart the server."""
    callbacks = services.scripts.callbacks
    # As A1111: extensions register Extra Networks pages in on_before_ui and "Send to" buttons in on_ui_tabs.
    a1111_extra_networks.extra_pages.clear()
    a1111_infotext.reset()
    callbacks.fire("before_ui")
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        bar = topbar.create_topbar(demo, services)
        with gr.Tabs(elem_id="tabs") as tabs:   # A1111's order and tab ids
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                txt2img_tab = txt2img.create_tab(services, demo=demo, topbar=bar)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                img2img_tab = img2img.create_tab(services, demo=demo, topbar=bar)
            with gr.Tab("ControlNet", id="controlnet", elem_id="tab_controlnet"):   # the photo-first workflow
                controlnet_tab.create_tab(services, demo=demo, topbar=bar)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras_tab = extras.create_tab(services, demo=demo)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                pnginfo_tab = pnginfo.create_tab()
            with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger"):
                merger_tab.create_tab(services, demo=demo, topbar=bar)
            with gr.Tab("Train", id="train", elem_id="tab_train"):
                train.create_tab(services, demo=demo, txt2img=txt2img_tab)
            # As in A1111, extensions build their tabs once the generation tabs exist (they may read
            # modules.ui.txt2img_paste_fields), each in its own Blocks, rendered in its tab below.
            a1111_paste_buttons.bind_page(services, demo, tabs, txt2img_tab, img2img_tab, extras_tab)
            with _outside_page():
                extension_tabs = callbacks.ui_tabs_with_origin()
            for script, entry in extension_tabs:   # on_ui_tabs: (gr.Blocks, title, elem_id)
                _extension_tab(entry, script, callbacks.failures)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings_tab = settings.create_tab(services, demo=demo)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                extensions_tab.create_tab(services, demo=demo, server_control=server_control)
        send_to.connect(services, tabs=tabs, topbar=bar, txt2img=txt2img_tab, img2img=img2img_tab,
                        extras=extras_tab, pnginfo=pnginfo_tab)
        a1111_paste_buttons.connect_paste_params_buttons()   # extensions' "Send to" buttons (A1111's ParamBinding)
        page_options.connect(demo, services, bar)   # window.opts
        gr.HTML(f'<div class="versions" style="text-align: center; font-size: 85%; opacity: 0.85">'
                f'{versions_html()}</div>', elem_id="footer", js_on_load=None)   # A1111's footer line
        ui_config.apply_ui_config(services.paths.ui_config_file, tabs)   # the defaults saved in ui-config.json
        settings_pages.connect_defaults(settings_tab.pages, services.paths.ui_config_file, tabs)
    return demo


@contextlib.contextmanager
def _outside_page():
    """Blocks made here are not children of the page being built (Gradio adds a new Blocks to the one open)."""
    saved = Context.root_block, Context.block
    Context.root_block = Context.block = None
    try:
        yield
    finally:
        Context.root_block, Context.block = saved


def __getattr__(name: str):
    """A1111's `modules.ui` names this web UI does not have fail naming the extension that asked."""
    if name.startswith("__"):
        raise AttributeError(name)
    if name in SET_WITH_THE_PAGE:   # txt2img_paste_fields, img2img_paste_fields
        tab = a1111_infotext.paste_fields.get(name.removesuffix("_paste_fields"))
        if tab is None:
            raise missing_name("modules.ui", name, "it exists once the page's tabs are built (read it in on_ui_tabs)")
        return tab["fields"]
    raise missing_name("modules.ui", name)


def _extension_tab(entry, script: str = "", failures: dict | None = None) -> None:
    """One extension's tab; a malformed entry, an event wired to something that is not a component, or a failing
    render is logged, listed in the Extensions tab (`failures`, by the registering file) and left out: the page
    still builds."""
    failures = {} if failures is None else failures
    if not (isinstance(entry, (tuple, list)) and len(entry) == 3 and isinstance(entry[0], gr.Blocks)):
        log.error("on_ui_tabs returned %r, not (gr.Blocks, title, elem_id): skipped", entry)
        failures[(script, "on_ui_tabs tab")] = f"returned {type(entry).__name__}, not (gr.Blocks, title, elem_id)"
        return
    blocks, title, elem_id = entry
    where = f"on_ui_tabs tab {str(title)!r}"
    if elem_id in RESERVED_TAB_IDS:
        log.error("Extension tab %r skipped: its id %r is one of the web UI's own", title, elem_id)
        failures[(script, where)] = f"tab id {elem_id!r} is one of the web UI's own"
        return
    try:
        check_events(blocks, set())
    except TypeError as error:
        log.error("Extension tab %r skipped: %s", title, error)
        failures[(script, where)] = error_line(error)
        return
    with gr.Tab(str(title), id=str(elem_id), elem_id=f"tab_{elem_id}"):
        root = Context.root_block
        events_before = set(root.fns) if root is not None else set()
        try:
            blocks.render()
        except Exception as error:
            log.exception("Extension tab %r could not be shown", title)
            for fn_id in set(root.fns) - events_before if root is not None else ():
                del root.fns[fn_id]
            failures[(script, where)] = error_line(error)
            gr.HTML(f"<p class='script-error'>{html.escape(str(title))}: could not be shown "
                    f"({html.escape(type(error).__name__)}: {html.escape(str(error))})</p>")


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
    """Our scripts (script.js, then A1111's page API a1111.js), then each enabled extension's javascript/*.js
    (inlined: the page loads nothing else)."""
    script = (HERE / "script.js").read_text(encoding="utf-8")
    settings = {"theme": getattr(services.args, "theme", None)}
    parts = [f"<script>window.webuiSettings = {json.dumps(settings)};\n{script}</script>",
             f"<script>\n{(HERE / 'a1111.js').read_text(encoding='utf-8')}\n</script>"]   # A1111's page API
    for path in services.scripts.javascript:
        code = _read_text(path).replace("</script", "<\\/script")   # cannot close the tag early
        parts.append(f"<script data-extension-file={json.dumps(path.name)}>\n{code}\n</script>")
    return "\n".join(parts)


def page_css(services) -> str:
    """Our stylesheet, then each enabled extension's style.css."""
    return "\n".join([(HERE / "style.css").read_text(encoding="utf-8"),
                      *(_read_text(path) for path in services.scripts.stylesheets)])


def _read_text(path: Path) -> str:
    try:
        return user_files.read_text(path, errors="replace")
    except OSError as error:   # an extension file that vanished: the page still loads
        return f"/* {path.name}: {error.strerror} */"


def served_paths(services) -> tuple[list[str], list[str]]:
    """Gradio's allowed and blocked paths for /gradio_api/file=: outputs, the Save button's folder (its files
    are offered for download) and every --gradio-allowed-path (Gradio adds its own temp and upload folders).
    The settings file and the --gradio-auth-path logins stay blocked even inside an allowed folder (A1111 users
    often allow the whole data folder)."""
    args = services.args
    save_folder = gallery_buttons.servable_save_folder(services)
    allowed = [str(services.paths.outputs), *([str(save_folder)] if save_folder else []),
               *(str(Path(path).resolve()) for path in args.gradio_allowed_path),
               *(str(root) for root in extension_files.served_roots(services))]   # A1111's file= URLs
    secrets = [services.paths.config_file, args.gradio_auth_path, *extension_files.hidden_entries(services)]
    return allowed, [str(Path(path).resolve()) for path in secrets if path]


MAX_UPLOAD_BYTES = 128 * 1024 * 1024   # as an API request body (modules.api.middleware.MAX_BODY_BYTES)


def launch_options(services) -> dict:
    """Keyword arguments for `gr.mount_gradio_app`: login, served folders, look; nothing that reaches the network."""
    allowed, blocked = served_paths(services)
    options = {
        "allowed_paths": allowed,
        "blocked_paths": blocked,
        "theme": gr.themes.Default(),   # built in; its fonts are served locally
        "css": page_css(services),
        "head": head_html(services),
        "footer_links": ["gradio", "settings"],
        "run_history": False,     # nothing about runs kept in the browser or offered for upload
        "ssr_mode": False,
        "mcp_server": False,
        "enable_monitoring": False,
        "pwa": False,
        "show_error": True,
        "max_file_size": MAX_UPLOAD_BYTES,
    }
    auth = parse_auth(gradio_credentials(services.args))   # --gradio-auth and --gradio-auth-path
    if auth:
        options["auth"] = auth
    return options
