"""A1111's `modules.shared_items` for extensions (which also reach these as `shared.list_checkpoint_tiles`, …):
the running server's lists for settings and dropdowns."""
from __future__ import annotations

from modules.addons.missing_names import missing_name
from modules.addons.running import services


def sd_vae_items() -> list[str]:
    """The `sd_vae` setting's choices: Automatic, None and each VAE file."""
    return services().networks.vaes.choices()


def refresh_vae_list() -> None:
    services().networks.vaes.refresh()


def list_checkpoint_tiles(use_short: bool = False) -> list[str]:
    from modules import sd_models

    return sd_models.checkpoint_tiles(use_short)


def refresh_checkpoints() -> None:
    services().refresh_checkpoints()


def list_samplers() -> list:
    from modules import sd_samplers

    return sd_samplers.all_samplers


def reload_hypernetworks() -> None:
    services().networks.hypernetworks.refresh()


def __getattr__(name: str):
    # cross_attention_optimizations, sd_unet_items, realesrgan_models_names, ui_reorder_categories, …
    raise missing_name("modules.shared_items", name)
