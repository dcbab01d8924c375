"""The Settings tab's pages besides the options (A1111's ui_settings.py): Defaults (the page's current values of
every control → ui-config.json), Sysinfo (a JSON report for bug reports, without secrets), Actions (browser
notifications, the localization template, checkpoint list/unload/load/hashes) and Licenses.

`create_pages` builds them, hidden, in the settings column; `connect_defaults` wires the Defaults page once
every tab exists (it reads the controls of all of them, as ui_config.apply_ui_config does).
"""
from __future__ import annotations

import html
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from modules.jobs import QueueFull
from modules.paths import PROJECT_ROOT
from modules.system import licenses, sysinfo
from modules.ui import ui_config
from modules.ui.common import PRIVATE, message_html
from modules.untrusted.json_file import write_json_atomically

# Section id → the title in the settings list; they come after the options' sections, as in A1111.
PAGES = {"defaults": "Defaults", "sysinfo": "Sysinfo", "actions": "Actions", "licenses": "Licenses"}
ACTION_SECONDS = 600   # the longest an action waits for the worker (a generation may run first)

# A1111's "Download localization template": every text of the page as {"text": "text"}, saved as a file.
LOCALIZATION_JS = """() => {
    const texts = new Set();
    const root = document.querySelector('gradio-app') || document.body;
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const skip = new Set(['SCRIPT', 'STYLE', 'TEXTAREA']);
    while (walker.nextNode()) {
        const node = walker.currentNode;
        const text = node.textContent.trim();
        if (text && !skip.has(node.parentElement?.tagName) && !/^[\\d\\s.,:/%-]+$/.test(text)) texts.add(text);
    }
    root.querySelectorAll('[placeholder], [title]').forEach((element) => {
        for (const name of ['placeholder', 'title']) {
            const text = (element.getAttribute(name) || '').trim();
            if (text) texts.add(text);
        }
    });
    const template = {};
    [...texts].sort().forEach((text) => { template[text] = text; });
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([JSON.stringify(template, null, 4)], {type: 'application/json'}));
    link.download = 'localization.json';
    document.body.appendChild(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
}"""
NOTIFICATIONS_JS = """() => {
    if (!('Notification' in window)) { return; }
    Notification.requestPermission().then((answer) => {
        if (answer === 'granted') { new Notification('Stable Diffusion', {body: 'Notifications are on.'}); }
    });
}"""


@dataclass
class SettingsPages:
    columns: dict[str, gr.Column]   # page id → its column (shown when its name is picked in the list)
    defaults_view: gr.Button
    defaults_apply: gr.Button
    defaults_review: gr.HTML
    licenses: gr.HTML


# ------------------------------------------------------------------ Defaults

def default_controls(tabs: gr.Tabs) -> dict[str, Any]:
    """ui-config.json key ("txt2img/Sampling steps/value") → component, for every control whose value a default
    is kept for, under the top-level tabs ui_config covers."""
    found: dict[str, Any] = {}
    for tab in tabs.children:
        if not isinstance(tab, gr.Tab) or tab.id in ui_config.SKIPPED_TABS:
            continue
        for prefix, component in ui_config.walk(tab, str(tab.id)):
            if any(name == "value" for name, _ in ui_config.fields(component)):
                found.setdefault(f"{prefix}/value", component)
    return found


def changed_defaults(saved: dict, values: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved default, value on the page) for each control the user changed (A1111's `iter_changes`)."""
    changes = []
    for key, new in values.items():
        old = saved.get(key)
        if new is None and old == "":
            continue
        if new == old or (old is None and new in ("", [])) or not sysinfo.jsonable(new):
            continue
        changes.append((key, old, new))
    return changes


def defaults_table(changes: list[tuple[str, Any, Any]]) -> str:
    rows = "".join(f"<tr><td>{html.escape(key)}</td><td>{_shown(old)}</td><td>{_shown(new)}</td></tr>"
                   for key, old, new in changes) or "<tr><td colspan=3>No changes</td></tr>"
    return (f'<table id="ui_defaults_changes"><thead><tr><th>Path</th><th>Old value</th><th>New value</th></tr>'
            f"</thead><tbody>{rows}</tbody></table>")


def apply_defaults(path: Path, values: dict[str, Any]) -> str:
    """Write the changed values to ui-config.json (atomically); the message says how many."""
    saved, usable = ui_config.read_ui_config(path)
    if not usable:
        return message_html(f"{path.name} is damaged: nothing written. Fix or remove it first.", "warning")
    changes = changed_defaults(saved, values)
    if not changes:
        return message_html("No changes.")
    write_json_atomically(path, {**saved, **{key: new for key, _, new in changes}})
    return message_html(f"Wrote {len(changes)} changes to {path.name}; they apply after a restart.") + \
        defaults_table(changes)


def _shown(value) -> str:
    if value is None:
        return "<span class='ui-defaults-none'>None</span>"
    return html.escape(json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value)


# ------------------------------------------------------------------ Sysinfo, Licenses

def sysinfo_report(services) -> dict:
    from modules.addons import extensions

    try:
        found = extensions.discover(services.paths, services.options, services.args)
    except Exception:  # noqa: BLE001 - the report is still useful without the extensions
        found = []
    return sysinfo.collect(services.args, services.paths, dict(services.options.as_dict()), found, PROJECT_ROOT)


def write_sysinfo(services) -> Path:
    """The report as sysinfo-<date>.json in a temp folder of this process (one file, replaced each time)."""
    folder = Path(tempfile.gettempdir()) / "webui-sysinfo"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("sysinfo-*.json"):
        old.unlink(missing_ok=True)
    path = folder / f"sysinfo-{time.strftime('%Y-%m-%d-%H-%M')}.json"
    path.write_text(sysinfo.to_json(sysinfo_report(services)), encoding="utf-8")
    return path


def licenses_html(project_root: Path = PROJECT_ROOT) -> str:
    own = licenses.project_license(project_root)
    parts = ["<h2>This project</h2>",
             _details(own[0], own[1]) if own else "<p>The project folder holds no license file.</p>",
             "<h2>Packages it runs on</h2>", "<p>Read from the installed packages (requirements.txt).</p>"]
    for package in licenses.dependency_licenses(project_root):
        version = html.escape(package.version) if package.version else "not installed"
        title = f"{html.escape(package.name)} {version} — {html.escape(package.license or 'license not stated')}"
        texts = "".join(_details(name, text) for name, text in package.texts)
        parts.append(f'<div class="license"><h3>{title}</h3>{texts}</div>')
    return f'<div id="licenses">{"".join(parts)}</div>'


def _details(name: str, text: str) -> str:
    return f"<details><summary>{html.escape(name)}</summary><pre>{html.escape(text)}</pre></details>"


# ------------------------------------------------------------------ Actions

def _wait(job, done: str) -> str:
    if not job.done.wait(ACTION_SECONDS):
        return message_html("Still waiting for the worker; it will be done after the jobs before it.", "warning")
    if job.state == "failed":
        return message_html(job.error or "failed", "warning")
    return message_html(done if job.state == "done" else f"Not done: {job.state}.")


def hash_all_checkpoints(services) -> str:
    """Every checkpoint's sha256 (from the hash cache when known), on the worker, which reads the files."""
    def run(job):
        infos = services.registry.items()
        for number, info in enumerate(infos):
            if job.should_stop:
                break
            job.set_progress(number, len(infos))
            services.registry.ensure_hash(info)
        return sum(1 for info in infos if info.sha256), len(infos)

    try:
        job = services.queue.submit("checkpoint-hash", run)
    except QueueFull as error:
        return message_html(str(error), "warning")
    answer = _wait(job, "")
    if job.state != "done":
        return answer
    hashed, total = job.result
    note = " (hashing is off: --no-hashing)" if getattr(services.args, "no_hashing", False) else ""
    return message_html(f"{hashed} of {total} checkpoints have a hash{note}.")


def _unload(services) -> str:
    try:
        return _wait(services.submit_model_unload(), "Unloaded the checkpoint from RAM and VRAM.")
    except QueueFull as error:
        return message_html(str(error), "warning")


def _load(services) -> str:
    try:
        job = services.submit_model_reload()
    except QueueFull as error:
        return message_html(str(error), "warning")
    answer = _wait(job, "Loaded the checkpoint.")
    return message_html(f"Loaded {job.result}.") if job.state == "done" and job.result else answer


def _refresh(services) -> str:
    services.refresh_checkpoints()
    return message_html(f"{len(services.registry.items())} checkpoints found.")


# ------------------------------------------------------------------ the pages

def create_pages(services) -> SettingsPages:
    """The four pages, hidden, where the settings' sections are; call inside the settings column."""
    columns = {}
    quiet = {"show_progress": "hidden", "api_visibility": PRIVATE}
    path = services.paths.ui_config_file
    with gr.Column(visible=False, elem_id="settings_defaults") as columns["defaults"]:
        gr.HTML(f"<h2>Defaults</h2><p>This page changes the default values of the controls on the other tabs. "
                f"Change them there, press <b>View changes</b> to review, then <b>Apply</b> to write them to "
                f"{html.escape(str(path))}. New defaults apply after a restart.</p>", js_on_load=None)
        with gr.Row():
            view = gr.Button("View changes", elem_id="ui_defaults_view")
            apply = gr.Button("Apply", variant="primary", elem_id="ui_defaults_apply")
        review = gr.HTML("", elem_id="ui_defaults_review", js_on_load=None)
    with gr.Column(visible=False, elem_id="settings_sysinfo") as columns["sysinfo"]:
        gr.HTML("<h2>Sysinfo</h2><p>System information for a bug report: platform, Python, torch and the GPU, the "
                "flags, extensions, settings and packages. Logins and keys are hidden.</p>", js_on_load=None)
        make_sysinfo = gr.Button("Download system info", elem_id="sysinfo_download")
        sysinfo_file = gr.File(None, label="System info", interactive=False, visible=False, elem_id="sysinfo_file")
        sysinfo_text = gr.Code(None, language="json", label="System info", visible=False, interactive=False,
                               elem_id="sysinfo_text")
    with gr.Column(visible=False, elem_id="settings_actions") as columns["actions"]:
        gr.HTML("<h2>Actions</h2>", js_on_load=None)
        with gr.Row():
            notifications = gr.Button("Request browser notifications", elem_id="request_notifications")
            localization = gr.Button("Download localization template", elem_id="download_localization")
        with gr.Row():
            refresh = gr.Button("Reload checkpoints", elem_id="sett_refresh_checkpoints")
            unload = gr.Button("Unload SD checkpoint (free RAM and VRAM)", elem_id="sett_unload_sd_model")
            load = gr.Button("Load SD checkpoint", elem_id="sett_reload_sd_model")
        hashes = gr.Button("Calculate hash for all checkpoints", elem_id="calculate_all_checkpoint_hash")
        action_result = gr.HTML("", elem_id="settings_actions_result", js_on_load=None)
    with gr.Column(visible=False, elem_id="settings_licenses") as columns["licenses"]:
        gr.HTML("<h2>Licenses</h2>", js_on_load=None)
        licenses_page = gr.HTML("", js_on_load=None, elem_id="settings_licenses_text")

    def sysinfo_download():
        path = write_sysinfo(services)
        return gr.update(value=str(path), visible=True), gr.update(value=path.read_text(encoding="utf-8"),
                                                                   visible=True)

    make_sysinfo.click(sysinfo_download, outputs=[sysinfo_file, sysinfo_text], **quiet)
    notifications.click(None, js=NOTIFICATIONS_JS, **quiet)
    localization.click(None, js=LOCALIZATION_JS, **quiet)
    refresh.click(lambda: _refresh(services), outputs=[action_result], **quiet)
    unload.click(lambda: _unload(services), outputs=[action_result], **quiet)
    load.click(lambda: _load(services), outputs=[action_result], **quiet)
    hashes.click(lambda: hash_all_checkpoints(services), outputs=[action_result], **quiet)
    return SettingsPages(columns, view, apply, review, licenses_page)


def connect_section_list(pages: SettingsPages, section_list: gr.Radio) -> None:
    """The Licenses page reads the packages' metadata when it is first shown, not with every page load."""
    section_list.input(lambda section, shown: licenses_html() if section == "licenses" and not shown else gr.skip(),
                       inputs=[section_list, pages.licenses], outputs=[pages.licenses], show_progress="hidden",
                       api_visibility=PRIVATE)


def connect_defaults(pages: SettingsPages, path: Path, tabs: gr.Tabs) -> None:
    """View and Apply read every control's value on the page (call once all the tabs are built)."""
    controls = default_controls(tabs)
    keys = list(controls)

    def view(*values):
        saved, _ = ui_config.read_ui_config(path)
        return defaults_table(changed_defaults(saved, dict(zip(keys, values))))

    def apply(*values):
        try:
            return apply_defaults(path, dict(zip(keys, values)))
        except OSError as error:
            return message_html(f"Could not write {path.name}: {error.strerror or error}", "warning")

    quiet = {"show_progress": "hidden", "api_visibility": PRIVATE}
    pages.defaults_view.click(view, inputs=list(controls.values()), outputs=[pages.defaults_review], **quiet)
    pages.defaults_apply.click(apply, inputs=list(controls.values()), outputs=[pages.defaults_review], **quiet)
