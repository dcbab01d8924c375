"""A1111's `modules.sd_samplers` for extensions: the sampler list from the project's table
(`diffusion/sampler_table.py`), as A1111's `SamplerData(name, constructor, aliases, options)` tuples.

`samplers`, `all_samplers` and `samplers_for_img2img` are the same list (as in A1111 1.10); `samplers_map` maps
each name and alias in lower case to the name; `visible_sampler_names()` leaves out the `hide_samplers` setting's.
A sampler here runs inside diffusers' loop for a job, so there is no sampler object to create: `create_sampler`
and a SamplerData's `constructor` raise `missing_name`; a script picks a sampler with `p.sampler_name`.
"""
from __future__ import annotations

from modules import sd_samplers_common
from modules.addons.missing_names import missing_name
from modules.addons.running import services
from modules.diffusion import samplers as _table
from modules.sd_samplers_common import sample_to_image, samples_to_image_grid  # noqa: F401 - A1111 re-exports them

_NO_SAMPLER_OBJECT = ("samplers run inside diffusers' loop for a job and have no A1111 sampler object; "
                      "set p.sampler_name (and p.scheduler) instead")


def _constructor(model):
    raise missing_name("modules.sd_samplers.SamplerData", "constructor", _NO_SAMPLER_OBJECT)


all_samplers = [sd_samplers_common.SamplerData(s.name, _constructor, list(s.aliases), dict(s.a1111_options))
                for s in _table.SAMPLERS]
all_samplers_map = {sampler.name: sampler for sampler in all_samplers}
samplers = all_samplers
samplers_for_img2img = all_samplers
samplers_map = {key.lower(): sampler.name for sampler in all_samplers for key in (sampler.name, *sampler.aliases)}


def _hidden() -> set:
    return set(services().options.get("hide_samplers", []) or [])


def find_sampler_config(name):
    """The SamplerData of this exact name (None: the first sampler), or None for an unknown name, as A1111's."""
    return all_samplers_map.get(name) if name is not None else all_samplers[0]


def create_sampler(name, model):
    raise missing_name("modules.sd_samplers", "create_sampler", _NO_SAMPLER_OBJECT)


def set_samplers():
    """A1111 rebuilds its lists here after `hide_samplers` changes; here they are fixed and the setting is read
    by `visible_samplers()` at each call, so there is nothing to rebuild."""


def visible_samplers():
    hidden = _hidden()
    return [sampler for sampler in samplers if sampler.name not in hidden]


def visible_sampler_names():
    return [sampler.name for sampler in visible_samplers()]


def __getattr__(name: str):
    # samplers_hidden, get_sampler_and_scheduler, fix_p_invalid_sampler_and_scheduler, …
    raise missing_name("modules.sd_samplers", name)
