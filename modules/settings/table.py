"""The built-in options and A1111's settings sections.

Keys are A1111's (`modules/shared_options.py`) so `/sdapi/v1/options` clients and `override_settings`
work unchanged. Options marked `restrict_api` (output folders, filename patterns) cannot be changed
over the API, as in A1111, because a writable output path is a file-write primitive.

`HONOURED` holds the options this web UI acts on; `OPTIONS` is every option: A1111's whole table
(`settings/a1111_options.py`, in its order), each key defined by `HONOURED` where it is there, else stored with
A1111's default and marked as having no effect here, then the options of ours A1111 does not have.
"""
from __future__ import annotations

from modules.settings.a1111_options import A1111_RESTRICTED, A1111_SECTIONS
from modules.settings.option_info import OptionInfo

# A1111's section ids and titles, in the order its Settings tab lists them; extensions add their own.
SECTIONS: dict[str, str] = {
    "saving-images": "Saving images/grids",
    "saving-paths": "Paths for saving",
    "saving-to-dirs": "Saving to a directory",
    "upscaling": "Upscaling",
    "face-restoration": "Face restoration",
    "system": "System",
    "profiler": "Profiler",
    "api": "API",
    "training": "Training",
    "sd": "Stable Diffusion",
    "sdxl": "Stable Diffusion XL",
    "sd3": "Stable Diffusion 3",
    "vae": "VAE",
    "img2img": "img2img",
    "optimizations": "Optimizations",
    "compatibility": "Compatibility",
    "interrogate": "Interrogate",
    "extra_networks": "Extra Networks",
    "ui_prompt_editing": "Prompt editing",
    "ui_gallery": "Gallery",
    "ui_alternatives": "UI alternatives",
    "ui": "User interface",
    "infotext": "Infotext",
    "sampler-params": "Sampler parameters",
    "postprocessing": "Postprocessing",
    "canvas_hotkey": "Canvas Hotkeys",
    "settings_in_ui": "Settings in UI",
    "hypertile": "Hypertile",
    "callbacks": "Callbacks",
    "control_net": "ControlNet",
}

HONOURED: dict[str, OptionInfo] = {
    # Stable Diffusion
    "sd_model_checkpoint": OptionInfo("", "Stable Diffusion checkpoint", "sd"),
    "sd_checkpoints_limit": OptionInfo(2, "Maximum number of checkpoints loaded at the same time", "sd",
                                       minimum=1, maximum=10),
    "sd_checkpoints_keep_in_cpu": OptionInfo(True, "Only keep one model on device (others parked in RAM)", "sd"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", "sd", minimum=1, maximum=12),
    "sd_model_prediction_overrides": OptionInfo(
        {}, "Prediction type per checkpoint (name → epsilon | v_prediction), overriding detection", "sd"),
    "sd_vae": OptionInfo("Automatic", "SD VAE (Automatic, None = the checkpoint's own, or a file)", "sd"),
    "sd_vae_overrides_per_model_preferences": OptionInfo(True, "Selected VAE overrides per-model preferences", "sd"),
    "emphasis": OptionInfo("Original", "Emphasis mode for (words:1.2)", "sd",
                           choices=("Original", "No norm", "Ignore", "None")),
    "randn_source": OptionInfo("GPU", "Random number generator source (NV: NVIDIA's GPU noise on any device)", "sd",
                               choices=("GPU", "CPU", "NV")),
    # Saving images
    "samples_save": OptionInfo(True, "Always save all generated images", "saving-images"),
    "samples_format": OptionInfo("png", "File format for images", "saving-images", choices=("png", "jpg", "webp")),
    "grid_save": OptionInfo(True, "Always save all generated image grids", "saving-images"),
    "grid_format": OptionInfo("png", "File format for grids", "saving-images", choices=("png", "jpg", "webp")),
    "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters into files",
                                 "saving-images"),
    "save_selected_only": OptionInfo(True, "When using 'Save' button, only save a single selected image",
                                     "saving-images"),
    "save_write_log_csv": OptionInfo(True, "Write log.csv when saving images using 'Save' button", "saving-images"),
    "save_to_dirs": OptionInfo(True, "Save images to a subdirectory named after the date", "saving-to-dirs"),
    "grid_save_to_dirs": OptionInfo(True, "Save grids to a subdirectory", "saving-to-dirs"),
    "use_save_to_dirs_for_ui": OptionInfo(False, "When using \"Save\" button, save images to a subdirectory",
                                          "saving-to-dirs"),
    "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images", "Output directory for txt2img images",
                                         "saving-paths", restrict_api=True),
    "outdir_txt2img_grids": OptionInfo("outputs/txt2img-grids", "Output directory for txt2img grids",
                                       "saving-paths", restrict_api=True),
    "outdir_img2img_samples": OptionInfo("outputs/img2img-images", "Output directory for img2img images",
                                         "saving-paths", restrict_api=True),
    "outdir_img2img_grids": OptionInfo("outputs/img2img-grids", "Output directory for img2img grids",
                                       "saving-paths", restrict_api=True),
    "outdir_extras_samples": OptionInfo("outputs/extras-images", "Output directory for images from extras tab",
                                        "saving-paths", restrict_api=True),
    "outdir_save": OptionInfo("log/images", "Directory for saving images using the Save button", "saving-paths",
                              restrict_api=True),
    # Upscaling
    "ESRGAN_tile": OptionInfo(192, "Tile size for ESRGAN-family upscalers (0 = no tiling)", "upscaling",
                              minimum=0, maximum=512),
    "ESRGAN_tile_overlap": OptionInfo(8, "Tile overlap for ESRGAN-family upscalers, in pixels", "upscaling",
                                      minimum=0, maximum=48),
    "upscaler_for_img2img": OptionInfo("None", "Upscaler for img2img (resizing up without a latent mode)",
                                       "upscaling"),
    "face_restoration": OptionInfo(False, "Restore faces", "face-restoration", infotext="Face restoration").info(
        "will use a third-party model on generation result to reconstruct faces"),
    "face_restoration_model": OptionInfo("CodeFormer", "Face restoration model", "face-restoration",
                                         choices=("CodeFormer", "GFPGAN")),
    "code_former_weight": OptionInfo(0.5, "CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
                                     "face-restoration", minimum=0.0, maximum=1.0),
    # img2img
    "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies",
                                    "img2img"),
    "img2img_background_color": OptionInfo("#ffffff", "With img2img, fill transparent parts of the input image "
                                           "with this color", "img2img"),
    "hires_fix_show_sampler": OptionInfo(False, "Hires fix: show hires sampler selection", "ui"),
    "hires_fix_show_prompts": OptionInfo(False, "Hires fix: show hires prompt and negative prompt", "ui"),
    # Infotext
    "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext", "infotext"),
    "add_model_name_to_info": OptionInfo(True, "Add model name to infotext", "infotext"),
    "add_vae_name_to_info": OptionInfo(True, "Add VAE name to infotext", "infotext"),
    "add_vae_hash_to_info": OptionInfo(True, "Add VAE hash to infotext", "infotext"),
    "add_version_to_infotext": OptionInfo(True, "Add program version to infotext", "infotext"),
    # Live previews
    "quicksettings_list": OptionInfo(
        ["sd_model_checkpoint", "sd_vae"], "Quicksettings list", "ui",
    ).info("setting entries that appear at the top of page rather than in settings tab").needs_restart(),
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image", "ui"),
    "show_progress_type": OptionInfo("TAESD", "Live preview method (TAESD needs its decoder in models/VAE-taesd; "
                                     "without it, and for Approx NN, Approx cheap is used)", "ui",
                                     choices=("Full", "Approx NN", "Approx cheap", "TAESD")),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period (steps)", "ui", minimum=-1,
                                              maximum=32),
    # API (security switches: never changeable through the API itself)
    "api_enable_requests": OptionInfo(True, "Allow http:// and https:// URLs for input images in the API",
                                      "api", restrict_api=True),
    "api_useragent": OptionInfo("", "User agent for API image requests", "api", restrict_api=True),
    # Optimizations (speed and memory; none of them changes the image beyond fp16 rounding, except VAE tiling's
    # faint seams)
    "compile_unet": OptionInfo("None", "Compile the UNet with torch.compile (CUDA). The first image of each size "
                               "compiles; the compiled code is cached in <data-dir>/cache, so a restart does not "
                               "pay again", "optimizations",
                               choices=("None", "torch.compile", "torch.compile + CUDA graphs")),
    "compile_vae": OptionInfo(False, "Compile the VAE decoder too (with compile_unet)", "optimizations"),
    "vae_tiling": OptionInfo(False, "Decode and encode large images in tiles (less VRAM; always on with "
                             "--lowvram, and used anyway when a decode runs out of memory)", "optimizations"),
    "vae_slicing": OptionInfo(False, "Decode a batch one image at a time (less VRAM)", "optimizations"),
    "attention_slicing": OptionInfo(False, "Compute attention in slices (less VRAM, slower; for cards where "
                                    "PyTorch's memory-efficient attention is missing)", "optimizations"),
    "token_merging_ratio": OptionInfo(0.0, "Token merging ratio (0 = off; faster at large sizes, changes the "
                                      "image)", "optimizations", minimum=0.0, maximum=0.9),
    "token_merging_ratio_img2img": OptionInfo(0.0, "Token merging ratio for img2img (0 = the one above)",
                                              "optimizations", minimum=0.0, maximum=0.9),
    "token_merging_ratio_hr": OptionInfo(0.0, "Token merging ratio for the hires pass (0 = the first pass's)",
                                         "optimizations", minimum=0.0, maximum=0.9),
    "warmup_after_load": OptionInfo(True, "Warm up the GPU after a model loads, so the first image is not slow "
                                    "(CUDA only)", "optimizations"),
    # Queue
    "queue_max_size": OptionInfo(64, "Maximum number of waiting jobs", "system", minimum=1, maximum=10000),
    # ControlNet (the sd-webui-controlnet extension's keys)
    "control_net_unit_count": OptionInfo(3, "Multi-ControlNet: ControlNet unit number (requires restart)",
                                         "control_net", minimum=1, maximum=10),
    "control_net_model_cache_size": OptionInfo(2, "Model cache size (requires restart)", "control_net",
                                               minimum=1, maximum=10),
    "control_net_no_detectmap": OptionInfo(False, "Do not append detectmap to output", "control_net"),
    "control_net_detectmap_autosaving": OptionInfo(False, "Allow detectmap auto saving", "control_net"),
    "control_net_detectedmap_dir": OptionInfo("outputs/detected_maps", "Directory for detected maps auto saving",
                                              "control_net", restrict_api=True),
    # Hidden (no section): the Extensions tab writes them
    # Which extensions run code at start: changed in the Extensions tab (which refuses it when the server is
    # reachable from the network), never through the API, where that check would be bypassed.
    "disabled_extensions": OptionInfo([], "Disable these extensions", restrict_api=True),
    "disable_all_extensions": OptionInfo("none", "Disable all extensions (preserves the list of disabled extensions)",
                                         choices=("none", "extra", "all"), restrict_api=True),
    "sd_checkpoint_hash": OptionInfo("", "SHA256 hash of the current checkpoint"),   # set when a model loads
}

# A1111 options this web UI acts on with A1111's own definition (default, label, bounds) from a1111_options.py: no
# need to define them again in HONOURED; add a key here when code starts reading it.
A1111_ACTED_ON: frozenset[str] = frozenset({
    # Sampler parameters, read by diffusion/ksampling/plan.SamplerSettings
    "eta_ddim", "eta_ancestral", "s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_min", "sigma_max", "rho",
    "eta_noise_seed_delta", "always_discard_next_to_last_sigma", "sgm_noise_multiplier", "uni_pc_variant",
    "uni_pc_skip_type", "uni_pc_order", "uni_pc_lower_order_final", "beta_dist_alpha", "beta_dist_beta",
    "use_old_karras_scheduler_sigmas", "no_dpmpp_sde_batch_determinism",
})
NO_EFFECT = "no effect in this web UI: kept for A1111's API clients and extensions"


def _a1111_option(key: str, default, label: str, section: str | None, category: str | None,
                  bounds: tuple | list | None = None) -> OptionInfo:
    """An A1111 option as A1111 defines it (default, label, section, bounds), noted as having no effect here unless
    this web UI acts on it."""
    minimum = maximum = choices = args = None
    if isinstance(bounds, tuple):
        minimum, maximum, step = bounds
        args = {"step": step}
    elif bounds is not None:
        choices = tuple(bounds)
    info = OptionInfo(default, label, section, choices=choices, minimum=minimum, maximum=maximum,
                      restrict_api=key in A1111_RESTRICTED, component_args=args, category_id=category)
    return info if key in A1111_ACTED_ON else info.info(NO_EFFECT)


def with_a1111_options(honoured: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    """A1111's options in its order, each the honoured definition where there is one, else A1111's own (marked as
    having no effect here unless in A1111_ACTED_ON); then the honoured options A1111 does not have."""
    merged = {}
    for section, category, entries in A1111_SECTIONS:
        for key, default, label, *bounds in entries:
            merged[key] = honoured.get(key) or _a1111_option(key, default, label, section, category, *bounds)
    return {**merged, **{key: info for key, info in honoured.items() if key not in merged}}


OPTIONS: dict[str, OptionInfo] = with_a1111_options(HONOURED)
# A1111's options that have no effect in this web UI (stored, listed, noted as such).
NO_EFFECT_KEYS: frozenset[str] = frozenset(key for key in OPTIONS if key not in HONOURED and key not in A1111_ACTED_ON)
