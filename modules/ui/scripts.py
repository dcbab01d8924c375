"""Scripts' controls in the txt2img and img2img tabs: always-on scripts' panels and the Script dropdown.

Each script's `ui(is_img2img)` builds its components inside the tab; their values become the script's
positional args (`GenerationRequest.extension_scripts`). Building them also records each script's default
args and their labels/ranges, which the API uses for requests that leave a script's args out
(`record_defaults` does the same without a page, for --nowebui). A script whose ui() raises is reported in
place, its events are removed, it is listed in the Extensions tab and it takes its args as sent; the rest of
the tab works.
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field

import gradio as gr
from gradio.blocks import Block
from gradio.context import Context

from modules.script_callbacks import error_line
from modules.scripts import Script, ScriptRunner
from modules.ui.common import PRIVATE

log = logging.getLogger(__name__)

NONE = "None"


@dataclass
class ScriptControls:
    runner: ScriptRunner
    components: list = field(default_factory=list)            # every script's components, in runner order
    slices: dict[str, tuple[int, int]] = field(default_factory=dict)   # script name → its part of components
    chooser: gr.Dropdown | None = None                         # the Script dropdown, when this module made it
    paste_fields: list = field(default_factory=list)           # (component, infotext key or callable(dict))

    def request_fields(self, values: list, chosen: str | None) -> dict:
        """The components' values (and the dropdown's choice, a title) → GenerationRequest fields."""
        selected = next((s for s in self.runner.selectable_scripts if s.title() == chosen), None)
        given = {script.name: list(values[start:end]) for script in self.runner.alwayson_scripts
                 for start, end in [self.slices[script.name]]}
        if selected is not None:
            start, end = self.slices[selected.name]
            given[selected.name] = list(values[start:end])
        return {"selected_script": selected.name if selected else None, "extension_scripts": given}


    def paste_targets(self) -> list:
        return list(dict.fromkeys(component for component, _ in self.paste_fields))

    def paste_updates(self, parsed: dict) -> dict:
        """A1111's paste for scripts: each script's `infotext_fields` [(component, key)] filled from a parsed
        infotext (`infotext.parse_infotext`); a key may be a callable(parsed) → value. Keys that are absent,
        and values a component cannot take, leave it unchanged."""
        updates = {}
        for component, key in self.paste_fields:
            try:
                value = key(parsed) if callable(key) else parsed.get(key)
                if value is not None:
                    updates[component] = _as_component_value(component, value)
            except (TypeError, ValueError, KeyError) as error:
                log.warning("paste: %s: %s", getattr(component, "label", component), error)
        return updates


def _as_component_value(component, value):
    """An infotext string as the component takes it (numbers, ticks, a dropdown's value for its label)."""
    if isinstance(value, str):
        if isinstance(component, (gr.Slider, gr.Number)):
            number = float(value)
            return int(number) if number.is_integer() and getattr(component, "precision", None) == 0 else number
        if isinstance(component, gr.Checkbox):
            return value.strip().lower() == "true"
        if isinstance(component, (gr.Dropdown, gr.Radio)):
            for choice in component.choices or []:
                if isinstance(choice, (list, tuple)) and choice[0] == value:
                    return choice[1]
    return value


def titles(runner: ScriptRunner) -> list[str]:
    return [script.title() for script in runner.selectable_scripts]


def create(runner: ScriptRunner, chooser: gr.Dropdown | None = None) -> ScriptControls:
    """Always-on scripts' panels, then a group per dropdown script shown when chosen. Without `chooser`, a
    Script dropdown is made (txt2img); img2img passes its own, which already lists these titles."""
    controls = ScriptControls(runner)
    for script in runner.alwayson_scripts:
        with gr.Group(elem_id=f"script_{_tab(runner)}_{_slug(script)}", elem_classes=["alwayson-script"]):
            _add(controls, script)
    if not runner.selectable_scripts:
        runner.set_defaults(_defaults(controls), _arg_infos(controls))
        return controls
    if chooser is None:
        chooser = gr.Dropdown([NONE, *titles(runner)], value=NONE, label="Script", elem_id="script_list")
        controls.chooser = chooser
    # A1111: a pasted infotext picks the script it names (its own fields fill that script's controls)
    named = [choice[0] if isinstance(choice, (list, tuple)) else choice for choice in chooser.choices]
    controls.paste_fields.append((chooser, lambda parsed: parsed["Script"] if parsed.get("Script") in named
                                  else NONE))
    groups = []
    for script in runner.selectable_scripts:
        with gr.Group(visible=False, elem_id=f"script_{_tab(runner)}_{_slug(script)}") as group:
            _add(controls, script)
        groups.append((script.title(), group))
    chooser.change(lambda chosen: [gr.update(visible=title == chosen) for title, _ in groups], inputs=[chooser],
                   outputs=[group for _, group in groups], queue=False, show_progress="hidden",
                   api_visibility=PRIVATE)
    runner.set_defaults(_defaults(controls), _arg_infos(controls))
    return controls


def record_defaults(host) -> None:
    """Each script's default args from its ui(), built off-page (the API without the UI needs them)."""
    for runner in (host.txt2img, host.img2img):
        with gr.Blocks(analytics_enabled=False):
            create(runner)


def _add(controls: ScriptControls, script: Script) -> None:
    """The script's ui() inside the tab. An exception, or an event it wired with something that is not a
    component among its inputs or outputs (which would break the whole page's config), is contained: the
    events it added are removed, the error shown in its place and listed (`runner.failures`), and the script
    takes its args as sent (`runner.ui_failed`)."""
    runner = controls.runner
    start = len(controls.components)
    root = Context.root_block
    events_before = set(root.fns) if root is not None else set()
    try:
        made = script.ui(runner.is_img2img) or []
        made = list(made.values()) if isinstance(made, dict) else list(made)
        check_events(root, events_before)
        components = [item for item in made if isinstance(item, gr.components.Component)]
        paste_fields = [(component, key) for component, key in (script.infotext_fields or [])
                        if isinstance(component, gr.components.Component)]
    except Exception as error:   # one script's broken ui() must not take the tab, or the page, down
        log.exception("Error creating the UI of script %s (%s)", script.title(), script.filename)
        for fn_id in set(root.fns) - events_before if root is not None else ():
            del root.fns[fn_id]
        runner.ui_failed.add(script.name)
        runner.failures[(script.filename, "ui()")] = error_line(error)
        gr.HTML(f"<p class='script-error'>{html.escape(script.title())}: could not build its controls "
                f"({html.escape(error_line(error))})</p>")
    else:
        runner.ui_failed.discard(script.name)
        runner.failures.pop((script.filename, "ui()"), None)
        controls.components += components
        controls.paste_fields += paste_fields
    controls.slices[script.name] = (start, len(controls.components))


def check_events(root, before: set) -> None:
    """The events of `root` added since `before` name only components (Gradio builds the page's config from
    them); else a TypeError naming the first that does not."""
    for fn_id in set(root.fns) - before if root is not None else ():
        fn = root.fns[fn_id]
        for kind, blocks in (("inputs", fn.inputs), ("outputs", fn.outputs)):
            bad = [block for block in blocks or [] if not isinstance(block, Block)]
            if bad:
                raise TypeError(f"an event's {kind} include {bad[0]!r}, not a component")


def _defaults(controls: ScriptControls) -> dict[str, list]:
    return {name: [component.value for component in controls.components[start:end]]
            for name, (start, end) in controls.slices.items()}


def _arg_infos(controls: ScriptControls) -> dict[str, list[dict]]:
    """What /sdapi/v1/script-info shows for each argument (A1111's ScriptArg)."""
    def info(component) -> dict:
        choices = getattr(component, "choices", None)
        return {"label": getattr(component, "label", None), "value": component.value,
                "minimum": getattr(component, "minimum", None), "maximum": getattr(component, "maximum", None),
                "step": getattr(component, "step", None),
                "choices": [choice[0] if isinstance(choice, (list, tuple)) else choice for choice in choices]
                if choices else None}
    return {name: [info(component) for component in controls.components[start:end]]
            for name, (start, end) in controls.slices.items()}


def _tab(runner: ScriptRunner) -> str:
    return "img2img" if runner.is_img2img else "txt2img"


def _slug(script: Script) -> str:
    return "".join(c if c.isalnum() else "_" for c in script.name)
