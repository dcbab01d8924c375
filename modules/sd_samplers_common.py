"""A1111's `modules.sd_samplers_common` for extensions: `SamplerData` (the tuples `sd_samplers` lists),
`approximation_indexes`, and a latent turned into an image with the current model's VAE (`sample_to_image`,
`samples_to_image_grid`). A1111's `Sampler` base class and the tensor conversions that go through its model
object have no equivalent here (samplers run inside diffusers' loop) and raise `missing_name`.
"""
from __future__ import annotations

from collections import namedtuple

from modules.addons.missing_names import missing_name
from modules.addons.running import services

SamplerDataTuple = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


class SamplerData(SamplerDataTuple):
    def total_steps(self, steps):
        """Model calls for `steps` steps: twice as many for a second-order sampler, as A1111 counts them."""
        return steps * 2 if self.options.get("second_order", False) else steps


approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}


def _current_pipeline():
    model = services().models.current
    if model is None:
        raise RuntimeError("no checkpoint is loaded: latents can be decoded only while a model is loaded")
    return model.pipeline


def sample_to_image(samples, index=0, approximation=None):
    """One latent of a batch → a PIL image, decoded by the current model's VAE (always the full VAE:
    `approximation` is accepted and not used). Call it from a script hook, on the job's thread."""
    from modules.diffusion import sampling

    return sampling.decode(_current_pipeline(), samples[index:index + 1], nan_check=services().devices.nan_check)[0]


def samples_to_image_grid(samples, approximation=None):
    """Every latent of a batch decoded, laid out as A1111's grid."""
    from modules import images
    from modules.diffusion import sampling

    decoded = sampling.decode(_current_pipeline(), samples, nan_check=services().devices.nan_check)
    return images.make_grid(decoded)


_NOT_HERE = ("A1111's sampler objects and its model's first-stage calls do not exist here: the samplers run inside "
             "diffusers' loop; decode a latent with sample_to_image, or change the sampler with p.sampler_name")


def __getattr__(name: str):
    # Sampler, samples_to_images_tensor, images_tensor_to_samples, decode_first_stage, InterruptedException, …
    raise missing_name("modules.sd_samplers_common", name, _NOT_HERE)
