"""The bar above the tabs: A1111's quicksettings (`quicksettings_list`), the checkpoint and SD VAE dropdowns
with their 🔄 buttons first among them by default."""
from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass

import gradio as gr

from modules.jobs import QueueFull
from modules.ui import settings
from modules.ui.common import PRIVATE, tool_button

log = logging.getLogger(__name__)

REPEAT_SECONDS = 2.0
AUTOMATIC = "Automatic"
PREDICTION_CHOICES = [AUTOMATIC, "epsilon", "v_prediction"]


def checkpoint_titles(services) -> list[str]:
    return [info.title for info in services.registry.items()]


def current_checkpoint(services) -> str | None:
    """The loaded checkpoint, else the one that will be loaded first (last used, else the first found)."""
    model = services.models.current
    if model is not None:
        return model.info.title
    info = services.registry.find(services.options.sd_model_checkpoint)
    if info is None:
        items = services.registry.items()
        info = items[0] if items else None
    return info.title if info is not None else None


def prediction_override(services, title: str | None) -> str:
    """The prediction type the user forced for this checkpoint, or Automatic (detected)."""
    info = services.registry.find(title) if title else None
    overrides = services.options.sd_model_prediction_overrides or {}
    return overrides.get(info.name, AUTOMATIC) if info is not None else AUTOMATIC


def set_prediction_override(services, choice: str, title: str | None):
    """Store the override for the shown checkpoint and reload it, so the next image uses it."""
    info = services.registry.find(title) if title else None
    if info is None:
        gr.Warning("Choose a checkpoint first.", title="Prediction type")
        return gr.update(value=AUTOMATIC)
    if choice == prediction_override(services, title):   # opened and closed without a new choice (Gradio's
        return gr.skip()                                  # Dropdown fires `input` on blur too)
    overrides = dict(services.options.sd_model_prediction_overrides or {})
    if choice == AUTOMATIC:
        overrides.pop(info.name, None)
    else:
        overrides[info.name] = choice
    services.update_options({"sd_model_prediction_overrides": overrides}, from_api=False)
    job = services.switch_model(info.title)
    if job.state == "done":
        gr.Info(html.escape(f"{info.name}: {services.models.current.spec.label}"), title="Prediction type")
    else:
        gr.Warning(html.escape(f"Could not reload {info.name}: {job.error}"), title="Prediction type")
    return gr.skip()


def no_checkpoint_html(services) -> str:
    folder = html.escape(str(services.paths.checkpoints))
    return (f'<div class="message warning">No checkpoint found. Put a Stable Diffusion checkpoint '
            f'(a <code>.safetensors</code> or <code>.ckpt</code> file) in <code>{folder}</code>, '
            f'then press 🔄 next to the checkpoint list.</div>')


def same_checkpoint(services, title: str | None, other: str | None) -> bool:
    """Whether two titles name one file: a pick's "x.safetensors" and, once loaded and hashed, "x.safetensors
    [abc123]"."""
    if not title or not other:
        return False
    if title == other:
        return True
    found, shown = services.registry.find(title), services.registry.find(other)
    return found is not None and shown is not None and found.filename == shown.filename


def switch_checkpoint(services, title: str, state: dict):
    """Load the picked checkpoint on the worker; on failure, show the loaded one again. → (dropdown update, state)

    Gradio 6's Dropdown fires `input` twice for one mouse pick (on the pick, then on blur): the repeat of a
    pick that is shown already, or that failed a moment ago, is not a new request.
    """
    state = state or {}
    failed = state.get("failed")
    if not title or same_checkpoint(services, title, state.get("title")) or (
            failed and failed[0] == title and time.monotonic() - failed[1] < REPEAT_SECONDS):
        return gr.skip(), state
    log.info("switching checkpoint to %s", title)
    try:
        job = services.switch_model(title)
    except QueueFull as error:
        gr.Warning(html.escape(str(error)), title="Checkpoint")
        return gr.update(value=state.get("title")), state
    titles = checkpoint_titles(services)
    if job.state == "done":
        return gr.update(choices=titles, value=job.result), {"title": job.result, "failed": None}
    message = job.error or f"loading did not finish ({job.state})"
    log.warning("switching to checkpoint %s failed: %s", title, message)
    gr.Warning(html.escape(f"Could not load {title}: {message}"), title="Checkpoint")
    loaded = services.models.current
    back = loaded.info.title if loaded is not None else state.get("title")
    back = back if back in titles else None
    return gr.update(choices=titles, value=back), {"title": back, "failed": (title, time.monotonic())}


def vae_update(services) -> dict:
    """The SD VAE dropdown as the options and the VAE folder say now."""
    choices = services.networks.vaes.choices()
    value = services.options.sd_vae
    if value not in choices:   # a file that went away: show it anyway, generation will name the problem
        choices = [*choices, value]
    return gr.update(choices=choices, value=value)


def set_vae(services, value: str):
    """A1111's `sd_vae` quicksetting: stored in config.json, used by the next generation."""
    if not value or value == services.options.sd_vae:
        return gr.skip()
    try:
        services.update_options({"sd_vae": value}, from_api=False)
    except Exception as error:  # noqa: BLE001 - a refused setting is shown, never a broken page
        log.warning("could not set sd_vae to %r: %s", value, error)
        gr.Warning(html.escape(str(error)), title="SD VAE")
        return gr.update(value=services.options.sd_vae)
    log.info("sd_vae set to %s", value)
    return gr.skip()


def quicksettings_keys(services) -> list[str]:
    """The keys of `quicksettings_list` the bar shows, in order: unknown ones (an extension not loaded) and, with
    --hide-ui-dir-config, folder options are skipped with a warning; the checkpoint is always there (first
    unless listed elsewhere), since extra-network cards, "Send to" and ControlNet switch models through it."""
    infos = services.options.infos()
    hide_dirs = bool(getattr(services.args, "hide_ui_dir_config", False))
    keys = []
    for key in dict.fromkeys(services.options.quicksettings_list or []):
        if key not in infos:
            log.warning("quicksettings_list: unknown setting %r skipped", key)
        elif hide_dirs and infos[key].restrict_api:
            log.warning("quicksettings_list: %r is hidden by --hide-ui-dir-config", key)
        elif not infos[key].section:   # hidden options have their own controls (disabled_extensions: the
            log.warning("quicksettings_list: %r cannot be a quicksetting", key)   # Extensions tab's checks)
        else:
            keys.append(key)
    return keys if "sd_model_checkpoint" in keys else ["sd_model_checkpoint", *keys]


def set_quicksetting(services, key: str, codec: str, value):
    """Save one quicksetting as soon as it is changed; a refused value is named and the saved one shown again."""
    info = services.options.infos()[key]
    try:
        new = settings.from_component(codec, info, key, value)
        if new == services.options.get(key):
            return gr.skip()     # Gradio may fire twice for one change
        services.update_options({key: new}, from_api=False)
    except ValueError as error:
        log.warning("could not set %s to %r: %s", key, value, error)
        gr.Warning(html.escape(str(error)), title=info.label or key)
        return gr.update(value=settings.to_component(codec, services.options.get(key)))
    log.info("%s set to %r", key, new)
    gr.Info(html.escape(f"{info.label or key}: saved"), title="Settings")
    return gr.skip()


def _saver(services, key: str, codec: str):
    def save(value):
        return set_quicksetting(services, key, codec, value)
    return save


def _commit_events(component) -> list:
    """When a quicksetting's component holds a finished value: a slider let go, a text confirmed, a pick made."""
    if isinstance(component, gr.Slider):
        return [component.release]
    if isinstance(component, (gr.Textbox, gr.Number)):
        return [component.submit, component.blur]
    return [component.input] if hasattr(component, "input") else [component.change]


@dataclass
class TopBar:
    checkpoint: gr.Dropdown
    shown: gr.State          # {"title": shown checkpoint, "failed": (title, time) of the last failed pick}
    vae: gr.Dropdown | None  # None when sd_vae is not in quicksettings_list
    settings: dict           # other quicksettings: key → component


def create_topbar(demo: gr.Blocks, services) -> TopBar:
    """The quicksettings (`quicksettings_list`): the checkpoint dropdown with its 🔄 and prediction type, the SD VAE
    dropdown with its 🔄, any other option by its type; and the "no checkpoint" message. Updated on each page load."""
    titles = checkpoint_titles(services)
    vae = refresh_vae = None
    others: dict[str, tuple] = {}
    with gr.Row(elem_id="quicksettings", equal_height=False):
        for key in quicksettings_keys(services):
            if key == "sd_model_checkpoint":
                dropdown = gr.Dropdown(choices=titles, value=current_checkpoint(services),
                                       label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint",
                                       interactive=True, filterable=True, allow_custom_value=True, min_width=400,
                                       scale=0)
                refresh = tool_button("🔄", "refresh_sd_model_checkpoint")
                # A visible per-model override for misdetected v-prediction models (A1111 needs a .yaml copied).
                # Each quicksetting without a 🔄 after it gets a column: side by side, Gradio would stack them.
                with gr.Column(scale=0, min_width=160):
                    prediction = gr.Dropdown(choices=PREDICTION_CHOICES,
                                             value=prediction_override(services, dropdown.value),
                                             label="Prediction type", elem_id="setting_prediction_type",
                                             interactive=True, min_width=160)
            elif key == "sd_vae":
                vae = gr.Dropdown(choices=services.networks.vaes.choices(), value=services.options.sd_vae,
                                  label="SD VAE", elem_id="setting_sd_vae", interactive=True, filterable=True,
                                  allow_custom_value=True, min_width=240, scale=0)
                refresh_vae = tool_button("🔄", "refresh_sd_vae")
            else:
                with gr.Column(scale=0, min_width=160):
                    others[key] = settings.setting_component(services, key, services.options.infos()[key])
    missing = gr.HTML(no_checkpoint_html(services), elem_id="no_checkpoint_message", visible=not titles,
                      js_on_load=None)
    # What this page shows (to go back to when a switch fails) and the last failed pick (title, time).
    shown = gr.State({"title": current_checkpoint(services), "failed": None})

    def list_and_message():
        titles, title = checkpoint_titles(services), current_checkpoint(services)
        updates = [gr.update(choices=titles, value=title), gr.update(visible=not titles),
                   {"title": title, "failed": None}]
        return updates + [vae_update(services)] if vae is not None else updates

    def refresh_list():
        services.refresh_checkpoints()
        services.networks.vaes.refresh()   # VAEs may sit next to checkpoints
        return list_and_message()

    def refresh_vaes():
        services.networks.vaes.refresh()
        return vae_update(services)

    outputs = [dropdown, missing, shown, *([vae] if vae is not None else [])]
    demo.load(list_and_message, outputs=outputs, show_progress="hidden", api_visibility=PRIVATE)
    refresh.click(refresh_list, outputs=outputs, show_progress="hidden", api_visibility=PRIVATE)
    # `input` fires when the user picks a checkpoint (mouse or keyboard), not when the server sets the value.
    dropdown.input(lambda title, state: switch_checkpoint(services, title, state), inputs=[dropdown, shown],
                   outputs=[dropdown, shown], show_progress="full", trigger_mode="once", api_visibility=PRIVATE)
    dropdown.change(lambda title: prediction_override(services, title), inputs=dropdown, outputs=prediction,
                    show_progress="hidden", api_visibility=PRIVATE)
    prediction.input(lambda choice, title: set_prediction_override(services, choice, title),
                     inputs=[prediction, dropdown], outputs=prediction, show_progress="full", trigger_mode="once",
                     api_visibility=PRIVATE)
    if vae is not None:
        refresh_vae.click(refresh_vaes, outputs=[vae], show_progress="hidden", api_visibility=PRIVATE)
        vae.input(lambda value: set_vae(services, value), inputs=[vae], outputs=[vae], show_progress="hidden",
                  trigger_mode="once", api_visibility=PRIVATE)
    for key, (component, codec) in others.items():
        gr.on(_commit_events(component), _saver(services, key, codec),
              inputs=[component], outputs=[component], show_progress="hidden", trigger_mode="once",
              api_visibility=PRIVATE)
    if others:
        demo.load(lambda: [settings.to_component(codec, services.options.get(key))
                           for key, (_, codec) in others.items()],
                  outputs=[component for component, _ in others.values()], show_progress="hidden",
                  api_visibility=PRIVATE)
    return TopBar(dropdown, shown, vae, {key: component for key, (component, _) in others.items()})
