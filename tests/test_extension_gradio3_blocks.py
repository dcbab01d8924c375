"""Gradio 3's `Blocks.dependencies` for extensions (issue 21): agent-scheduler finds the Generate button's click, its
inputs and outputs, by reading it."""
from __future__ import annotations

import gradio as gr

from modules.ui import gradio3_blocks


def test_dependencies_list_each_event_in_gradio_3s_shape():
    gradio3_blocks.install()
    with gr.Blocks() as demo:
        prompt, result, button = gr.Textbox(), gr.Textbox(), gr.Button(elem_id="stand_in_generate")
        button.click(lambda text: text, inputs=[prompt], outputs=[result], js="(x) => x")
        gr.on([prompt.submit, result.change], lambda text: text, inputs=[result], outputs=[prompt])
    click, several = demo.dependencies
    assert click["targets"] == [button._id] and click["trigger"] == "click"
    assert click["inputs"] == [prompt._id] and click["outputs"] == [result._id] and click["js"] == "(x) => x"
    assert several["targets"] == [prompt._id, result._id] and several["trigger"] == "submit"
    # one entry per event, in the order of blocks.fns (Gradio 3 code indexes both alike)
    assert [dependency["id"] for dependency in demo.dependencies] == list(demo.fns)
