"""A1111's UniPC as a generator (modules/diffusion/ksampling/unipc.py): calls, times, and the exact solution it
must reach when the model knows the clean image."""
import itertools

import pytest
import torch

from modules.diffusion.ksampling.algorithms import Params
from modules.diffusion.ksampling.timestep_algorithms import a1111_timesteps
from modules.diffusion.ksampling.unipc import unipc

VARIANTS = ("bh1", "bh2", "vary_coeff")
SKIP_TYPES = ("time_uniform", "time_quadratic", "logSNR")


def sd_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0).float()


ALPHAS = sd_alphas_cumprod()
PARAMS = Params(randn_like=torch.randn_like)


def alpha_bar(t_input: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod at a model input time, log-linear between the table's entries (the schedule UniPC assumes:
    input time n is the table's step n)."""
    t = float(t_input)
    low = min(max(int(t // 1), 0), 998)
    frac = t - low
    log_a = torch.log(ALPHAS.double())
    return torch.exp(log_a[low] + frac * (log_a[low + 1] - log_a[low]))


def drive(sampling, model):
    """Run a sampler generator with `model(x, t) -> eps`; returns (final x, the times it was called at)."""
    times = []
    try:
        x, t = next(sampling)
        while True:
            times.append(t)
            x, t = sampling.send(model(x, t))
    except StopIteration as done:
        return done.value, times


def smooth_model(x, t):
    return 0.5 * torch.tanh(x) * (t / 1000) + 0.1 * x


def make(x, steps, img2img=False, strength=0.75, **options):
    timesteps = a1111_timesteps(steps)
    if img2img:
        timesteps = timesteps[:max(1, int(strength * steps))]
    return unipc(x, timesteps, ALPHAS, PARAMS, is_img2img=img2img, **options), timesteps


@pytest.mark.parametrize("steps,order,img2img", [(1, 3, False), (2, 3, False), (5, 3, False), (10, 2, False),
                                                 (20, 3, False), (30, 1, False), (10, 3, True), (30, 3, True)])
def test_one_model_call_per_timestep(steps, order, img2img):
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    sampling, timesteps = make(x, steps, img2img, order=order)
    _, times = drive(sampling, smooth_model)
    assert len(times) == len(timesteps)


def test_times_are_a1111_model_input_times():
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    _, times = drive(make(x, 20)[0], smooth_model)
    assert all(t.dim() == 0 and t.dtype == torch.float32 for t in times)
    assert float(times[0]) == pytest.approx(999.0, abs=1e-3)         # t = 1 → (1 - 1/1000) * 1000
    values = [float(t) for t in times]
    assert all(a > b for a, b in itertools.pairwise(values))
    # time_uniform: n + 1 equal steps from t = 1 to t = 1/1000, the last not evaluated
    step = (1 - 1 / 1000) / 20 * 1000
    assert values == pytest.approx([999.0 - i * step for i in range(20)], abs=1e-3)


def test_img2img_starts_at_the_timestep_of_the_slice_end():
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    sampling, timesteps = make(x, 20, img2img=True)
    _, times = drive(sampling, smooth_model)
    assert float(times[0]) == pytest.approx(float(timesteps[-1]), abs=1e-3)


@pytest.mark.parametrize("variant,skip_type,order", list(itertools.product(VARIANTS, SKIP_TYPES, (1, 2, 3))))
@pytest.mark.parametrize("img2img", [False, True])
def test_a_model_that_knows_x0_leads_to_x0(variant, skip_type, order, img2img):
    """A noise prediction consistent with a fixed clean image makes every data prediction that image, so the
    solver's exponential integrator is exact: it must end at alpha x0 + sigma eps at t = 1/1000, about x0."""
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 4, 6, 6, generator=gen)
    noise = torch.randn(2, 4, 6, 6, generator=gen)
    timesteps = a1111_timesteps(12)
    if img2img:
        timesteps = timesteps[:6]
        start = alpha_bar(timesteps[-1].float())
    else:
        start = alpha_bar(torch.tensor(999.0))
    x = (start.sqrt() * x0 + (1 - start).sqrt() * noise).float()

    def oracle(x, t):
        a = alpha_bar(t)
        return ((x.double() - a.sqrt() * x0) / (1 - a).sqrt()).float()

    out, times = drive(unipc(x, timesteps, ALPHAS, PARAMS, variant=variant, skip_type=skip_type, order=order,
                             is_img2img=img2img), oracle)
    assert len(times) == len(timesteps)
    end = ALPHAS[0].double()
    expected = end.sqrt() * x0.double() + (1 - end).sqrt() * noise.double()
    assert (out.double() - expected).abs().max() < 2e-4
    assert (out - x0).abs().mean() < 0.05


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("skip_type", SKIP_TYPES)
def test_each_variant_and_skip_type_runs_and_differs_from_the_start(variant, skip_type):
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    out, times = drive(make(x, 10, variant=variant, skip_type=skip_type)[0], smooth_model)
    assert len(times) == 10 and out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.equal(out, x)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_step_works_at_any_order(variant):
    """A1111 asserts steps >= order; here a 1-step run lowers the order to 1: one call, one first-order step."""
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    outs = []
    for order in (1, 3):
        out, times = drive(make(x, 1, variant=variant, order=order)[0], smooth_model)
        assert len(times) == 1 and torch.isfinite(out).all()
        outs.append(out)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_batch_gives_each_image_what_it_would_get_alone(variant):
    x = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(5))
    together, _ = drive(make(x, 10, variant=variant)[0], smooth_model)
    for i in range(2):
        alone, _ = drive(make(x[i:i + 1], 10, variant=variant)[0], smooth_model)
        assert torch.allclose(together[i:i + 1], alone, atol=1e-6)


def test_higher_order_is_closer_to_the_many_step_solution():
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(6))
    reference, _ = drive(make(x, 200)[0], smooth_model)
    errors = {}
    for order in (1, 3):
        out, _ = drive(make(x, 10, order=order)[0], smooth_model)
        errors[order] = (out - reference).abs().max().item()
    assert errors[3] < errors[1]


def test_unknown_options_are_refused():
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError):
        next(make(x, 5, variant="bh3")[0])
    with pytest.raises(ValueError):
        next(make(x, 5, skip_type="karras")[0])
