"""The Extensions tab (A1111 ui_extensions.py): the installed extensions with enable/disable, "Apply and restart
UI", "Check for updates", and "Install from URL". The handlers are plain functions of their inputs (the tests call
them directly); modules/addons/extensions.py does the work. Every change is refused on a server reachable from the
network unless --enable-insecure-extension-access (A1111's check_access); listing stays allowed.
"""
from __future__ import annotations

import html
import threading
import time

import gradio as gr

from modules.addons import extensions, pip_constraints
from modules.cmd_args import is_non_local
from modules.ui.common import PRIVATE, escape_multiline, message_html

RESTART_DELAY = 1.0   # seconds: the browser gets the handler's answer before the server goes away

# After "Apply and restart": wait for the server to go down, then for it to answer again, then reload the page.
RELOAD_AFTER_RESTART_JS = """() => {
    if (!document.querySelector('#extensions_result [data-restarting]')) return;
    const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const answers = () => fetch(location.pathname, {cache: 'no-store'}).then((r) => r.ok, () => false);
    (async () => {
        for (let i = 0; i < 30 && await answers(); i++) await wait(500);
        for (let i = 0; i < 600; i++) { if (await answers()) { location.reload(); return; } await wait(1000); }
    })();
}"""


def _found(services) -> list[extensions.Extension]:
    return extensions.discover(services.paths, services.options, services.args)


def _date(timestamp: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp is not None else ""


def _link(url: str) -> str:
    if url.startswith("https://"):
        return f'<a href="{html.escape(url)}" target="_blank" rel="noopener noreferrer">{html.escape(url)}</a>'
    return html.escape(url)


def table_html(found: list[extensions.Extension], statuses: dict[str, str] | None = None,
               load_errors: list | None = None) -> str:
    """The installed extensions as an HTML table; every value escaped (names, URLs and errors come from disk)."""
    statuses = statuses or {}
    if not found:
        return message_html("No extensions installed: put them in extensions/ or use Install from URL.")
    rows = []
    for item in found:
        name = html.escape(item.name) + (' <span class="extension-builtin">(built-in)</span>' if item.is_builtin
                                          else "")
        failed = [error for error in load_errors or [] if error.extension == item.name]
        state = (_failed_state(item, failed) if item.enabled and failed else "enabled" if item.enabled
                 else f"disabled: {item.disabled_reason}")
        problems = "".join(f'<div class="extension-problem">{escape_multiline(problem)}</div>'
                           for problem in item.problems)
        problems += "".join(f'<div class="extension-problem">{html.escape(error.file)}: '
                            f"{escape_multiline(error.message)}</div>" for error in failed)
        rows.append(
            f"<tr><td>{name}{problems}</td><td>{html.escape(state)}</td><td>{_link(item.remote)}</td>"
            f"<td>{html.escape(item.branch)}</td><td>{html.escape(item.version)}</td>"
            f"<td>{html.escape(_date(item.commit_date))}</td>"
            f"<td>{html.escape(statuses.get(item.name, ''))}</td></tr>")
    errors = "".join(
        f"<li><b>{html.escape(error.extension)}</b> {html.escape(error.file)}: {escape_multiline(error.message)}</li>"
        for error in load_errors or [])
    errors = (f'<div class="message warning">These failed to load or run and were skipped (the rest works):<ul>{errors}</ul></div>'
              if errors else "")
    return (f'{errors}<table id="extensions" class="extensions-table"><thead><tr><th>Extension</th><th>State</th>'
            "<th>URL</th><th>Branch</th><th>Version</th><th>Date</th><th>Update</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _failed_state(item: extensions.Extension, failed: list) -> str:
    """An enabled extension with failures: "failed to load" when none of its scripts/*.py imported (or it
    was not loaded at all), else how many of its parts failed."""
    files = {path.name for path in (item.path / "scripts").glob("*.py")} if (item.path / "scripts").is_dir() else set()
    not_imported = {error.file for error in failed}
    if any(error.file == "metadata.ini" for error in failed) or (files and files <= not_imported):
        return "enabled, failed to load"
    return f"enabled, {len(failed)} failure{'s' if len(failed) > 1 else ''}"


def enabled_choices(found: list[extensions.Extension], options) -> tuple[list[tuple[str, str]], list[str]]:
    """The checkbox choices (label, name) and the names ticked: those not in the `disabled_extensions` setting.
    The flags do not untick anything, so applying under --disable-all-extensions keeps the user's choices."""
    disabled = set(options.get("disabled_extensions", []) or [])
    names = list(dict.fromkeys(item.name for item in found))
    builtin = {item.name for item in found if item.is_builtin}
    choices = [(f"{name} (built-in)" if name in builtin else name, name) for name in names]
    return choices, [name for name in names if name not in disabled]


def listing(services, statuses: dict[str, str] | None = None):
    """(table, enabled checkboxes, "Disable all extensions") as they are now; run on every page load."""
    found = _found(services)
    choices, ticked = enabled_choices(found, services.options)
    return (table_html(found, statuses, services.scripts.failures()), gr.update(choices=choices, value=ticked),
            services.options.get("disable_all_extensions", "none"))


def access_note(args) -> str:
    if is_non_local(args) and not args.enable_insecure_extension_access:
        return message_html("Installing, updating and enabling extensions is disabled because the server is "
                            "reachable from the network (--listen / --server-name); start it with "
                            "--enable-insecure-extension-access to allow it.", "warning")
    return ""


def check_updates(services, statuses: dict[str, str] | None):
    """Ask each user extension's remote whether it has new commits. Returns (message, table, the "Update"
    checkboxes offering the ones that have, statuses)."""
    statuses = dict(statuses or {})
    try:
        extensions.check_access(services.args)
    except extensions.ExtensionError as error:
        return message_html(str(error), "error"), gr.update(), gr.update(), statuses
    found = _found(services)
    failures = []
    for item in found:
        if item.is_builtin or not item.remote:
            continue
        try:
            statuses[item.name] = "new commits" if extensions.check_for_updates(item) else "latest"
        except extensions.ExtensionError as error:
            statuses[item.name] = "unknown"
            failures.append(str(error))
    behind = [name for name, status in statuses.items() if status == "new commits"]
    summary = (f"Updates available: {', '.join(behind)}. Those ticked under Update are updated by Apply." if behind
               else "No updates found." if failures else "Every extension with a git remote is up to date.")
    message = message_html("\n".join([*failures, summary]), "warning" if failures else "info")
    return (message, table_html(found, statuses, services.scripts.failures()),
            gr.update(choices=behind, value=behind), statuses)


def apply(services, server_control, enabled: list[str], disable_all: str, to_update: list[str] | None):
    """Update the ticked extensions, store which are enabled, then restart the server (or say a restart is
    needed when this server cannot restart itself). Returns the message."""
    try:
        extensions.check_access(services.args)
        found = {item.name: item for item in _found(services)}
        unknown = sorted(set(to_update or []) - set(found))
        if unknown:
            raise extensions.ExtensionError(f"Update: no extension named {', '.join(unknown)}")
        lines, failed = [], False
        for name in to_update or []:
            try:
                lines.append(f"{name}: updated to {extensions.update(found[name])[:8]}")
            except extensions.ExtensionError as error:
                lines.append(str(error))
                failed = True
        enabled = set(enabled or [])
        extensions.set_enabled(services.options, {name: name in enabled for name in found}, disable_all)
    except ValueError as error:   # ExtensionError, or a setting refused (--freeze-settings)
        return message_html(str(error), "error")
    if failed:
        return message_html("\n".join([*lines, "Settings saved; not restarting because an update failed."]),
                            "warning")
    if server_control is None:
        return message_html("\n".join([*lines, "Saved. Restart the web UI for the changes to take effect."]))
    threading.Timer(RESTART_DELAY, server_control.restart).start()
    return (f'<div data-restarting="1">{message_html(chr(10).join([*lines, "Saved. Restarting the web UI…"]))}'
            "</div>")


def install(services, url: str, branch: str, dirname: str):
    """Install from a git URL. Returns (message, table, enabled checkboxes, disable-all) refreshed."""
    try:
        extensions.check_access(services.args)
        extension, installer = extensions.install_from_url(services.paths, url, branch or None, dirname or None)
    except extensions.ExtensionError as error:
        return message_html(str(error), "error"), gr.update(), gr.update(), gr.update()
    lines = [f"Installed into {extension.path}. Use \"Apply and restart UI\" on the Installed tab to load it."]
    kind = "info"
    if installer is not None:
        ok, output = installer
        report = pip_constraints.record(services.paths.extensions, extension.name, ok, output)
        lines.append("install.py ran." + (f"\n{output}" if output else "") if ok
                     else f"{extension.name}: {report}")
        kind = "info" if ok else "warning"
    return (message_html("\n".join(lines), kind), *listing(services))


def create_tab(services, demo: gr.Blocks | None = None, server_control=None) -> None:
    args = services.args
    allowed = not is_non_local(args) or args.enable_insecure_extension_access
    table, enabled_update, disable_all_value = listing(services)
    gr.Markdown("There is no \"Available\" tab: A1111's extension index is fetched from the internet, and this "
                "web UI never goes online by itself. Install an extension by its git URL instead.")
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="installed"):
            gr.HTML(access_note(args), js_on_load=None)
            with gr.Row(elem_id="extensions_installed_top"):
                apply_button = gr.Button("Apply and restart UI" if server_control else "Apply", variant="primary",
                                         elem_id="extensions_apply", interactive=allowed)
                check_button = gr.Button("Check for updates", elem_id="extensions_check", interactive=allowed)
            result = gr.HTML("", elem_id="extensions_result", js_on_load=None)
            enabled = gr.CheckboxGroup(label="Enabled extensions", elem_id="extensions_enabled",
                                       choices=enabled_update["choices"], value=enabled_update["value"],
                                       interactive=allowed)
            disable_all = gr.Radio(label="Disable all extensions", choices=list(extensions.DISABLE_ALL_CHOICES),
                                   value=disable_all_value, elem_id="extensions_disable_all", interactive=allowed,
                                   info="extra: only the built-in ones load; all: none loads")
            to_update = gr.CheckboxGroup(label="Update (git reset --hard: local edits in these folders are lost)",
                                         choices=[], elem_id="extensions_update", interactive=allowed)
            installed = gr.HTML(table, elem_id="extensions_installed_html", js_on_load=None)
        with gr.Tab("Install from URL", id="install_from_url"):
            gr.HTML(access_note(args), js_on_load=None)
            url = gr.Textbox(label="URL for extension's git repository (https)", elem_id="extension_to_install",
                             interactive=allowed)
            branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for default main branch",
                                elem_id="extension_to_install_branch", interactive=allowed)
            dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto",
                                 elem_id="extension_to_install_dirname", interactive=allowed)
            install_button = gr.Button("Install", variant="primary", elem_id="extension_install",
                                       interactive=allowed)
            install_result = gr.HTML("", elem_id="extension_install_result", js_on_load=None)
    statuses = gr.State({})

    check_button.click(lambda state: check_updates(services, state), inputs=[statuses],
                       outputs=[result, installed, to_update, statuses], api_visibility=PRIVATE)
    apply_button.click(lambda names, everything, updates: apply(services, server_control, names, everything, updates),
                       inputs=[enabled, disable_all, to_update], outputs=[result], api_visibility=PRIVATE
                       ).then(None, js=RELOAD_AFTER_RESTART_JS)
    install_button.click(lambda *values: install(services, *values), inputs=[url, branch, dirname],
                         outputs=[install_result, installed, enabled, disable_all], api_visibility=PRIVATE)
    if demo is not None:   # a reloaded page shows what is on disk now, not what was there at start
        demo.load(lambda state: listing(services, state), inputs=[statuses], outputs=[installed, enabled, disable_all],
                  show_progress="hidden", api_visibility=PRIVATE)
