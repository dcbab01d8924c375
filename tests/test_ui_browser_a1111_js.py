"""A1111's page JavaScript API in a real browser (issue 21), on one page load: a stand-in extension whose script uses
DOMContentLoaded, onUiLoaded, `opts` with onOptionsAvailable/onOptionsChanged, `titles` and `updateInput`, and whose
tab (with nested tabs and an invisible row whose button its script clicks) reads
`modules.ui.txt2img_paste_fields` and registers an A1111 "Send to txt2img" button (ParamBinding); the
page's switch_to_img2img / switch_to_inpaint pick those tabs, and its footer holds A1111's versions line.

Set SKIP_BROWSER_TESTS=1 to skip these where no Chromium can be installed (`apt-get install chromium`).
"""
from __future__ import annotations

import textwrap

import pytest

from tests.fixtures.server import start_server
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_safetensors

SCRIPT = '''
import gradio as gr
import modules.ui
from modules import generation_parameters_copypaste as send, script_callbacks, shared


def settings():
    shared.opts.add_option("a1111js_greeting", shared.OptionInfo("hello", "Greeting", section=("a1111js", "A1111 JS")))


def tab():
    prompt = modules.ui.txt2img_paste_fields[0][0]   # A1111's paste fields: Prompt first
    with gr.Blocks() as blocks:
        echo = gr.Button("Echo", elem_id="a1111js_echo")
        heard = gr.Textbox(label="Heard", elem_id="a1111js_heard")
        echo.click(lambda text: f"heard: {text}", inputs=[prompt], outputs=[heard])
        info = gr.Textbox("a red fox\\nSteps: 7, Sampler: Euler, CFG scale: 5, Seed: 3, Size: 64x64",
                          label="Infotext", elem_id="a1111js_info")
        with gr.Tabs(elem_id="a1111js_inner"):   # nested tabs: built before onUiLoaded too
            with gr.Tab("One", elem_id="a1111js_one"):
                gr.Textbox("first", label="First", elem_id="a1111js_first")
            with gr.Tab("Two", elem_id="a1111js_two"):
                gr.Textbox("second", label="Second", elem_id="a1111js_second")
        # a button in an invisible row, which the extension's script clicks (Image Browser's "Renew Page")
        renewed = gr.Textbox(label="Renewed", elem_id="a1111js_renewed")
        with gr.Row(visible=False) as hidden_row:
            renew = gr.Button("Renew", elem_id="a1111js_renew")
        renew.click(lambda: "renewed", outputs=[renewed])
        gr.Button("Show", elem_id="a1111js_show").click(lambda: gr.update(visible=True), outputs=[hidden_row])
        buttons = send.create_buttons(["txt2img"])
        send.register_paste_params_button(send.ParamBinding(paste_button=buttons["txt2img"], tabname="txt2img",
                                                            source_text_component=info))
    return [(blocks, "A1111 JS", "a1111js")]


script_callbacks.on_ui_settings(settings)
script_callbacks.on_ui_tabs(tab)
'''

JAVASCRIPT = '''
window.a1111js = {events: [], changed: 0};
document.addEventListener("DOMContentLoaded", function () { a1111js.events.push("DOMContentLoaded"); });
onUiLoaded(function () {
    a1111js.events.push("onUiLoaded");
    a1111js.tabBuilt = !!gradioApp().getElementById("a1111js_echo");   // its own tab's element, as in A1111
    a1111js.nestedBuilt = !!gradioApp().getElementById("a1111js_second");
    a1111js.hiddenButton = !!gradioApp().getElementById("a1111js_renew");
    // Gradio 3's textbox layout, as tag autocomplete looks the prompts up
    a1111js.prompts = gradioApp().querySelectorAll("#txt2img_prompt > label > textarea, #txt2img_neg_prompt > label > textarea").length;
});
onOptionsAvailable(function () { a1111js.greeting = opts.a1111js_greeting; });
onOptionsChanged(function () { a1111js.changed++; a1111js.latest = opts.a1111js_greeting; });
titles = {...titles, "Echo": "Repeat the txt2img prompt"};
'''


@pytest.fixture
def server(tmp_path):
    checkpoint = tmp_path / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_safetensors(build_tiny_model("sd1"), checkpoint)
    extension = tmp_path / "extensions" / "a1111js"
    (extension / "scripts").mkdir(parents=True)
    (extension / "javascript").mkdir()
    (extension / "scripts" / "a1111js.py").write_text(textwrap.dedent(SCRIPT))
    (extension / "javascript" / "a1111js.js").write_text(JAVASCRIPT)
    server = start_server(tmp_path, "--skip-install")
    yield server
    server.stop()


def test_an_extension_uses_a1111s_page_api(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_function("() => window.a1111js && a1111js.greeting !== undefined && a1111js.events.length > 1",
                               timeout=60_000)
        # both of the extension's start-up listeners ran; opts holds the settings, its own included
        assert sorted(page.evaluate("() => a1111js.events")) == ["DOMContentLoaded", "onUiLoaded"]
        assert page.evaluate("() => [a1111js.tabBuilt, a1111js.nestedBuilt, a1111js.hiddenButton]") == [True] * 3
        assert page.evaluate("() => a1111js.prompts") == 2
        assert page.locator("#tab_txt2img").is_visible()   # the page still opens on txt2img
        assert page.evaluate("() => [a1111js.greeting, typeof opts.CLIP_stop_at_last_layers]") == ["hello", "number"]
        # A1111's footer: extensions read the web UI's version from its first link
        assert page.evaluate("() => gradioApp().getElementById('footer').querySelector('.versions a').textContent"
                             ).startswith("v1.10.1")

        # updateInput: a prompt set by script reaches the server (the extension's button echoes it from there)
        page.evaluate("""() => {
            const box = gradioApp().querySelector('#txt2img_prompt textarea');
            box.value = 'set by script';
            updateInput(box);
        }""")
        page.get_by_role("tab", name="A1111 JS").click()
        page.locator("#a1111js_echo").click()
        page.wait_for_function("() => document.querySelector('#a1111js_heard textarea').value === "
                               "'heard: set by script'", timeout=20_000)
        # A1111's DOM: a Tabs block's first div lists its tab buttons in order (scripts index them)
        assert page.evaluate("""() => Array.from(gradioApp().getElementById('a1111js_inner').querySelector('div')
                                     .querySelectorAll('button')).slice(0, 2).map(b => b.textContent.trim())"""
                             ) == ["One", "Two"]
        assert page.evaluate("() => get_tab_index('a1111js_inner')") == 0
        # the nested tabs are back on their first; the invisible row's button is hidden, a script's click works,
        # and an update shows the row
        assert page.locator("#a1111js_first textarea").is_visible()
        assert not page.locator("#a1111js_second textarea").is_visible()
        assert not page.locator("#a1111js_renew").is_visible()
        page.evaluate("() => gradioApp().getElementById('a1111js_renew').click()")
        page.wait_for_function("() => document.querySelector('#a1111js_renewed textarea').value === 'renewed'",
                               timeout=20_000)
        page.locator("#a1111js_show").click()
        page.locator("#a1111js_renew").wait_for(state="visible", timeout=20_000)
        # titles: the extension's hover text is on its button
        page.wait_for_function("() => document.querySelector('#a1111js_echo').title === 'Repeat the txt2img prompt'",
                               timeout=10_000)

        # the extension's "Send to txt2img" (ParamBinding): the infotext fills txt2img, which is shown
        page.locator("#tab_a1111js").get_by_role("button", name="Send to txt2img").click()
        page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value === 'a red fox'",
                               timeout=20_000)
        assert page.locator("#tab_txt2img").is_visible()
        assert page.locator("#txt2img_steps input[type=number]").input_value() == "7"

        # switch_to_img2img / switch_to_inpaint pick the tab and its mode
        page.evaluate("() => switch_to_img2img()")
        page.wait_for_function("() => uiElementIsVisible(document.getElementById('tab_img2img'))", timeout=10_000)
        page.wait_for_function("() => get_tab_index('mode_img2img') === 0", timeout=10_000)
        page.evaluate("() => switch_to_inpaint()")
        page.wait_for_function("() => get_tab_index('mode_img2img') === 2", timeout=10_000)
        assert page.locator("#img2img_inpaint_tab").is_visible()

        # Apply settings: opts follows and onOptionsChanged runs
        changed = page.evaluate("() => a1111js.changed")
        page.get_by_role("tab", name="Settings").click()
        page.locator("#settings_search textarea, #settings_search input").first.fill("Greeting")
        field = page.locator("#setting_a1111js_greeting textarea, #setting_a1111js_greeting input").first
        field.fill("bonjour")
        page.locator("#settings_submit").click()
        page.wait_for_function("() => a1111js.latest === 'bonjour' && opts.a1111js_greeting === 'bonjour'",
                               timeout=20_000)
        assert page.evaluate("() => a1111js.changed") > changed
        assert not errors, errors
    except BaseException:
        print(server.log())
        raise
    finally:
        page.close()
