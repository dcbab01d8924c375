"""Gradio 3's `Blocks.dependencies`, for extensions that look up the page's events (agent-scheduler finds the
Generate button's click and its inputs this way).

Gradio 3 kept `blocks.dependencies`: a list of dicts, one per event in the order of `blocks.fns`, with "targets"
(the ids of the components that trigger it), "trigger" (the event's name), "inputs" and "outputs" (component ids),
"js", "queue", ... Gradio 6 keeps the events only as `blocks.fns` (a dict of BlockFunction by id). Here
`dependencies` is built from it on each read: the dict Gradio 6 sends to the page for each event, with "targets"
and "trigger" in Gradio 3's shape (an event of several triggers, `gr.on`, which Gradio 3 did not have, gives the
first one's name). What Gradio 6 changed in `fns` itself (a dict, not a list) is not translated: the web UI's own
code reads it.
"""
from __future__ import annotations

from gradio.blocks import Blocks


def _dependencies(blocks: Blocks) -> list[dict]:
    found = []
    for function in blocks.fns.values():
        dependency = function.get_config()
        dependency["targets"] = [block_id for block_id, _ in function.targets]
        dependency["trigger"] = function.targets[0][1] if function.targets else None
        found.append(dependency)
    return found


def install() -> None:
    """Idempotent."""
    if not hasattr(Blocks, "dependencies"):
        Blocks.dependencies = property(_dependencies)
