"""A1111's `modules.ui_gradio_extensions` for extensions: `reload_javascript()`.

A1111 calls it (and a few extensions do, after adding a tab) to put every extension's `javascript/*.js` and
`style.css` into the page Gradio serves. Here the page is built with them already (`modules/ui/__init__.py`
`head_html`/`page_css`, each enabled extension's files, at start), so there is nothing left for it to do. A1111's
`webpath`, `javascript_html`, `css_html` and `reload_javascript`'s template patching have no equivalent: the
page's files are not served by path (`missing_name` names the extension that asks).
"""
from __future__ import annotations

from modules.addons.missing_names import missing_name


def reload_javascript() -> None:
    """Every enabled extension's JavaScript and CSS is in the page since start: nothing to reload."""


def __getattr__(name: str):
    raise missing_name("modules.ui_gradio_extensions", name,
                       "the page carries extensions' JavaScript and CSS itself; files are not served by path")
