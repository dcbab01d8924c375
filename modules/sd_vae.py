"""A1111's `modules.sd_vae` for extensions, over the running server's VAE list (`networks/vae.py`).

Here a VAE is not loaded into the model and swapped out again: each job takes the VAE its `sd_vae` setting
(A1111's rules: --vae-path, the setting, the checkpoint's preferred VAE, one named after the checkpoint) resolves
to. So `loaded_vae_file` is the file the current model's jobs use now (None: the checkpoint's own VAE), and
`reload_vae_weights()` after setting `opts.sd_vae` has nothing left to do but refresh the list. A1111's saved
copy of the checkpoint's own weights (`base_vae`, `store_base_vae`, …) has no equivalent and raises `missing_name`.
"""
from __future__ import annotations

import os

from modules.addons.missing_names import missing_name
from modules.addons.running import LiveView, services as _services

unspecified = object()


# A1111's `vae_dict` (name → file path), read from the VAE list at each use
vae_dict = LiveView(lambda: {info.name: str(info.path) for info in _services().networks.vaes.items()})


def refresh_vae_list() -> None:
    _services().networks.vaes.refresh()


def get_filename(filepath) -> str:
    return os.path.basename(filepath)


def find_vae_near_checkpoint(checkpoint_file):
    """A VAE named after the checkpoint (`<name>.vae.safetensors`, …), or None."""
    services = _services()
    info = services.registry.find(str(checkpoint_file))
    found = services.networks.vaes.near_checkpoint(info)
    return str(found.path) if found is not None else None


def _current_vae():
    """The VaeInfo the current model's next job uses, or None for the checkpoint's own VAE (or no model)."""
    from modules.networks.cards.files import read_user_metadata

    services = _services()
    model = services.models.current
    if model is None:
        return None
    return services.networks.vaes.resolve(
        services.options.sd_vae, model.info, preferred=read_user_metadata(model.info.filename).get("vae"),
        setting_overrides_preferred=services.options.sd_vae_overrides_per_model_preferences)


def get_loaded_vae_name():
    info = _current_vae()
    return info.name if info is not None else None


def get_loaded_vae_hash():
    info = _current_vae()
    return info.shorthash() if info is not None else None


def is_automatic() -> bool:
    return _services().options.sd_vae in ("Automatic", "auto")


def reload_vae_weights(sd_model=None, vae_file=unspecified):
    """The VAE is chosen per job from `opts.sd_vae`: refresh the list and give the current model. A file
    passed as `vae_file` cannot be put into the model here; set `opts.sd_vae` (or a job's override) to it."""
    from modules import sd_models

    if vae_file is not unspecified:
        raise missing_name("modules.sd_vae", "reload_vae_weights(vae_file=...)",
                           "the VAE is chosen per job from the sd_vae setting; set shared.opts.sd_vae or "
                           "p.override_settings['sd_vae'] to the file's name")
    refresh_vae_list()
    return sd_models.current_model()


def __getattr__(name: str):
    if name == "loaded_vae_file":
        info = _current_vae()
        return str(info.path) if info is not None else None
    if name == "vae_path":
        return str(_services().networks.vaes.vae_folder)
    # base_vae, store_base_vae, restore_base_vae, load_vae, clear_loaded_vae, checkpoints_loaded, …
    raise missing_name("modules.sd_vae", name, "the VAE is applied per job here (the sd_vae setting); A1111's "
                                               "swapping of the model's VAE weights has no equivalent")
