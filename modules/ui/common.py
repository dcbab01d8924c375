"""Small pieces shared by the tabs: tool buttons, HTML escaping of user text, the token counter."""
from __future__ import annotations

import html

import gradio as gr

from modules.prompts import chunks

# Event handlers of the UI are internal: the project's public HTTP API is /sdapi/v1.
PRIVATE = "private"


def slider(*args, **kwargs) -> gr.Slider:
    """A slider without Gradio's reset button (A1111's look)."""
    return gr.Slider(*args, buttons=[], **kwargs)


def tool_button(label: str, elem_id: str, **kwargs) -> gr.Button:
    """A1111's square emoji button (🔄, 🎲, ♻️, ⇅, ↙️); its hover text is set in script.js by elem_id."""
    return gr.Button(label, elem_id=elem_id, elem_classes=["tool"], size="sm", min_width=0, scale=0, **kwargs)


def escape_multiline(text: str) -> str:
    """User text (prompts, infotext, error messages) as HTML that shows it verbatim, newlines kept."""
    return html.escape(text or "").replace("\n", "<br>\n")


def message_html(text: str, kind: str = "info") -> str:
    return f'<div class="message {kind}">{escape_multiline(text)}</div>'


def token_counter_text(text: str | None) -> str:
    """A1111's "N/75" counter; the limit grows by 75 with each chunk the prompt needs."""
    used, limit = chunks.token_count(text or "")
    return f"<span>{used}/{limit}</span>"


def number(value, kind: type):
    """A component's value as `kind` for the strict request model; non-integral floats stay floats so
    that validation names the field instead of silently rounding it."""
    if value is None or isinstance(value, bool):
        return value
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    if kind is float and isinstance(value, int):
        return float(value)
    return value
