"""Extensions' Gradio layer (issue 21): a stand-in extension written for A1111's Gradio 3 (`_js=`, `gr.Box`,
`.style()`, `gr.Button.update`, `gr.Image(source=, tool=)`, its own `ToolButton(gr.Button)`, `modules.ui_components`)
builds its controls in Gradio 6; `on_after_component` callbacks and `Script.after_component` see every component
of the page with A1111's elem_ids and can wire events to them; a raising one is listed and the page still builds;
`scripts.scripts_data` and `list_scripts` list what was loaded."""
from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path

import gradio as gr
import pytest
from gradio.blocks import Block
from gradio.state_holder import SessionState

from modules import cmd_args, scripts, services as services_module

ROOT = Path(__file__).resolve().parent.parent

OLD_GRADIO = '''
import gradio as gr
from modules import script_callbacks, scripts
from modules.ui_components import DropdownMulti, FormRow, InputAccordion, ToolButton as A1111ToolButton
from modules.ui_gradio_extensions import reload_javascript

SEEN = []          # (elem_id, class name) of every component announced to the callback
STEPS = []         # what the script's on_after_component(elem_id="txt2img_steps") callback got


class ToolButton(gr.Button):   # as many extensions define it for themselves
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)


class OldGradio(scripts.Script):
    def __init__(self):
        self.prompt = None
        self.on_after_component(lambda seen: STEPS.append(seen.component.elem_id), elem_id="txt2img_steps")

    def title(self):
        return "Old gradio"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Box():
            with FormRow(variant="compact"):
                self.tool = ToolButton("\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}",
                                       elem_id=self.elem_id("tool"), tooltip="Swap")
                self.a1111_tool = A1111ToolButton(value="\N{CLIPBOARD}", elem_id=self.elem_id("a1111_tool"))
                self.text = gr.Textbox(label="Old text", elem_id=self.elem_id("text")).style(container=False,
                                                                                               rounded=False)
            self.image = gr.Image(source="upload", tool="sketch", type="pil", elem_id=self.elem_id("image"))
            self.gallery = gr.Gallery(elem_id=self.elem_id("gallery")).style(grid=[2, 3], height="auto")
            self.go = gr.Button("Go", elem_id=self.elem_id("go")).style(full_width=True)
            self.bridge = gr.Textbox(visible=False, elem_id=self.elem_id("bridge"))   # for its JavaScript
            with gr.Tabs(elem_id=self.elem_id("tabs")):
                gr.Textbox(visible=False, elem_id=self.elem_id("beside_tabs"))   # Gradio 3 allowed it here
                with gr.Tab("First"):
                    gr.HTML("first")
                with gr.Tab("Second", elem_id=self.elem_id("second")):   # its JavaScript finds what is in here
                    gr.HTML("second")
            with gr.Row(visible=False, elem_id=self.elem_id("hidden_row")) as self.hidden_row:
                gr.Button("Renew", elem_id=self.elem_id("renew"))   # its JavaScript clicks it
            self.show_row = gr.Button("Show row", elem_id=self.elem_id("show_row"))
            self.show_row.click(fn=lambda: gr.update(visible=True), outputs=[self.hidden_row])
        with InputAccordion(False, label="Old accordion", elem_id=self.elem_id("acc")) as enabled:
            self.picks = picks = DropdownMulti(choices=["a", "b"], value=["a"], label="Picks")
        self.go.click(fn=lambda text: gr.Button.update(value=text or "Go"), inputs=[self.text], outputs=[self.go],
                      _js="(text) => text", show_progress=False)
        self.tool.click(fn=None, _js="() => []").then(fn=lambda: gr.Textbox.update("then"), outputs=[self.text])
        self.more = gr.Button("More", elem_id=self.elem_id("more"))
        self.more.click(fn=lambda: gr.Dropdown.update(choices=["a", "b", "c"]), outputs=[picks])
        return [enabled, self.text, picks]

    def after_component(self, component, **kwargs):
        if kwargs.get("elem_id") in ("txt2img_prompt", "img2img_prompt"):
            self.prompt = component


def record(component, **kwargs):
    SEEN.append((kwargs.get("elem_id"), type(component).__name__))
    if kwargs.get("elem_id") == "txt2img_prompt":   # A1111 extensions add their buttons next to core components
        fill = gr.Button("Fill prompt", elem_id="fill_prompt")
        fill.click(fn=lambda: "a filled prompt", outputs=[component])


script_callbacks.on_after_component(record)
reload_javascript()   # A1111: put javascript/old.js into the page
'''

BREAKS = '''
import gradio as gr
from modules import script_callbacks


def breaks(component, **kwargs):
    if kwargs.get("elem_id") == "txt2img_generate":
        gr.Button("Half made", elem_id="half_made").click(fn=lambda: "half", outputs=[component])
        raise RuntimeError("after_component boom")


script_callbacks.on_after_component(breaks)
'''


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from modules.ui import create_ui

    data = tmp_path_factory.mktemp("gradio3")
    for name, file, text in (("old-gradio", "old.py", OLD_GRADIO), ("breaks-ext", "breaks.py", BREAKS)):
        path = data / "extensions" / name / "scripts" / file
        path.parent.mkdir(parents=True)
        path.write_text(textwrap.dedent(text))
    (data / "extensions" / "old-gradio" / "javascript").mkdir()
    (data / "extensions" / "old-gradio" / "javascript" / "old.js").write_text("window.oldGradioLoaded = true;")
    args = cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start", "--skip-install"])
    services = services_module.create(args)
    services.load_scripts()
    demo = create_ui(services)
    config = demo.get_config_file()   # what the page loads; it fails on an event wired to a non-component
    module = next(item.module for item in scripts.scripts_data if item.script_class.__name__ == "OldGradio")
    yield services, demo, config, module
    services.shutdown()


def by_elem_id(config: dict) -> dict:
    return {component["props"].get("elem_id"): component for component in config["components"]
            if component["props"].get("elem_id")}


def test_callbacks_see_every_component_with_a1111s_elem_ids(page):
    _, _, config, module = page
    seen = {elem_id for elem_id, _ in module.SEEN}
    a1111 = {f"{tab}_{name}" for tab in ("txt2img", "img2img") for name in (
        "prompt", "neg_prompt", "generate", "sampling", "steps", "width", "height", "seed", "gallery", "cfg_scale",
        "batch_size", "batch_count", "styles", "toprow", "settings")} | {
        "tab_txt2img", "tab_img2img", "txt2img_hr", "hr_sampler", "hires_prompt", "txt2img_hr_upscaler",
        "txt2img_denoising_strength", "img2img_denoising_strength", "img2img_image", "txt2img_enable",
        "txt2img_checkpoint", "txt2img_prompt_row", "pnginfo_image", "extras_image", "script_list"}
    assert not a1111 - seen, sorted(a1111 - seen)
    assert not a1111 - set(by_elem_id(config)), "each is on the page under that id"
    assert ("txt2img_prompt", "Textbox") in module.SEEN and ("tabs", "Tabs") in module.SEEN


def test_script_hooks_see_the_components_of_their_own_tab(page):
    services, _, _, module = page
    for runner, tab in ((services.scripts.txt2img, "txt2img"), (services.scripts.img2img, "img2img")):
        script = next(script for script in runner.scripts if script.title() == "Old gradio")
        assert script.prompt is not None and script.prompt.elem_id == f"{tab}_prompt"
    assert module.STEPS == ["txt2img_steps"]   # on_after_component(elem_id=...): the txt2img script's, once


def test_an_event_wired_to_a_core_component_works(page):
    _, demo, config, _ = page
    ids = {elem_id: component["id"] for elem_id, component in by_elem_id(config).items()}
    dependency = next(dep for dep in config["dependencies"] if [ids["fill_prompt"], "click"] in
                      [list(target) for target in dep["targets"]])
    assert dependency["outputs"] == [ids["txt2img_prompt"]]
    assert demo.fns[dependency["id"]].fn() == "a filled prompt"


def test_a_raising_callback_is_listed_and_its_events_undone(page):
    services, demo, config, _ = page
    failures = {(error.extension, error.file): error.message for error in services.scripts.failures()}
    assert failures[("breaks-ext", "breaks.py on_after_component callback")] == "RuntimeError: after_component boom"
    ids = {elem_id: component["id"] for elem_id, component in by_elem_id(config).items()}
    assert "txt2img_generate" in ids   # the component it broke on is there, and the page built
    assert not [dep for dep in config["dependencies"] if [ids["half_made"], "click"] in map(list, dep["targets"])]


def test_gradio3_idioms_build_the_extensions_controls(page):
    services, demo, config, _ = page
    script = next(script for script in services.scripts.txt2img.scripts if script.title() == "Old gradio")
    assert not services.scripts.txt2img.ui_failed, "its ui() built"
    assert script.image.sources == ["upload"] and script.gallery.columns == 3 and script.gallery.height == "auto"
    assert script.go.scale == 1 and script.text.container is False
    # Gradio 3 kept invisible components on the page, where extensions' JavaScript uses them; the web UI's own stay out
    assert script.bridge.visible == "hidden" and by_elem_id(config)["txt2img_interrupt"]["props"]["visible"] is False
    ids = by_elem_id(config)   # Gradio 3 put every tab's content on the page, the web UI's own tabs open lazily
    assert ids["script_txt2img_old_gradio_second"]["props"]["render_children"] is True
    assert ids["tab_img2img"]["props"].get("render_children") is not True
    assert gr.Textbox.update(visible=False) == {"__type__": "update", "visible": "hidden"}
    assert script.tool.value == "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"   # positional kept
    go = next(dep for dep in config["dependencies"] if [script.go._id, "click"] in map(list, dep["targets"]))
    assert go["js"] == "(text) => text" and go["show_progress"] == "hidden"
    assert demo.fns[go["id"]].fn("hi") == {"__type__": "update", "value": "hi"}
    then = [dep for dep in config["dependencies"] if dep["trigger_after"] is not None and
            script.text._id in dep["outputs"]]
    assert then and demo.fns[then[0]["id"]].fn() == {"__type__": "update", "value": "then"}
    defaults = services.scripts.txt2img.defaults["old gradio"]
    assert (defaults[0], defaults[2]) == (False, ["a"])   # the InputAccordion is a checkbox


def _layout_node(layout: dict, block_id: int) -> dict | None:
    if layout["id"] == block_id:
        return layout
    for child in layout.get("children", []):
        found = _layout_node(child, block_id)
        if found:
            return found
    return None


def test_invisible_layouts_and_components_beside_tabs_stay_on_the_page(page):
    services, demo, config, _ = page
    script = next(script for script in services.scripts.txt2img.scripts if script.title() == "Old gradio")
    ids = by_elem_id(config)
    # an invisible row is on the page with what it holds, hidden by a class, as Gradio 3 kept it
    row = ids["script_txt2img_old_gradio_hidden_row"]
    assert row["props"]["visible"] == "hidden" and "webui-hidden-layout" in row["props"]["elem_classes"]
    renew = ids["script_txt2img_old_gradio_renew"]
    assert _layout_node(config["layout"], row["id"])["children"][0]["id"] == renew["id"]
    # an update that shows the row sends its classes without the hiding one
    show = next(dep for dep in config["dependencies"]
                if [script.show_row._id, "click"] in map(list, dep["targets"]))
    state = SessionState(demo)
    update = asyncio.run(demo.postprocess_data(demo.fns[show["id"]], demo.fns[show["id"]].fn(), state))[0]
    assert update["visible"] is True and "webui-hidden-layout" not in update["elem_classes"]
    # a component an extension put in a Tabs beside its tabs goes before them: each child of the Tabs is a tab
    tabs = _layout_node(config["layout"], ids["script_txt2img_old_gradio_tabs"]["id"])
    types = {component["id"]: component["type"] for component in config["components"]}
    assert [types[child["id"]] for child in tabs["children"]] == ["tabitem", "tabitem"]
    assert "script_txt2img_old_gradio_beside_tabs" in ids


def test_subclasses_render_as_their_gradio_component(page):
    services, _, config, _ = page
    known = {_block_type(cls) for cls in _gradio_classes()}
    assert {component["type"] for component in config["components"]} <= known, "no type the page cannot load"
    ids = by_elem_id(config)
    tool = ids["script_txt2img_old_gradio_tool"]
    assert tool["type"] == "button" and tool["props"]["value"] == "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"
    assert ids["script_txt2img_old_gradio_a1111_tool"]["type"] == "button"
    assert {"tool", "gradio-button"} <= set(ids["script_txt2img_old_gradio_a1111_tool"]["props"]["elem_classes"])
    assert {"gradio-dropdown", "multiselect"} <= set(ids["txt2img_styles"]["props"]["elem_classes"])   # A1111's
    accordion, checkbox = ids["script_txt2img_old_gradio_acc"], ids["script_txt2img_old_gradio_acc-checkbox"]
    assert accordion["type"] == "accordion" and "input-accordion" in accordion["props"]["elem_classes"]
    assert checkbox["type"] == "checkbox" and checkbox["props"]["visible"] == "hidden"
    assert "for-script_txt2img_old_gradio_acc" in checkbox["props"]["elem_classes"]   # what script.js looks for
    assert not list((services.paths.extensions / "old-gradio" / "scripts").glob("*.pyi"))


def test_an_update_to_a_subclass_rebuilds_it_without_announcing_it_again(page):
    services, demo, config, module = page
    script = next(script for script in services.scripts.txt2img.scripts if script.title() == "Old gradio")
    more = next(dep for dep in config["dependencies"] if [script.more._id, "click"] in map(list, dep["targets"]))
    announced, state = len(module.SEEN), SessionState(demo)
    # Gradio applies an update by building the component again from its recorded arguments, in the session state
    asyncio.run(demo.postprocess_data(demo.fns[more["id"]], demo.fns[more["id"]].fn(), state))   # one output
    rebuilt = state[script.picks._id]
    assert type(rebuilt).__name__ == "DropdownMulti" and rebuilt.multiselect is True
    assert [choice[0] for choice in rebuilt.choices] == ["a", "b", "c"] and len(module.SEEN) == announced


def test_scripts_data_and_list_scripts_name_the_loaded_files(page):
    services, _, _, _ = page
    folder = services.paths.extensions / "old-gradio"
    data = next(item for item in scripts.scripts_data if item.script_class.__name__ == "OldGradio")
    assert (data.path, data.basedir) == (str(folder / "scripts" / "old.py"), str(folder))
    listed = scripts.list_scripts("scripts", ".py")
    assert scripts.ScriptFile(str(folder), "old.py", str(folder / "scripts" / "old.py")) in listed
    assert any(item.filename == "xyz_grid.py" for item in listed)   # the project's own scripts/ first


def test_the_web_uis_own_ui_uses_no_gradio3_idiom(page):
    from modules.ui import gradio3

    project = [what for what, file in gradio3.noticed.items() if "extensions" not in Path(file).parts]
    assert not project, f"the web UI's own code relies on a Gradio 3 translation: {project}"
    idiom = re.compile(r"(?<!\w)_js\s*=|gr\.Box\b|\.style\(|gr\.[A-Z]\w*\.update\(|gr\.(inputs|outputs)\.")
    offending = [str(path.relative_to(ROOT)) for folder in ("modules", "scripts", "extensions-builtin")
                 for path in (ROOT / folder).rglob("*.py")
                 if path.name != "gradio3.py" and idiom.search(path.read_text(encoding="utf-8"))]
    assert not offending, offending


def test_reload_javascript_leaves_the_extensions_script_in_the_page(page):
    from modules.ui import head_html

    services = page[0]
    assert "window.oldGradioLoaded = true;" in head_html(services)
    assert not [error for error in services.scripts.failures() if error.extension == "old-gradio"]


def test_legacy_namespaces():
    with gr.Blocks():
        box = gr.inputs.Textbox(default="old", label="Old")
    assert isinstance(box, gr.Textbox) and box.value == "old"
    assert gr.Box is gr.Group and gr.components.IOComponent is gr.components.Component


def _gradio_classes() -> list[type]:
    found, pending = [], [Block]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending += cls.__subclasses__()
    return [cls for cls in found if cls.__module__.startswith("gradio.")]


def _block_type(cls: type) -> str:
    if "get_block_name" in vars(cls) and cls is not Block:   # a constant, as gr.Tab's "tabitem"
        return vars(cls)["get_block_name"](None)
    return (cls.__base__ if hasattr(cls, "is_template") else cls).__name__.lower()
