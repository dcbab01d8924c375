"""The Settings tab: every option of the registry by section, a search box, "Apply settings" and "Reload UI".

Each option is drawn from its type, or with the component an extension gave it, under A1111's elem_id
`setting_<key>`. Apply saves what changed through `services.update_options`, all or nothing. Options shown in
the quicksettings bar are not repeated here, options without a section are A1111's hidden ones, and with
--hide-ui-dir-config the folder options are left out (as the API leaves them out of GET /options).
"""
from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass

import gradio as gr

from modules.untrusted import json_file
from modules.settings.option_info import OptionInfo
from modules.settings.table import NO_EFFECT_KEYS, OPTIONS
from modules.ui import settings_pages
from modules.ui.common import PRIVATE, message_html, number, slider, tool_button

log = logging.getLogger(__name__)

# Always in the top bar: the extra-network cards, "Send to" and ControlNet switch models through that dropdown.
TOPBAR_ONLY = {"sd_model_checkpoint"}
PLAIN, COMMA, JSON = "plain", "comma", "json"   # how a component's value maps to the option's value
MAX_RADIO_CHOICES = 5
# The search's hidden options (a JSON list of keys) → one CSS rule each, so options drawn later are hidden too.
HIDE_UNMATCHED = """(hidden) => {
    let style = document.getElementById("settings_search_style");
    if (!style) {
        style = document.createElement("style");
        style.id = "settings_search_style";
        document.head.appendChild(style);
    }
    const keys = JSON.parse(hidden || "[]");
    style.textContent = keys.map((key) => `#settings .settings-item:has(#setting_${CSS.escape(key)})`).join(", ")
        + (keys.length ? " { display: none !important; }" : "");
    return [];
}"""


def dynamic_choices(services, key: str) -> list | None:
    """Choices that come from the server's state rather than from the option's definition."""
    if key == "sd_vae":
        choices = services.networks.vaes.choices()
        value = services.options.sd_vae
        return choices if value in choices else [*choices, value]   # a file that went away is still shown
    if key == "upscaler_for_img2img":
        return services.upscalers.names()
    if key == "quicksettings_list":
        return list(services.options.infos())
    return None


def to_component(codec: str, value):
    """An option's value as its component shows it."""
    if codec == COMMA:
        return ", ".join(value or [])
    if codec == JSON:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return value


def from_component(codec: str, info: OptionInfo, key: str, value):
    """A component's value as the option's value (validated later by the options); ValueError names the key."""
    if codec == COMMA:
        return [item.strip() for item in (value or "").split(",") if item.strip()]
    if codec == JSON:
        text = (value or "").strip()
        if not text and info.default is None:
            return None
        try:
            return json_file.parse(text)
        except ValueError:
            if isinstance(info.default, dict):
                raise ValueError(f"{key}: not valid JSON: {text[:80]!r}") from None
            return text   # an option of unknown type: plain text is a string
    if type(info.default) in (int, float):
        return number(value, type(info.default))
    return value


def _typed_component(services, key: str, info: OptionInfo, value, common: dict):
    """The component for an option without one of its own, and its codec."""
    kind = type(info.default)
    args = info.ui_args()
    choices, minimum, maximum = info.bounds()
    dynamic = dynamic_choices(services, key)
    if kind is bool:
        return gr.Checkbox(value=bool(value), **common), PLAIN
    if kind is list:
        if dynamic is not None or choices is not None:
            return gr.Dropdown(choices=list(dynamic or choices), value=value, multiselect=True,
                               allow_custom_value=dynamic is not None, **common), PLAIN
        return gr.Textbox(value=to_component(COMMA, value), **_with_info(common, "separated by commas")), COMMA
    if dynamic is not None or choices is not None:
        listed = list(dynamic or choices)
        if dynamic is None and len(listed) <= MAX_RADIO_CHOICES:
            return gr.Radio(choices=listed, value=value, **common), PLAIN
        return gr.Dropdown(choices=listed, value=value, allow_custom_value=dynamic is not None, **common), PLAIN
    if kind in (int, float):
        if minimum is not None and maximum is not None:
            step = args.get("step") or (1 if kind is int else 0.01)
            return slider(minimum=minimum, maximum=maximum, step=step, value=value, **common), PLAIN
        return gr.Number(value=value, precision=0 if kind is int else None, **common), PLAIN
    if kind is str:
        return gr.Textbox(value=value, **common), PLAIN
    return gr.Textbox(value=to_component(JSON, value), lines=4 if kind is dict else 1,
                      **_with_info(common, "JSON" if kind is dict else None)), JSON


def _with_info(common: dict, text: str | None) -> dict:
    """`common` with `text` put before its info line (the option's plain note, if any)."""
    info = "; ".join(part for part in (text, common.get("info")) if part)
    return {**common, "info": info or None}


def setting_component(services, key: str, info: OptionInfo, note: str | None = None):
    """(component, codec) for one option, showing its saved value; frozen options cannot be edited. `note`: plain
    text shown as the component's info line (an option drawn by its type only)."""
    value = services.options.get(key)
    common = {"label": info.label or key, "elem_id": f"setting_{key}",
              "interactive": services.options.frozen_reason(key) is None}
    if note and info.component is None:
        common["info"] = note
    if info.component is not None:
        try:
            return info.component(**{"value": value, **info.ui_args(), **common}), PLAIN
        except Exception as error:  # noqa: BLE001 - an extension's component must not break the page
            log.warning("setting %s: its component %r failed (%s); showing it by its type", key, info.component,
                        error)
    return _typed_component(services, key, info, value, common)


def shown_keys(services) -> dict[str, list[str]]:
    """Section id → the keys the tab shows there, in the sections' order."""
    options, hide_dirs = services.options, bool(getattr(services.args, "hide_ui_dir_config", False))
    quick = set(options.quicksettings_list or []) | TOPBAR_ONLY
    infos = options.infos()
    shown: dict[str, list[str]] = {section: [] for section, _ in options.sections()}
    for key, info in infos.items():
        if not info.section or key in quick or (hide_dirs and (info.section == "saving-paths" or info.restrict_api)):
            continue
        shown[info.section].append(key)
    return {section: keys for section, keys in shown.items() if keys}


def matching_keys(services, keys, query: str) -> list[str]:
    """The keys whose label, key or section title contain the query (case-insensitive); all of them when empty."""
    query = (query or "").strip().lower()
    options = services.options
    infos = options.infos()

    def text(key: str) -> str:
        return f"{infos[key].label} {key} {options.section_title(infos[key].section)}".lower()

    return [key for key in keys if query in text(key)]


def apply_settings(services, codecs: dict[str, str], values: dict, shown: dict | None = None) -> str:
    """Save the options the user changed on the page: those whose value differs from what the page showed
    (`shown`, the values at page load; without it, from the saved ones) and from the saved one. An option
    changed meanwhile elsewhere (top bar, API) and not touched here keeps that newer value. The result line
    (HTML) says which were saved, or why nothing was."""
    options = services.options
    infos, saved = options.infos(), options.as_dict()
    shown = saved if shown is None else shown
    changes = {}
    try:
        for key, value in values.items():
            new = from_component(codecs[key], infos[key], key, value)
            if new != shown.get(key, saved.get(key)) and new != saved.get(key):
                changes[key] = new
        if changes:
            services.update_options(changes, from_api=False)
    except ValueError as error:
        return message_html(f"Nothing saved. {error}", "warning")
    log.info("settings changed: %s", ", ".join(changes) or "none")
    return message_html(f"{len(changes)} settings changed{': ' if changes else ''}{', '.join(changes)}.")


@dataclass
class SettingsTab:
    codecs: dict[str, str]           # key → how its component's value maps to the option's value
    components: dict[str, gr.components.Component]
    sections: dict[str, gr.Column]
    pages: settings_pages.SettingsPages | None = None   # Defaults, Sysinfo, Actions, Licenses


_INFO_SPAN = re.compile(r"\s*<span class='info'>\(([^<>]*)\)</span>\s*")


def _plain_note(services, key: str, info: OptionInfo) -> str | None:
    """The notes under an option as plain text, when they are only A1111's `.info()` notes (no links, no other
    HTML) and the option is drawn by its type: shown as the component's info line, which is much cheaper to build
    than an HTML block per option (the tab has hundreds). None: they need HTML, or there are none."""
    comment = _comment_html(services, key, info)
    if not comment or info.component is not None:
        return None
    notes = _INFO_SPAN.findall(comment)
    if _INFO_SPAN.sub("", comment).strip() or not notes:
        return None
    return "; ".join(html.unescape(note) for note in notes)


def _comment_html(services, key: str, info: OptionInfo) -> str:
    """The notes under an option: its comments (HTML by A1111's design: links and notes from the option's
    definition, never from users) and why it cannot be changed, if frozen."""
    frozen = services.options.frozen_reason(key)
    parts = [info.comment_before, info.comment_after,
             f"<span class='info'>(cannot be changed: {html.escape(frozen)})</span>" if frozen else ""]
    return " ".join(part for part in parts if part)


def _refresh_button(key: str, info: OptionInfo, component) -> None:
    """A1111's 🔄 next to an option with `refresh`: run it, then re-read the component's arguments."""
    def refresh():
        info.refresh()
        return gr.update(**info.ui_args())

    tool_button("🔄", f"refresh_{key}").click(refresh, outputs=[component], show_progress="hidden",
                                             api_visibility=PRIVATE)


def create_tab(services, demo: gr.Blocks) -> SettingsTab:
    options = services.options
    infos = options.infos()
    by_section = shown_keys(services)
    titles = {section: options.section_title(section) for section in by_section}
    first = next(iter(by_section), None)
    codecs, components, sections, items = {}, {}, {}, {}
    with gr.Row(elem_id="settings"):
        with gr.Column(scale=0, min_width=220):
            search = gr.Textbox(placeholder="Search...", show_label=False, elem_id="settings_search", max_lines=1)
            section_list = gr.Radio(choices=[(titles[section], section) for section in by_section]
                                    + [(title, page) for page, title in settings_pages.PAGES.items()], value=first,
                                    show_label=False, elem_id="settings_sections")
        with gr.Column(scale=1):
            with gr.Row():
                submit = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
                reload_ui = gr.Button("Reload UI", elem_id="settings_restart_gradio")
            result = gr.HTML(elem_id="settings_result", js_on_load=None)
            nothing = gr.HTML(message_html("No setting matches the search."), visible=False,
                              elem_id="settings_search_empty", js_on_load=None)
            for section, keys in by_section.items():
                with gr.Column(visible=section == first, elem_id=f"settings_{section}") as sections[section]:
                    gr.HTML(f"<h2>{html.escape(titles[section])}</h2>", js_on_load=None)
                    for key in keys:
                        info = infos[key]
                        with gr.Column(elem_classes=["settings-item"]) as items[key]:
                            note = _plain_note(services, key, info)
                            if info.refresh is None:   # no row to build for most: the tab has hundreds of options
                                components[key], codecs[key] = setting_component(services, key, info, note)
                            else:
                                with gr.Row(equal_height=False):
                                    components[key], codecs[key] = setting_component(services, key, info, note)
                                    _refresh_button(key, info, components[key])
                            comment = None if note else _comment_html(services, key, info)
                            if comment:
                                gr.HTML(comment, elem_classes=["settings-comment"], js_on_load=None)
            pages = settings_pages.create_pages(services)
    settings_pages.connect_section_list(pages, section_list)
    sections.update(pages.columns)

    keys = list(components)

    # Hundreds of options: an event whose outputs are every option makes the browser take tens of seconds (Gradio
    # marks each output pending), so the search and the section list update the sections, and hide the options
    # that do not match with one CSS rule per option (HIDE_UNMATCHED), not one output per option.
    matched = gr.Textbox(visible=False, elem_id="settings_search_matched")

    def show(query: str, section: str):
        found = matching_keys(services, keys, query)
        searching = bool((query or "").strip())
        updates = [gr.update(visible=any(key in found for key in by_section.get(name, ())) if searching
                             else name == section) for name in sections]
        hidden = [] if not searching else [key for key in keys if key not in set(found)]
        return [gr.update(visible=searching and not found), *updates, json.dumps(hidden)]

    visibility = [nothing, *sections.values(), matched]
    hide = {"fn": None, "inputs": [matched], "js": HIDE_UNMATCHED, "show_progress": "hidden",
            "api_visibility": PRIVATE}
    search.change(show, inputs=[search, section_list], outputs=visibility, trigger_mode="always_last",
                  show_progress="hidden", api_visibility=PRIVATE).then(**hide)
    section_list.input(lambda section: ["", *show("", section)], inputs=[section_list], outputs=[search, *visibility],
                       show_progress="hidden", api_visibility=PRIVATE).then(**hide)

    shown = gr.State({})   # this page's values as loaded: Apply saves only what was changed since

    def apply(page_values: dict, *values):
        return apply_settings(services, codecs, dict(zip(keys, values)), page_values or None)

    submit.click(apply, inputs=[shown, *(components[key] for key in keys)], outputs=[result],
                 api_visibility=PRIVATE)
    reload_ui.click(None, js="() => { window.location.reload(); }", api_visibility=PRIVATE)

    # Refreshed on each page load: the options this web UI acts on (they change through the API and the top bar
    # too) and extensions'. A1111's options with no effect here show the value they had when the page was built
    # (a change through the API shows after a restart), and Apply compares them with that value: an event with
    # hundreds of outputs makes the browser take many seconds to open the page (measured: about 25 s for 330).
    fresh = [key for key in keys if not (key in NO_EFFECT_KEYS and infos[key] is OPTIONS.get(key))]
    built = {key: options.get(key) for key in keys}

    def saved_values():
        """The values as saved now, on each page load; those the page already shows are skipped."""
        values = []
        for key in fresh:
            current = to_component(codecs[key], options.get(key))
            dynamic = dynamic_choices(services, key) if infos[key].component is None else None
            if dynamic is not None:
                values.append(gr.update(value=current, choices=dynamic))
            else:
                values.append(gr.skip() if current == to_component(codecs[key], built[key]) else
                              gr.update(value=current))
        return [{**built, **{key: options.get(key) for key in fresh}}, *values]

    if keys:
        demo.load(saved_values, outputs=[shown, *(components[key] for key in fresh)], show_progress="hidden",
                  api_visibility=PRIVATE)
    return SettingsTab(codecs=codecs, components=components, sections=sections, pages=pages)
