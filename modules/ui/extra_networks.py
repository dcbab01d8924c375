"""A1111's Extra Networks panel under the prompt: tabs of cards (Textual Inversion, Checkpoints, Lora, and
Hypernetworks where the backend lists them), search, sort, 🔄, and the 🛠️ user-metadata editor.

The cards, their HTML (escaped) and what a click does are `modules.networks.cards`; this module only wires
them to Gradio. The browser sends back a card's kind and key; the card is looked up among the listed ones,
so nothing the browser sends becomes a path. Previews travel inside the page as small base64 JPEGs: the
model folders are never served.
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass

import gradio as gr

from modules.networks import cards
from modules.ui.common import PRIVATE, tool_button
from modules.ui.topbar import switch_checkpoint

log = logging.getLogger(__name__)

ASCENDING, DESCENDING = "🔼", "🔽"

# A click on a card (or on its 🛠️) becomes a `click` event of the gr.HTML holding the cards, carrying the
# card's kind and key; Enter or Space on a focused card does the same.
CARDS_JS = """
const send = (event) => {
    const card = event.target.closest('.card[data-key]');
    if (!card || !element.contains(card)) { return; }
    const button = event.target.closest('[data-action]');
    event.preventDefault();
    event.stopPropagation();
    trigger('click', {action: button ? button.dataset.action : 'use', kind: card.dataset.kind,
                      key: card.dataset.key});
};
element.addEventListener('click', send);
element.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') { send(event); }
});
"""

NOT_LOADED = '<div class="extra-network-cards empty"><div class="nocards">Loading…</div></div>'


@dataclass
class ExtraNetworksPanel:
    accordion: gr.Accordion
    cards: dict[str, gr.HTML]      # kind → the tab's cards
    search: gr.Textbox
    sort: gr.Dropdown
    refresh: gr.Button


def folder_hint(services, kind: str) -> str:
    paths = services.paths
    folder = {cards.TEXTUAL_INVERSION: paths.embeddings, cards.CHECKPOINTS: paths.checkpoints,
              cards.LORA: paths.lora, cards.HYPERNETWORKS: paths.hypernetworks}.get(kind)
    return str(folder) if folder is not None else ""


def create_panel(services, tab: str, prompt: gr.Textbox, negative: gr.Textbox, topbar=None) -> ExtraNetworksPanel:
    """The panel; `topbar` (modules.ui.topbar.TopBar) lets a checkpoint card switch the model as its dropdown does."""
    networks, registry = services.networks, services.registry
    kinds = cards.available_kinds(networks)
    thumbnails = cards.ThumbnailCache()

    with gr.Accordion("Extra Networks", open=False, elem_id=f"{tab}_extra_networks",
                      elem_classes=["extra-networks"]) as accordion:
        with gr.Row(elem_id=f"{tab}_extra_networks_controls", elem_classes=["extra-network-controls"],
                    equal_height=True):
            search = gr.Textbox(placeholder="Search...", show_label=False, container=False, scale=4, min_width=160,
                                elem_id=f"{tab}_extra_search", elem_classes=["search"])
            sort = gr.Dropdown(list(cards.SORT_MODES), value="Path", show_label=False, container=False, scale=0,
                               min_width=170, elem_id=f"{tab}_extra_sort", filterable=False)
            order = tool_button(ASCENDING, f"{tab}_extra_sort_order")
            refresh = tool_button("🔄", f"{tab}_extra_refresh")
        descending = gr.State(False)
        htmls: dict[str, gr.HTML] = {}
        with gr.Tabs(elem_id=f"{tab}_extra_tabs"):
            for kind in kinds:
                with gr.Tab(cards.KINDS[kind], id=f"{tab}_{kind}", elem_id=f"{tab}_{kind}"):
                    htmls[kind] = gr.HTML(NOT_LOADED, elem_id=f"{tab}_{kind}_cards",
                                          elem_classes=["extra-network-pane"], js_on_load=CARDS_JS)
        editor = _create_editor(services, tab)

    outputs = [htmls[kind] for kind in kinds]

    def render(query: str, mode: str, desc: bool) -> list[str]:
        mode = mode if mode in cards.SORT_MODES else "Path"
        result = []
        for kind in kinds:
            try:
                listed = cards.sort_cards(cards.filter_cards(cards.list_cards(kind, networks, registry), query),
                                          mode, desc)
                result.append(cards.cards_html(listed, kind, thumbnails, folder_hint=folder_hint(services, kind)))
            except Exception as error:
                log.exception("listing %s failed", kind)
                result.append(f'<div class="extra-network-cards empty"><div class="nocards error">'
                              f'{html.escape(f"Could not list {cards.KINDS[kind]}: {error}")}</div></div>')
        return result

    def refresh_all(query: str, mode: str, desc: bool) -> list[str]:
        for kind in kinds:
            try:
                cards.refresh(kind, networks, registry)
            except Exception as error:  # noqa: BLE001
                log.warning("refreshing %s failed: %s", kind, error)
                gr.Warning(html.escape(f"Could not refresh {cards.KINDS[kind]}: {error}"), title="Extra Networks")
        return render(query, mode, desc)

    def flip(desc: bool, query: str, mode: str):
        desc = not desc
        return [desc, gr.update(value=DESCENDING if desc else ASCENDING), *render(query, mode, desc)]

    quiet = {"show_progress": "hidden", "api_visibility": PRIVATE}
    view = [search, sort, descending]
    accordion.expand(render, inputs=view, outputs=outputs, **quiet)
    search.input(render, inputs=view, outputs=outputs, trigger_mode="always_last", **quiet)
    search.submit(render, inputs=view, outputs=outputs, trigger_mode="always_last", **quiet)
    sort.input(render, inputs=view, outputs=outputs, **quiet)
    order.click(flip, inputs=[descending, search, sort], outputs=[descending, order, *outputs], **quiet)
    refresh.click(refresh_all, inputs=view, outputs=outputs, show_progress="minimal", api_visibility=PRIVATE)

    # ------------------------------------------------------------- clicking a card
    shown = topbar.shown if topbar is not None else gr.State(None)
    switch_outputs = [topbar.checkpoint, topbar.shown] if topbar is not None else []
    click_outputs = [prompt, negative, *switch_outputs, *editor.fields()]

    def click_handler(kind: str):
        def on_click(prompt_text: str, negative_text: str, state: dict | None, evt: gr.EventData):
            data = getattr(evt, "_data", None) or {}
            card = cards.find_card(cards.list_cards(kind, networks, registry), data.get("key"))
            if card is None:
                gr.Warning("That card is gone; press 🔄 to list the files again.", title="Extra Networks")
                return {}
            if data.get("action") == "edit":
                return editor.open(services, card)
            if card.kind == cards.CHECKPOINTS:
                if topbar is None:
                    return {}
                update, state = switch_checkpoint(services, card.title, state)
                return {topbar.checkpoint: update, topbar.shown: state}
            new_prompt, new_negative = cards.toggle_card(card, prompt_text, negative_text)
            return {prompt: new_prompt, negative: new_negative}
        return on_click

    for kind in kinds:
        htmls[kind].click(click_handler(kind), inputs=[prompt, negative, shown], outputs=click_outputs,
                          concurrency_limit=None, show_progress="hidden", api_visibility=PRIVATE)

    editor.connect(services, outputs, render, view)
    return ExtraNetworksPanel(accordion, htmls, search, sort, refresh)


# ----------------------------------------------------------------------------- the 🛠️ editor

@dataclass
class _Editor:
    panel: gr.Column
    heading: gr.HTML
    description: gr.Textbox
    activation: gr.Textbox
    weight: gr.Slider
    negative: gr.Textbox
    vae: gr.Dropdown
    notes: gr.Textbox
    save: gr.Button
    cancel: gr.Button
    editing: gr.State       # {"kind", "key"} of the card being edited

    def fields(self) -> list:
        return [self.panel, self.heading, self.description, self.activation, self.weight, self.negative, self.vae,
                self.notes, self.editing]

    def open(self, services, card: cards.Card) -> dict:
        """The editor filled with the card's user metadata; fields the kind has no use for are hidden."""
        metadata = card.user_metadata
        prompt_kind = card.kind != cards.CHECKPOINTS
        weighted = card.kind in (cards.LORA, cards.HYPERNETWORKS)
        vae_choices = services.networks.vaes.choices()
        vae = metadata.get(cards.VAE_KEY) or "Automatic"
        heading = (f'<div class="popup-title"><h3>{html.escape(card.name)}</h3>'
                   f'<div class="subtitle">{html.escape(cards.KINDS[card.kind])} · '
                   f'{html.escape(card.relative)}</div></div>')
        return {
            self.panel: gr.update(visible=True),
            self.heading: heading,
            self.description: metadata.get("description") or card.description,
            self.activation: gr.update(value=metadata.get("activation text", ""), visible=prompt_kind),
            self.weight: gr.update(value=float(metadata.get(cards.WEIGHT_KEY) or 0.0), visible=weighted),
            self.negative: gr.update(value=metadata.get("negative text", ""), visible=prompt_kind),
            self.vae: gr.update(choices=vae_choices if vae in vae_choices else [*vae_choices, vae], value=vae,
                                visible=card.kind == cards.CHECKPOINTS),
            self.notes: metadata.get("notes", ""),
            self.editing: {"kind": card.kind, "key": card.key},
        }

    def connect(self, services, outputs: list, render, view: list) -> None:
        networks, registry = services.networks, services.registry

        def save(editing: dict | None, description: str, activation: str, weight, negative: str, vae: str,
                 notes: str, *view_values):
            editing = editing or {}
            kind = editing.get("kind")
            card = cards.find_card(cards.list_cards(kind, networks, registry), editing.get("key")) \
                if kind in cards.KINDS else None
            if card is None:
                gr.Warning("That card is gone; press 🔄 to list the files again.", title="Edit metadata")
                return [gr.skip(), *[gr.skip()] * len(outputs)]
            data = {"description": description or "", "notes": notes or ""}
            if card.kind != cards.CHECKPOINTS:
                data.update({"activation text": activation or "", "negative text": negative or ""})
            if card.kind in (cards.LORA, cards.HYPERNETWORKS):
                data[cards.WEIGHT_KEY] = weight
            if card.kind == cards.CHECKPOINTS:
                data[cards.VAE_KEY] = "" if vae in (None, "Automatic") else vae
            try:
                cards.write_user_metadata(card.path, data, vae_choices=networks.vaes.choices())
            except (ValueError, OSError) as error:
                gr.Warning(html.escape(str(error)), title="Edit metadata")
                return [gr.skip(), *[gr.skip()] * len(outputs)]
            gr.Info(html.escape(f"Saved the metadata of {card.name}."), title="Edit metadata")
            return [gr.update(visible=False), *render(*view_values)]

        self.save.click(save, inputs=[self.editing, self.description, self.activation, self.weight, self.negative,
                                      self.vae, self.notes, *view],
                        outputs=[self.panel, *outputs], show_progress="hidden", api_visibility=PRIVATE)
        self.cancel.click(lambda: gr.update(visible=False), outputs=[self.panel], queue=False,
                          show_progress="hidden", api_visibility=PRIVATE)


def _create_editor(services, tab: str) -> _Editor:
    with gr.Column(visible=False, elem_id=f"{tab}_extra_networks_edit", elem_classes=["popup-dialog"]) as panel:
        heading = gr.HTML("", js_on_load=None, elem_id=f"{tab}_extra_edit_heading")
        description = gr.Textbox(label="Description", lines=2, max_lines=8, elem_id=f"{tab}_extra_edit_description")
        activation = gr.Textbox(label="Activation text", lines=1, max_lines=4,
                                info="Added to the prompt after the card's own text",
                                elem_id=f"{tab}_extra_edit_activation_text")
        weight = gr.Slider(0.0, cards.MAX_WEIGHT, value=0.0, step=0.05, label="Preferred weight",
                           info="0 = the default (1)", elem_id=f"{tab}_extra_edit_preferred_weight", buttons=[])
        negative = gr.Textbox(label="Negative prompt", lines=1, max_lines=4,
                              info="Added to the negative prompt with the card", elem_id=f"{tab}_extra_edit_negative")
        vae = gr.Dropdown(choices=services.networks.vaes.choices(), value="Automatic", label="Preferred VAE",
                          elem_id=f"{tab}_extra_edit_vae", visible=False, allow_custom_value=True)
        notes = gr.Textbox(label="Notes", lines=3, max_lines=12, elem_id=f"{tab}_extra_edit_notes")
        with gr.Row():
            cancel = gr.Button("Cancel", elem_id=f"{tab}_extra_edit_cancel")
            save = gr.Button("Save", variant="primary", elem_id=f"{tab}_extra_edit_save")
    editing = gr.State(None)
    return _Editor(panel, heading, description, activation, weight, negative, vae, notes, save, cancel, editing)
