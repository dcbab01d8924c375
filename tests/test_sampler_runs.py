"""Every A1111 sampler run inside a real diffusers pipeline (a tiny random UNet) through the project's sampler
scheduler gives the latents A1111's own loop gives: k-diffusion's sampler functions (or, for A1111's own
samplers, the algorithm driven directly) around A1111's CFG denoiser — cond and uncond in one batch, guidance
combined on the denoised prediction — with noise drawn as A1111's rng draws it: one generator per image seed, the
first draw the initial noise, each later draw the noise a sampler adds."""
from __future__ import annotations

import pytest
import torch

from modules.diffusion import samplers
from modules.diffusion.ksampling import algorithms, plan, schedules, timestep_algorithms
from modules.diffusion.ksampling.scheduler import KSamplerScheduler
from modules.diffusion.rng import ImageRNG
from tests.fixtures import kdiffusion_reference as reference
from tests.fixtures.sampler_cases import SOME_PAIRS, expected_calls, sd_alphas_cumprod

K, EXTERNAL = reference.load()
ALPHAS = sd_alphas_cumprod()
SEEDS = [11, 12]
SHAPE = (4, 8, 8)
CFG = 5.0


@pytest.fixture(scope="module")
def pipeline():
    """A tiny random StableDiffusionPipeline; prompts go in as embeddings, so no text encoder or tokenizer."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                   scheduler=KSamplerScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(1)
    cond = torch.randn(1, 77, 32, generator=generator)
    uncond = torch.randn(1, 77, 32, generator=generator)
    return pipe, cond, uncond


def _ours(pipeline, sampler_name, schedule, steps, *, v=False, image=None, strength=0.6):
    """The project's way: the sampler started on a KSamplerScheduler, the diffusers pipeline looping over it."""
    pipe, cond, uncond = pipeline
    generators = ImageRNG(SHAPE, SEEDS, source="CPU")
    noise = generators.next()
    scheduler = KSamplerScheduler()
    sampler = samplers.get_sampler(sampler_name)
    capture = _Capture(pipe.unet) if sampler.algorithm == "ddim_cfgpp" else None
    started = plan.start(scheduler, sampler, schedule, plan.ModelNoise(ALPHAS, "v_prediction" if v else "epsilon"),
                         steps=steps, noise=plan.PassNoise(noise, generators, SEEDS),
                         settings=plan.SamplerSettings(randn_source="CPU"), image=image, strength=strength,
                         unguided=capture, cfg_scale=CFG)
    pipe.scheduler = scheduler
    calls = []
    try:
        pipe(prompt_embeds=cond.repeat(2, 1, 1), negative_prompt_embeds=uncond.repeat(2, 1, 1),
             latents=scheduler.current_latents(), num_inference_steps=started.calls, height=64, width=64,
             guidance_scale=CFG, output_type="latent",
             callback_on_step_end=lambda p, i, t, kw: calls.append(float(t)) or kw)
    finally:
        if capture is not None:
            capture.remove()
    assert scheduler.finished
    return scheduler.current_latents(), calls, started


class _Capture:
    """The unguided and guided UNet outputs of the last call (what the project's pass feature keeps for CFG++)."""

    def __init__(self, unet):
        self.last = None
        self._handle = unet.register_forward_hook(lambda module, args, output: setattr(
            self, "last", tuple(o.float() for o in output[0].chunk(2))))

    def __call__(self):
        return self.last

    def remove(self):
        self._handle.remove()


class _A1111Model:
    """A1111's CFGDenoiser around the UNet: cond images first, then uncond, in one batch; guidance on the
    model's prediction. `apply_model` is the LDM-style call k-diffusion's CompVis wrappers make."""

    def __init__(self, pipeline):
        self.pipe, self.cond, self.uncond = pipeline
        self.alphas_cumprod = ALPHAS
        self.last_uncond = None

    def apply_model(self, x, t, cond=None):
        count = x.shape[0] // 2
        context = torch.cat([self.cond.repeat(count, 1, 1), self.uncond.repeat(count, 1, 1)])
        return self.pipe.unet(x, t, encoder_hidden_states=context).sample


def _cfg(wrapped, x, level, scale=CFG):
    both = wrapped(torch.cat([x, x]), torch.cat([level.reshape(1).expand(x.shape[0])] * 2))
    cond, uncond = both.chunk(2)
    return uncond + (cond - uncond) * scale, uncond


def _a1111_draws():
    generators = [torch.Generator().manual_seed(seed) for seed in SEEDS]
    first = torch.stack([torch.randn(SHAPE, generator=g) for g in generators])
    return first, lambda x: torch.stack([torch.randn(SHAPE, generator=g) for g in generators])


def _theirs(pipeline, sampler_name, schedule, steps, *, v=False, image=None, strength=0.6):
    """A1111's way, written out: its noise, its sigmas, k-diffusion's function (or the algorithm for A1111's
    own samplers) around the CFG denoiser."""
    model = _A1111Model(pipeline)
    sampler = samplers.get_sampler(sampler_name)
    noise, draw = _a1111_draws()
    settings = plan.SamplerSettings(randn_source="CPU")
    if sampler.ignores_schedule:
        wrapped = lambda x, t: _eps(model, x, t, v)   # noqa: E731
        timesteps = timestep_algorithms.a1111_timesteps(steps)
        if image is None:
            x = noise
        else:
            total, t_enc = plan.img2img_steps(steps, strength, False)
            timesteps = timestep_algorithms.a1111_timesteps(total)
            x = timestep_algorithms.noised_to(image, noise, ALPHAS, int(timesteps[t_enc]))
            timesteps = timesteps[:t_enc]
        params = algorithms.Params(randn_like=draw, eta=0.0)   # A1111's eta_ddim
        if sampler.algorithm == "ddim_cfgpp":
            def guidance(latents, t):
                guided, uncond = _cfg(wrapped, latents, t, CFG / 12.5)
                return guided, uncond
            run = timestep_algorithms.ddim(x, timesteps, ALPHAS, params, guidance)
        elif sampler.algorithm == "unipc":
            from modules.diffusion.ksampling import unipc
            run = unipc.unipc(x, timesteps, ALPHAS, params, is_img2img=image is not None)
        else:
            run = getattr(timestep_algorithms, sampler.algorithm)(x, timesteps, ALPHAS, params)
        return reference.drive(run, lambda latents, t: _cfg(wrapped, latents, t)[0])
    prediction = "v_prediction" if v else "epsilon"
    if sampler.algorithm == "lcm":
        denoiser = schedules.LCMDenoiser(ALPHAS, prediction)
    else:
        denoiser = (EXTERNAL.CompVisVDenoiser if v else EXTERNAL.CompVisDenoiser)(model)
    sigmas = plan.sigmas_for(sampler, samplers.resolve(sampler_name, schedule)[1], steps if image is None else
                             plan.img2img_steps(steps, strength, False)[0], denoiser, settings, False, {})
    if image is None:
        sched, x = sigmas, noise * sigmas[0]
    else:
        total, t_enc = plan.img2img_steps(steps, strength, False)
        sched = sigmas[total - t_enc - 1:]
        x = image + noise * sched[0]
    if sampler.algorithm == "lcm":
        def answer(latents, sigma):
            model_input, t = denoiser.model_input(latents, sigma)
            both = model.apply_model(torch.cat([model_input] * 2), t.reshape(1).expand(2 * latents.shape[0]))
            cond, uncond = both.chunk(2)
            return denoiser.answer(uncond + (cond - uncond) * CFG, latents, sigma)
        return reference.drive(algorithms.lcm(x, sched, algorithms.Params(randn_like=draw)), answer)

    def cfg_denoiser(latents, sigma, **_):
        return _cfg(lambda a, s: denoiser(a, s, cond=None), latents, sigma if sigma.ndim == 0 else sigma[0])[0]

    kwargs = {}
    if sampler.option("brownian_noise"):
        low, high = sigmas[sigmas > 0].min(), sigmas.max()
        kwargs["noise_sampler"] = K.BrownianTreeNoiseSampler(x, low, high, seed=SEEDS)
    if sampler.option("solver_type") == "heun":
        kwargs["solver_type"] = "heun"
    if sampler.algorithm in ("dpm_fast", "dpm_adaptive"):
        low, high = ((denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()) if image is None
                     else (sched[-2], sched[0]))
        args = (low, high, len(sched) - 1) if sampler.algorithm == "dpm_fast" else (low, high)
        return reference.run_with_noise(K, draw, getattr(K, f"sample_{sampler.algorithm}"), cfg_denoiser, x, *args,
                                        disable=True, eta=1.0)
    if sampler.algorithm == "restart":   # A1111's own (sd_samplers_extra), checked against it by hand
        return reference.drive(algorithms.restart(x, sched, algorithms.Params(randn_like=draw)), cfg_denoiser)
    return reference.run_with_noise(K, draw, getattr(K, f"sample_{sampler.algorithm}"), cfg_denoiser, x, sched,
                                    disable=True, **kwargs)


def _eps(model, x, t, v):
    output = model.apply_model(x, t)
    if not v:
        return output
    index = int(t[0])
    return ALPHAS[index].sqrt() * output + (1 - ALPHAS[index]).sqrt() * x


@pytest.mark.parametrize("sampler_name, schedule", SOME_PAIRS)
def test_pipeline_gives_a1111s_latents(pipeline, sampler_name, schedule):
    steps = 5
    with torch.no_grad():
        ours, calls, started = _ours(pipeline, sampler_name, schedule, steps)
        theirs = _theirs(pipeline, sampler_name, schedule, steps)
    # DPM adaptive's step-size control amplifies the last bits where the guidance is combined (eps vs denoised)
    tolerance = 5e-3 if sampler_name == "DPM adaptive" else 1e-4
    torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)
    if sampler_name != "DPM adaptive":   # its count is an estimate: the step-size control decides as it goes
        assert len(calls) == started.calls
    if sampler_name not in ("Restart", "DPM adaptive") and schedule != "KL Optimal":   # (it ends above 0)
        assert started.calls == expected_calls(sampler_name, steps)


@pytest.mark.parametrize("sampler_name", ["Euler a", "DPM++ 2M SDE", "DDIM", "UniPC"])
def test_img2img_and_v_prediction_give_a1111s_latents(pipeline, sampler_name):
    image = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        for v in (False, True):
            ours, calls, _ = _ours(pipeline, sampler_name, "Automatic", 6, v=v, image=image, strength=0.6)
            theirs = _theirs(pipeline, sampler_name, "Automatic", 6, v=v, image=image, strength=0.6)
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
