"""A1111's `modules.sd_samplers_kdiffusion` for extensions: its table of k-diffusion samplers
(`samplers_k_diffusion`: (label, k-diffusion function name, aliases, options)), `samplers_data_k_diffusion` and
`sampler_extra_params`, from the project's table (`diffusion/sampler_table.py`), where each runs the same
algorithm step for step (`diffusion/ksampling/`). The classes extensions patch (`KDiffusionSampler`,
`CFGDenoiser`) do not exist on diffusers and raise `missing_name`; the sampling callbacks
(`script_callbacks.on_cfg_denoiser`, …) are the way in.
"""
from __future__ import annotations

from modules import sd_samplers
from modules.addons.missing_names import missing_name
from modules.diffusion.sampler_table import SAMPLERS, TIMESTEP_ALGORITHMS

_K_DIFFUSION = [s for s in SAMPLERS if s.algorithm not in TIMESTEP_ALGORITHMS and s.algorithm != "lcm"]

samplers_k_diffusion = [(s.name, f"sample_{s.algorithm}", list(s.aliases), dict(s.a1111_options))
                        for s in _K_DIFFUSION]
samplers_data_k_diffusion = [sd_samplers.all_samplers_map[s.name] for s in _K_DIFFUSION]
k_diffusion_samplers_map = {x.name: x for x in samplers_data_k_diffusion}
sampler_extra_params = {f"sample_{s.algorithm}": list(s.extra_params) for s in _K_DIFFUSION if s.extra_params}


def __getattr__(name: str):
    # KDiffusionSampler, CFGDenoiser, CFGDenoiserKDiffusion, k_diffusion_scheduler, …
    raise missing_name("modules.sd_samplers_kdiffusion", name,
                       "A1111's k-diffusion sampler classes do not exist here (samplers run inside diffusers' loop); "
                       "use script_callbacks.on_cfg_denoiser / on_cfg_denoised / on_cfg_after_cfg")
