"""The X/Y/Z plot's axes (scripts/xyz_grid.py): A1111's axis list, what each axis sets on `p` and how its
values are labelled, and finding the axis a request names.

The list is A1111's, in its order, because API clients send the axis type as an index into it; the axes this
backend cannot vary (k-diffusion sigma settings, ...) stay in the list, are left out of the UI, and are refused
with a reason. scripts/xyz_grid.py imports every public name here, so A1111 extensions find them on that module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from modules.diffusion import samplers
from modules.jobs import JobError

TITLE = "X/Y/Z plot"
PERMUTATIONS = "permutations"      # an axis type: every order of the given values (Prompt order)


def apply_field(name: str):
    def apply(p, value, values):
        setattr(p, name, value)
    return apply


def apply_override(key: str):
    def apply(p, value, values):
        p.override_settings[key] = value
    return apply


def apply_prompt(p, value, values):
    if values[0] not in p.prompt and values[0] not in p.negative_prompt:
        raise ValueError(f"Prompt S/R did not find {values[0]!r} in the prompt or negative prompt")
    p.prompt = p.prompt.replace(values[0], value)
    p.negative_prompt = p.negative_prompt.replace(values[0], value)


def apply_order(p, value, values):
    """Put the given prompt pieces into this order, each where one of them was."""
    missing = [token for token in value if token not in p.prompt]
    if missing:
        raise ValueError(f"Prompt order did not find {missing[0]!r} in the prompt")
    ordered = sorted(value, key=p.prompt.find)
    rest, parts = p.prompt, []
    for token in ordered:
        at = rest.find(token)
        parts.append(rest[:at])
        rest = rest[at + len(token):]
    p.prompt = "".join(part + token for part, token in zip(parts, value)) + rest


def apply_checkpoint(p, value, values):
    p.override_settings["sd_model_checkpoint"] = value


def apply_vae(p, value, values):
    spelled = {"auto": "Automatic", "automatic": "Automatic", "none": "None"}
    p.override_settings["sd_vae"] = spelled.get(value.strip().lower(), value.strip())


def apply_face_restore(p, value, values):
    """A1111's "Face restore" axis: CodeFormer or GFPGAN restore with that model; true/yes/y/1 with the
    face_restoration_model setting; anything else does not restore."""
    value = value.strip().lower()
    models = {"codeformer": "CodeFormer", "gfpgan": "GFPGAN"}
    if value in models:
        p.override_settings["face_restoration_model"] = models[value]
    p.restore_faces = value in models or value in ("true", "yes", "y", "1")


def apply_styles(p, value, values):
    p.styles = [*p.styles, *(name.strip() for name in value.split(",") if name.strip())]


def apply_size(p, value, values):
    width, _, height = value.lower().partition("x")
    try:
        p.width, p.height = int(width.strip()), int(height.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a size like 512x768") from None


def do_nothing(p, value, values):
    pass


def format_value_add_label(p, option, value):
    return f"{option.label}: {round(value, 8) if isinstance(value, float) else value}"


def format_value(p, option, value):
    return round(value, 8) if isinstance(value, float) else value


def format_value_join_list(p, option, value):
    return ", ".join(value)


def format_nothing(p, option, value):
    return ""


def format_remove_path(p, option, value):
    return os.path.basename(value)


def checkpoint_names(generator) -> list[str]:
    return sorted((info.name for info in generator.manager.registry.items()), key=str.casefold)


@dataclass(frozen=True)
class AxisOption:
    label: str
    type: Any                                   # int, float, str or PERMUTATIONS
    apply: Callable = do_nothing                # apply(p, value, all values of the axis)
    format_value: Callable = format_value_add_label
    cost: float = 0.0                           # expensive to change (a checkpoint): iterated outermost
    choices: Callable | None = None             # choices(generator) → the values the UI offers
    tab: str | None = None                      # "txt2img" or "img2img" only; None: both
    unavailable: str = ""                       # why this A1111 axis cannot be used here


def _missing(label: str, kind, why: str, tab: str | None = None) -> AxisOption:
    return AxisOption(label, kind, tab=tab, unavailable=why)


NOT_YET = "not supported yet"


def apply_uni_pc_order(p, value, values):
    """A1111's: the order, at most one below the steps."""
    p.override_settings["uni_pc_order"] = min(value, p.steps - 1)


def apply_boolean_override(key: str):
    def apply(p, value, values):
        p.override_settings[key] = str(value).strip().lower() in ("true", "1", "yes")
    return apply

AXIS_OPTIONS = [
    AxisOption("Nothing", str, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("Hires steps", int, apply_field("hr_second_pass_steps"), tab="txt2img"),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    _missing("Image CFG Scale", float, "instruct-pix2pix models are not supported", tab="img2img"),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value),
    AxisOption("Prompt order", PERMUTATIONS, apply_order, format_value=format_value_join_list),
    AxisOption("Sampler", str, apply_field("sampler_name"), format_value=format_value,
               choices=lambda generator: samplers.sampler_names(), tab="txt2img"),
    AxisOption("Hires sampler", str, apply_field("hr_sampler_name"),
               choices=lambda generator: samplers.sampler_names(), tab="txt2img"),
    AxisOption("Sampler", str, apply_field("sampler_name"), format_value=format_value,
               choices=lambda generator: samplers.sampler_names(), tab="img2img"),
    AxisOption("Checkpoint name", str, apply_checkpoint, format_value=format_remove_path, cost=1.0,
               choices=checkpoint_names),
    _missing("Negative Guidance minimum sigma", float, "skipping the unconditional prediction is " + NOT_YET),
    # A1111 sets p.s_* here, which its samplers then ignore for the settings; here they take effect.
    AxisOption("Sigma Churn", float, apply_override("s_churn")),
    AxisOption("Sigma min", float, apply_override("s_tmin")),
    AxisOption("Sigma max", float, apply_override("s_tmax")),
    AxisOption("Sigma noise", float, apply_override("s_noise")),
    AxisOption("Schedule type", str, apply_field("scheduler"), choices=lambda generator: samplers.schedule_labels()),
    AxisOption("Schedule min sigma", float, apply_override("sigma_min")),
    AxisOption("Schedule max sigma", float, apply_override("sigma_max")),
    AxisOption("Schedule rho", float, apply_override("rho")),
    _missing("Skip Early CFG", float, "skipping CFG on early steps is " + NOT_YET),
    AxisOption("Beta schedule alpha", float, apply_override("beta_dist_alpha")),
    AxisOption("Beta schedule beta", float, apply_override("beta_dist_beta")),
    AxisOption("Eta", float, apply_field("eta")),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    _missing("Initial noise multiplier", float, "img2img's initial noise multiplier is " + NOT_YET),
    _missing("Extra noise", float, "img2img's extra noise is " + NOT_YET),
    AxisOption("Hires upscaler", str, apply_field("hr_upscaler"),
               choices=lambda generator: generator.upscalers.hires_choices(), tab="txt2img"),
    _missing("Cond. Image Mask Weight", float, "the conditioning mask weight is not supported", tab="img2img"),
    AxisOption("VAE", str, apply_vae, cost=0.7, choices=lambda generator: generator.networks.vaes.choices()),
    AxisOption("Styles", str, apply_styles, choices=lambda generator: generator.networks.styles.names()),
    AxisOption("UniPC Order", int, apply_uni_pc_order, cost=0.5),
    AxisOption("Face restore", str, apply_face_restore, format_value=format_value),
    AxisOption("Token merging ratio", float, apply_override("token_merging_ratio")),
    AxisOption("Token merging ratio high-res", float, apply_override("token_merging_ratio_hr")),
    AxisOption("Always discard next-to-last sigma", str, apply_boolean_override("always_discard_next_to_last_sigma"),
               choices=lambda generator: ["False", "True"]),
    AxisOption("SGM noise multiplier", str, apply_boolean_override("sgm_noise_multiplier"),
               choices=lambda generator: ["False", "True"]),
    AxisOption("Refiner checkpoint", str, apply_field("refiner_checkpoint"), format_value=format_remove_path,
               cost=1.0, choices=lambda generator: ["None", *checkpoint_names(generator)]),
    AxisOption("Refiner switch at", float, apply_field("refiner_switch_at")),
    AxisOption("RNG source", str, apply_override("randn_source"), choices=lambda generator: ["GPU", "CPU", "NV"]),
    _missing("FP8 mode", str, "FP8 weights are not supported"),
    AxisOption("Size", str, apply_size),
]


def axis_options(is_img2img: bool) -> list[AxisOption]:
    """The axes of one tab, in A1111's order (the API's axis type is an index into this list)."""
    tab = "img2img" if is_img2img else "txt2img"
    return [option for option in AXIS_OPTIONS if option.tab in (None, tab)]


def find_option(name: str, options: list[AxisOption], kind) -> AxisOption:
    """The axis an API client (an index into the tab's list, as A1111) or the UI names; None is Nothing."""
    if kind is None or kind == "":
        return options[0]
    if isinstance(kind, float) and kind.is_integer():
        kind = int(kind)
    if isinstance(kind, int) and not isinstance(kind, bool):
        if not 0 <= kind < len(options):
            raise JobError(f"{TITLE}: {name} type {kind} is out of range (0-{len(options) - 1})")
        option = options[kind]
    else:
        option = next((o for o in options if o.label.lower() == str(kind).strip().lower()), None)
        if option is None:
            raise JobError(f"{TITLE}: unknown {name} type {kind!r}; choose one of "
                           f"{[o.label for o in options if not o.unavailable]}")
    if option.unavailable:
        raise JobError(f"{TITLE}: the {name} axis {option.label!r} is not available: {option.unavailable}")
    return option
