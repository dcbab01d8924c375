"""A1111's `modules.sd_schedulers` for extensions: the schedule types (`schedulers`, `schedulers_map` by name and
label) from the project's table (`diffusion/sampler_table.py`), each `function` the project's own
(`diffusion/ksampling/schedules.py`) called with A1111's arguments `(n, sigma_min, sigma_max, inner_model,
device)`. The schedules that need the model's noise levels take them from `inner_model` (anything with k-diffusion's
`sigmas`/`get_sigmas`/`sigma_to_t`/`t_to_sigma`) or, without one, from the current checkpoint.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from modules.addons.missing_names import missing_name
from modules.addons.running import services
from modules.diffusion.sampler_table import SCHEDULES


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: Any
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list | None = None


def _current_model():
    model = services().models.current
    if model is None or model.alphas_cumprod is None:
        raise RuntimeError("this schedule needs the model's noise levels: pass inner_model or load a checkpoint")
    return model


def _function(schedule):
    def function(n, sigma_min=None, sigma_max=None, inner_model=None, device=None):
        from modules.diffusion.ksampling import schedules

        kwargs: dict[str, Any] = {"sigma_min": sigma_min, "sigma_max": sigma_max, "denoiser": inner_model}
        if schedule.need_inner_model and inner_model is None:
            kwargs["denoiser"] = schedules.Denoiser(_current_model().alphas_cumprod)
        if schedule.name == "align_your_steps":
            current = services().models.current
            kwargs["xl"] = current is not None and current.family.xl
        if schedule.name == "beta":
            kwargs.update(beta_alpha=services().options.beta_dist_alpha,
                          beta_beta=services().options.beta_dist_beta)
        sigmas = schedules.SCHEDULE_FUNCTIONS[schedule.name](n, **kwargs)
        return sigmas.to(device) if device is not None else sigmas

    function.__name__ = schedule.name
    return function


schedulers = [Scheduler(s.name, s.label, None if s.name == "automatic" else _function(s), s.default_rho,
                        s.need_inner_model, list(s.aliases) or None) for s in SCHEDULES]
schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}


def __getattr__(name: str):
    raise missing_name("modules.sd_schedulers", name)
