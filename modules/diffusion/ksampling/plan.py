"""From a pass's request to a running sampler: the noise levels, the starting latents and the sampler's
arguments, as A1111's `KDiffusionSampler` / `CompVisSampler` (`sample`, `sample_img2img`, `get_sigmas`,
`initialize`) work them out, with the infotext keys A1111 adds on the way.
"""
from __future__ import annotations

import contextlib
import warnings
import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from modules.diffusion import rng as rng_module
from modules.diffusion.ksampling import algorithms, dpm_solver, schedules, timestep_algorithms
from modules.diffusion.sampler_table import AUTOMATIC, SCHEDULES, Sampler

if TYPE_CHECKING:
    from modules.diffusion.ksampling.scheduler import KSamplerScheduler


@dataclass(frozen=True)
class SamplerSettings:
    """The settings A1111's samplers read (Settings → Sampler parameters), with A1111's defaults."""

    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    eta_noise_seed_delta: int = 0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0            # 0: infinity
    s_noise: float = 1.0
    sigma_min: float = 0.0         # 0: the model's
    sigma_max: float = 0.0
    rho: float = 0.0               # 0: the schedule's
    beta_dist_alpha: float = 0.6
    beta_dist_beta: float = 0.6
    always_discard_next_to_last_sigma: bool = False
    use_old_karras_scheduler_sigmas: bool = False
    no_dpmpp_sde_batch_determinism: bool = False
    sgm_noise_multiplier: bool = False
    img2img_fix_steps: bool = False
    uni_pc_variant: str = "bh1"
    uni_pc_skip_type: str = "time_uniform"
    uni_pc_order: int = 3
    uni_pc_lower_order_final: bool = True
    randn_source: str = rng_module.DEFAULT_SOURCE

    @classmethod
    def of(cls, settings) -> SamplerSettings:
        """From a job's Settings (or anything with these attributes); missing ones keep A1111's defaults."""
        values = {}
        for field in dataclasses.fields(cls):
            value = getattr(settings, field.name, None)
            if value is not None:
                values[field.name] = type(field.default)(value)
        return cls(**values)


@dataclass
class ModelNoise:
    """What a sampler needs to know about the model: its training schedule and what its UNet predicts."""

    alphas_cumprod: torch.Tensor
    prediction: str = "epsilon"        # or "v_prediction"
    xl: bool = False                   # Align Your Steps has a table per family


@dataclass
class PassNoise:
    """A pass's random numbers: the initial noise (the rng's first draw) and the rng the sampler draws from."""

    noise: torch.Tensor
    rng: rng_module.ImageRNG
    seeds: list[int]


@dataclass
class Started:
    calls: int                      # model calls the pass will make (an estimate for DPM adaptive)
    infotext: dict[str, Any]        # the keys A1111 adds to extra_generation_params


def img2img_steps(steps: int, strength: float, exact: bool) -> tuple[int, int]:
    """A1111's setup_img2img_steps: (schedule length, t_enc); the pass runs t_enc + 1 steps of the schedule."""
    if exact:
        return (int(steps / min(strength, 0.999)) if strength > 0 else 0), steps - 1
    return steps, int(min(strength, 0.999) * steps)


def multiplier(sampler: Sampler) -> int:
    """A1111's step_multiplier: second-order samplers count two model calls a step."""
    return 2 if sampler.second_order else 1


@functools.lru_cache(maxsize=16)
def _denoiser(kind: str, alphas_key: tuple, prediction: str):
    alphas = torch.tensor(alphas_key, dtype=torch.float32)
    if kind == "lcm":
        return schedules.LCMDenoiser(alphas, prediction)
    if kind == "timesteps":
        return timestep_algorithms.TimestepDenoiser(alphas, prediction)
    return schedules.Denoiser(alphas, prediction)


def denoiser_for(sampler: Sampler, model: ModelNoise):
    kind = "lcm" if sampler.algorithm == "lcm" else "timesteps" if sampler.ignores_schedule else "sigmas"
    return _denoiser(kind, tuple(model.alphas_cumprod.float().tolist()), model.prediction)


def sigmas_for(sampler: Sampler, schedule: str, steps: int, denoiser, settings: SamplerSettings, xl: bool,
               infotext: dict, hires: bool = False) -> torch.Tensor:
    """A1111's KDiffusionSampler.get_sigmas."""
    discard = bool(sampler.option("discard_next_to_last_sigma", False))
    if settings.always_discard_next_to_last_sigma and not discard:
        discard = True
        infotext["Discard penultimate sigma"] = True
    steps += 1 if discard else 0
    schedule_id = next((s.name for s in SCHEDULES if s.label == schedule), None)
    if schedule == AUTOMATIC:
        schedule_id = sampler.a1111_scheduler
    m_sigma_min, m_sigma_max = denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()
    sigma_min, sigma_max = (0.1, 10) if settings.use_old_karras_scheduler_sigmas else (m_sigma_min, m_sigma_max)
    if schedule_id is None:
        sigmas = denoiser.get_sigmas(steps)
    else:
        found = next(s for s in SCHEDULES if s.name == schedule_id)
        kwargs: dict[str, Any] = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        if not hires:
            infotext["Schedule type"] = found.label
        if settings.sigma_min != 0 and settings.sigma_min != m_sigma_min:
            kwargs["sigma_min"] = settings.sigma_min
            infotext["Schedule min sigma"] = settings.sigma_min
        if settings.sigma_max != 0 and settings.sigma_max != m_sigma_max:
            kwargs["sigma_max"] = settings.sigma_max
            infotext["Schedule max sigma"] = settings.sigma_max
        if found.default_rho != -1 and settings.rho != 0 and settings.rho != found.default_rho:
            kwargs["rho"] = settings.rho
            infotext["Schedule rho"] = settings.rho
        if found.label == "Beta":
            kwargs.update(beta_alpha=settings.beta_dist_alpha, beta_beta=settings.beta_dist_beta)
            infotext["Beta schedule alpha"] = settings.beta_dist_alpha
            infotext["Beta schedule beta"] = settings.beta_dist_beta
        sigmas = schedules.SCHEDULE_FUNCTIONS[schedule_id](n=steps, denoiser=denoiser, xl=xl, **kwargs)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.cpu()


def _params(sampler: Sampler, settings: SamplerSettings, eta: float | None, randn_like, infotext: dict,
            timesteps: bool) -> algorithms.Params:
    """A1111's Sampler.initialize: eta (the request's or the setting), the s_* settings the function takes."""
    params = algorithms.Params(randn_like=randn_like)
    if sampler.takes_eta:
        default = 0.0 if timesteps else 1.0
        params.eta = eta if eta is not None else (settings.eta_ddim if timesteps else settings.eta_ancestral)
        if params.eta != default:
            infotext["Eta DDIM" if timesteps else "Eta"] = params.eta
    names = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}
    defaults = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
    for name in sampler.extra_params:
        value = getattr(settings, name)
        if name == "s_tmax":
            value = value or float("inf")
        if value != defaults[name]:
            setattr(params, name, value)
            infotext[names[name]] = value
    if sampler.option("solver_type") == "heun":
        params.solver_type = "heun"
    if settings.eta_noise_seed_delta and sampler.option("uses_ensd") and params.eta != 0:
        infotext["ENSD"] = settings.eta_noise_seed_delta   # (ImageRNG moves the step noise to seed + delta)
    return params


class _BrownianNoise:
    """k-diffusion's BrownianTreeNoiseSampler with a tree per image seeded by the image's seed (A1111's
    create_noise_sampler), drawing its numbers as A1111 does (its torchsde `_randn` replaced by the rng source)."""

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seeds: list[int], source: str):
        import torchsde

        self.source, self.device = source, x.device
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self.sign = 1 if t0 < t1 else -1
        t0, t1 = (t0, t1) if t0 < t1 else (t1, t0)
        w0 = torch.zeros_like(x)[0]
        with self._a1111_randn():
            self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=seed) for seed in seeds]

    @contextlib.contextmanager
    def _a1111_randn(self):
        from torchsde._brownian import brownian_interval

        # torchsde warns when a query lands a float rounding outside the tree's interval; it clamps, as for A1111.
        warnings.filterwarnings("ignore", message="Should have (ta>=t0|tb<=t1)", category=UserWarning)

        def a1111_randn(size, dtype, device, seed):
            return rng_module.randn_local(seed, size, self.source, device).to(device=device, dtype=dtype)

        original = brownian_interval._randn
        brownian_interval._randn = a1111_randn
        try:
            yield
        finally:
            brownian_interval._randn = original

    def __call__(self, sigma, sigma_next):
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        sign = 1 if t0 < t1 else -1
        low, high = (t0, t1) if t0 < t1 else (t1, t0)
        with self._a1111_randn():
            w = torch.stack([tree(low, high) for tree in self.trees]) * (self.sign * sign)
        return w / (t1 - t0).abs().sqrt()


def _dry_params(params: algorithms.Params) -> algorithms.Params:
    """The sampler's arguments for counting its calls: noise that draws nothing from the rng."""
    return dataclasses.replace(params, randn_like=torch.zeros_like, noise_sampler=lambda *args: torch.zeros(()))


def start(scheduler: KSamplerScheduler, sampler: Sampler, schedule: str, model: ModelNoise, *, steps: int,
          noise: PassNoise, settings: SamplerSettings, eta: float | None = None,
          image: torch.Tensor | None = None, strength: float = 1.0, exact_steps: bool = False,
          hires: bool = False, unguided=None, cfg_scale: float = 7.0) -> Started:
    """Begin `sampler` on `scheduler` for a pass of `steps` (from noise; or from `image` latents at
    `strength`, running A1111's img2img number of steps — exactly `steps` with `exact_steps`). DDIM CFG++ needs
    `unguided()`: the last UNet call's (uncond, cond) outputs, and the request's `cfg_scale`."""
    infotext: dict[str, Any] = {}
    denoiser = denoiser_for(sampler, model)
    timesteps = sampler.ignores_schedule
    params = _params(sampler, settings, eta, lambda x: noise.rng.next(), infotext, timesteps)
    if image is not None:
        steps, t_enc = img2img_steps(steps, strength, exact_steps)
    if timesteps:
        make, x = _timestep_sampling(sampler, denoiser, params, steps, noise.noise,
                                     image, t_enc if image is not None else None, settings)
        if sampler.algorithm == "ddim_cfgpp":
            if unguided is None:
                raise ValueError("DDIM CFG++ needs the unguided prediction (a CFG scale above 1)")
            make = _cfgpp(denoiser, make, unguided, cfg_scale)
    else:
        sigmas = sigmas_for(sampler, schedule, steps, denoiser, settings, model.xl, infotext, hires=hires)
        sched = sigmas if image is None else sigmas[steps - t_enc - 1:]
        if image is None:
            x = noise.noise * sigmas[0]
            if settings.sgm_noise_multiplier:
                infotext["SGM noise multiplier"] = True
                x = noise.noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)
        else:
            x = image + noise.noise * sched[0]
        if sampler.option("brownian_noise") and not settings.no_dpmpp_sde_batch_determinism:
            low, high = algorithms.sigma_bounds(sigmas)
            params.noise_sampler = _BrownianNoise(x, low, high, noise.seeds, settings.randn_source)
        make = _sigma_sampling(sampler, params, sched, denoiser, image is None)
    calls = count_calls(lambda start: make(start, _dry_params(params)))
    scheduler.begin(make(x.float(), params), denoiser)
    return Started(calls=calls, infotext=infotext)


def _sigma_sampling(sampler: Sampler, params, sched: torch.Tensor, denoiser, txt2img: bool):
    if sampler.algorithm == "dpm_fast":
        low, high = ((denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()) if txt2img
                     else (sched[-2], sched[0]))
        n = len(sched) - 1
        return lambda x, p: dpm_solver.dpm_fast(x, low, high, n, p)
    if sampler.algorithm == "dpm_adaptive":
        low, high = ((denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()) if txt2img
                     else (sched[-2], sched[0]))
        return lambda x, p: dpm_solver.dpm_adaptive(x, low, high, p)
    function = algorithms.ALGORITHMS[sampler.algorithm]
    return lambda x, p: function(x, sched, p)


def _timestep_sampling(sampler: Sampler, denoiser, params, steps: int, noise: torch.Tensor,
                       image: torch.Tensor | None, t_enc: int | None, settings: SamplerSettings):
    alphas = denoiser.alphas_cumprod
    timesteps = timestep_algorithms.a1111_timesteps(steps)
    if image is None:
        x = noise
    else:
        x = timestep_algorithms.noised_to(image, noise, alphas, int(timesteps[t_enc]))
        timesteps = timesteps[:t_enc]
    if sampler.algorithm == "plms":
        return (lambda start, p: timestep_algorithms.plms(start, timesteps, alphas, p)), x
    if sampler.algorithm == "unipc":
        from modules.diffusion.ksampling import unipc

        options = dict(variant=settings.uni_pc_variant, skip_type=settings.uni_pc_skip_type,
                       order=settings.uni_pc_order, lower_order_final=settings.uni_pc_lower_order_final,
                       is_img2img=image is not None)
        return (lambda start, p: unipc.unipc(start, timesteps, alphas, p, **options)), x
    return (lambda start, p, guidance=None: timestep_algorithms.ddim(start, timesteps, alphas, p, guidance)), x


def _cfgpp(denoiser, make, unguided, cfg_scale: float):
    """DDIM CFG++ (A1111's ddim_cfgpp): the CFG scale divided by 12.5, and the step's direction along the
    unguided prediction. Before the first UNet call (counting the calls) there is no prediction: zeros."""
    def guidance(x, t):
        last = unguided()
        if last is None:
            return torch.zeros_like(x), torch.zeros_like(x)
        uncond, cond = denoiser.eps(last[0].to(x.device), x, t), denoiser.eps(last[1].to(x.device), x, t)
        return uncond + (cond - uncond) * (cfg_scale / 12.5), uncond

    return lambda start, p: make(start, p, guidance)


def count_calls(make) -> int:
    """How many model calls a sampler makes, by running it on a one-pixel latent with a model that predicts
    zeros (exact for every sampler whose noise levels do not depend on the image: all but DPM adaptive)."""
    sampling = make(torch.zeros(1, 1, 1, 1))
    calls = 0
    try:
        x, level = next(sampling)
        while True:
            calls += 1
            x, level = sampling.send(torch.zeros_like(x))
    except StopIteration:
        return calls
