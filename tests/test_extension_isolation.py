"""Issue 21, isolation: no extension stops start-up or breaks other extensions or the core UI. Stand-in extensions
written here fail in each way (an event with a None input, a ui() that raises, a preload.py that raises, a hook
and a callback that raise, a script file that fails to import); the app still builds and serves `/` and the API,
a good extension still works, the Extensions tab lists each failure with its file and error, and a script whose
ui() failed gets the args it is sent."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from modules import cmd_args, services as services_module
from modules.ui import extensions as tab
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

SMALL = {"prompt": "a cube", "steps": 2, "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler"}

RECORD = '''
import json
from pathlib import Path


def record(name, args):   # what a hook received, for the test to read
    path = Path(__file__).parents[2] / "received.json"
    seen = json.loads(path.read_text()) if path.is_file() else {}
    seen[name] = list(args)
    path.write_text(json.dumps(seen))
'''

EXTENSIONS = {
    "good-ext": {"scripts/good.py": RECORD + '''
import gradio as gr
from modules import scripts


class Good(scripts.Script):
    def title(self):
        return "Good script"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        box = gr.Textbox("", label="Good text")
        button = gr.Button("Good button")
        button.click(lambda text: text.upper(), inputs=[box], outputs=[box])
        return [gr.Checkbox(False, label="Good enabled"), box]

    def process(self, p, enabled, text):
        record("good", [enabled, text])
        if enabled:
            p.extra_generation_params["Good"] = text
'''},
    "none-input": {"scripts/none_input.py": RECORD + '''
import gradio as gr
from modules import scripts


class NoneInput(scripts.Script):
    def title(self):
        return "None input"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        box = gr.Textbox("", label="None input text")
        button = gr.Button("None input button")
        button.click(lambda a, b: b, inputs=[None, box], outputs=[box])
        return [box]

    def process(self, p, *args):
        record("none input", args)
'''},
    "raising-ui": {"scripts/raising_ui.py": RECORD + '''
from modules import scripts


class RaisingUi(scripts.Script):
    def title(self):
        return "Raising UI"

    def show(self, is_img2img):
        return True   # the Script menu

    def ui(self, is_img2img):
        raise RuntimeError("ui boom")

    def run(self, p, *args):
        record("raising ui", args)
        from modules import processing
        return processing.process_images(p)
'''},
    "bad-preload": {"preload.py": 'def preload(parser):\n    raise ValueError("preload boom")\n',
                    "scripts/fine.py": "X = 1\n"},
    "bad-hook": {"scripts/bad_hook.py": '''
from modules import script_callbacks, scripts


class BadHook(scripts.Script):
    def title(self):
        return "Bad hook"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        raise KeyError("hook boom")


def saved(params):
    raise OSError("callback boom")


script_callbacks.on_image_saved(saved)
'''},
    "all-broken": {"scripts/a.py": 'raise ImportError("import boom")\n'},
    "bad-title": {"scripts/bad_title.py": '''
from modules import scripts


class BadTitle(scripts.Script):
    def title(self):
        raise RuntimeError("title boom")

    def show(self, is_img2img):
        return scripts.AlwaysVisible
'''},
    "bad-tab": {"scripts/bad_tab.py": '''
import gradio as gr
from modules import script_callbacks


def tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        box = gr.Textbox(label="Bad tab text")
        gr.Button("Bad tab button").click(lambda text: text, inputs=[box], outputs=[box])
    tab.fns[max(tab.fns)].inputs.append(None)   # as if Gradio had taken a None input half-way
    return [(tab, "Bad tab", "bad_tab")]


def good_tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Markdown("Good tab text")
    return [(tab, "Good tab", "good_tab"), "not a tab"]


script_callbacks.on_ui_tabs(tabs)
script_callbacks.on_ui_tabs(good_tabs)
'''},
}


def write_extensions(folder: Path) -> None:
    for name, files in EXTENSIONS.items():
        for relative, text in files.items():
            path = folder / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from webui import create_app, prepare_extensions

    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("iso"), {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    write_extensions(data / "extensions")
    args = cmd_args.parse_args(["--data-dir", str(data), "--api", "--skip-load-model-at-start", "--skip-install"],
                               preload=prepare_extensions)
    services = services_module.create(args)
    with app_client(create_app(services)) as client:
        client.services, client.data = services, data
        yield client
    services.shutdown()


def received(server) -> dict:
    path = server.data / "extensions" / "received.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def test_the_page_and_the_api_are_served(server):
    assert server.get("/").status_code == 200
    config = server.get("/config")
    assert config.status_code == 200
    text = str(config.json())
    assert "Good button" in text and "None input: could not build its controls" in text
    assert "Raising UI: could not build its controls" in text
    assert "Good tab text" in text and "Bad tab text" not in text   # the tab with a broken event is left out
    assert server.get("/sdapi/v1/options").status_code == 200


def test_a_none_input_event_is_removed_and_the_good_event_kept(server):
    config = server.get("/config").json()
    buttons = {component.get("props", {}).get("value"): component["id"] for component in config["components"]
               if component.get("type") == "button"}
    triggers = {target[0] for dependency in config["dependencies"] for target in dependency["targets"]}
    assert buttons["Good button"] in triggers
    assert buttons["None input button"] not in triggers
    assert all(None not in dependency["inputs"] for dependency in config["dependencies"])


def test_other_scripts_work_and_the_generation_survives_failing_hooks(server):
    response = server.post("/sdapi/v1/txt2img", json={
        **SMALL, "save_images": True, "alwayson_scripts": {"good script": {"args": [True, "shiny"]}}})
    assert response.status_code == 200, response.text
    assert "Good: shiny" in response.json()["info"]
    assert received(server)["good"] == [True, "shiny"]


def test_scripts_whose_ui_failed_get_the_args_they_are_sent(server):
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "raising ui", "script_args": [3, "x"]})
    assert response.status_code == 200, response.text
    assert received(server)["raising ui"] == [3, "x"]
    response = server.post("/sdapi/v1/txt2img", json={
        **SMALL, "alwayson_scripts": {"none input": {"args": ["sent"]}}})
    assert response.status_code == 200, response.text
    assert received(server)["none input"] == ["sent"]


def test_the_extensions_tab_lists_each_failure_with_file_and_error(server):
    server.post("/sdapi/v1/txt2img", json={**SMALL, "save_images": True})   # the hook and callback fail
    failures = {(error.extension, error.file): error.message for error in server.services.scripts.failures()}
    assert "NoneType" in failures[("none-input", "none_input.py ui()")]   # Gradio's error, one line
    assert failures[("raising-ui", "raising_ui.py ui()")] == "RuntimeError: ui boom"
    assert failures[("bad-preload", "preload.py")] == "ValueError: preload boom"
    assert failures[("bad-hook", "bad_hook.py process()")] == "KeyError: 'hook boom'"
    assert failures[("bad-hook", "bad_hook.py on_image_saved callback")] == "OSError: callback boom"
    assert failures[("all-broken", "a.py")] == "ImportError: import boom"
    assert failures[("bad-title", "bad_title.py")] == "RuntimeError: title boom"
    assert failures[("bad-tab", "bad_tab.py on_ui_tabs tab 'Bad tab'")] == (
        "TypeError: an event's inputs include None, not a component")
    assert failures[("bad-tab", "bad_tab.py on_ui_tabs tab")] == "returned str, not (gr.Blocks, title, elem_id)"
    assert not any(extension == "good-ext" for extension, _ in failures)
    table = tab.listing(server.services)[0]
    rows = {row.split("<")[0].strip(): row for row in table.split("<tr><td>")[1:]}
    state = {name: row.split("<td>")[1].split("</td>")[0] for name, row in rows.items()}
    assert state["all-broken"] == "enabled, failed to load"
    assert state["good-ext"] == "enabled"
    assert state["bad-hook"] == "enabled, 2 failures"
    assert state["raising-ui"] == "enabled, 1 failure"
    assert "preload.py: ValueError: preload boom" in rows["bad-preload"]
    assert "raising_ui.py ui(): RuntimeError: ui boom" in rows["raising-ui"]


def test_an_event_gradio_accepted_with_a_non_component_is_undone():
    """Whether Gradio raises on a bad input or registers it, the script's events are undone and it is listed."""
    import gradio as gr

    from modules import scripts
    from modules.ui import scripts as ui_scripts

    class HalfWired(scripts.Script):
        def title(self):
            return "Half wired"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            box = gr.Textbox(label="Half wired text")
            gr.Button("Half wired button").click(lambda text: text, inputs=[box], outputs=[box])
            blocks = gr.context.Context.root_block
            blocks.fns[max(blocks.fns)].inputs.append(None)   # as if Gradio had taken it half-way
            return [box]

    runner = scripts.ScriptRunner(is_img2img=False)
    script = HalfWired()
    script.filename = "half_wired.py"
    runner.add(script)
    with gr.Blocks(analytics_enabled=False) as blocks:
        before = len(blocks.fns)
        ui_scripts.create(runner)
    assert len(blocks.fns) == before and "half wired" in runner.ui_failed
    assert runner.failures[("half_wired.py", "ui()")].startswith("TypeError: an event's inputs include None")
    assert runner.args_for(script, [1, 2, 3]) == [1, 2, 3]
    blocks.get_config_file()   # the page's config builds
