"""A1111's modules/ui_components.py, for extensions: ToolButton, ResizeHandleRow, FormRow, FormColumn, FormGroup,
FormHTML, FormColorPicker, DropdownMulti, DropdownEditable and InputAccordion, defined as A1111 defines them.

Each is the Gradio component it derives from under another name; `gradio3.install()` (run first, below) makes
such subclasses render as their Gradio parent and keep their positional arguments. InputAccordion uses the
web UI's own checkbox-in-the-header accordion (modules/ui/accordions.py, script.js `inputAccordionChecked`).
"""
from __future__ import annotations

import gradio as gr
from gradio.context import Context

from modules.ui import gradio3

gradio3.install()   # before the classes below are made: Gradio's metaclass would otherwise drop their *args


class FormComponent:
    """A1111's mixin, which asked Gradio 3 for a Form around the block. A Gradio 6 Form around buttons or layouts
    collapses and clips them (A1111's ToolButtons in a row vanish), so, as in Forge (whose classes put it after the
    Gradio one), the block asks for none and sits in its row or column as it is."""

    def get_expected_parent(self):
        return None


class ToolButton(FormComponent, gr.Button):
    """Small button with a single emoji as text, fits inside gradio forms"""

    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        for key, value in (("size", "sm"), ("min_width", 0), ("scale", 0)):   # as the web UI's own tool buttons
            kwargs.setdefault(key, value)
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)


class ResizeHandleRow(gr.Row):
    """Same as gr.Row, with A1111's class for its resize handle"""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.elem_classes.append("resize-handle-row")


class FormRow(FormComponent, gr.Row):
    """Same as gr.Row but fits inside gradio forms"""


class FormColumn(FormComponent, gr.Column):
    """Same as gr.Column but fits inside gradio forms"""


class FormGroup(FormComponent, gr.Group):
    """Same as gr.Group but fits inside gradio forms"""


class FormHTML(FormComponent, gr.HTML):
    """Same as gr.HTML but fits inside gradio forms"""


class FormColorPicker(FormComponent, gr.ColorPicker):
    """Same as gr.ColorPicker but fits inside gradio forms"""


class DropdownMulti(FormComponent, gr.Dropdown):
    """Same as gr.Dropdown but always multiselect"""

    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)


class DropdownEditable(FormComponent, gr.Dropdown):
    """Same as gr.Dropdown but allows editing value"""

    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)


class InputAccordion(gr.Checkbox):
    """A gr.Accordion that can be used as an input: its value is True when enabled. It is a hidden checkbox that
    the accordion's header shows as a checkbox; opening the accordion ticks it, as in A1111.

        with InputAccordion(False, label="My feature") as enabled:
            strength = gr.Slider(...)
        return [enabled, strength]
    """

    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        classes = kwargs.get("elem_classes") or []
        checkbox = {**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": "hidden",
                    "elem_classes": ["input-accordion-checkbox", f"for-{self.accordion_id}",
                                     *([classes] if isinstance(classes, str) else classes)]}
        super().__init__(value, **checkbox)
        if Context.root_block is not None:
            self.change(None, inputs=[self], js=f"(checked) => inputAccordionChecked({self.accordion_id!r}, checked)")
        self.accordion = gr.Accordion(kwargs.get("label", "Accordion"), open=bool(value), elem_id=self.accordion_id,
                                      elem_classes=["input-accordion"], visible=kwargs.get("visible", True))

    def extra(self):
        """A column in the accordion's header, for something next to its label:

            with InputAccordion(False, label="Accordion") as acc:
                with acc.extra():
                    FormHTML(value="hello", min_width=0)
        """
        return gr.Column(elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)
