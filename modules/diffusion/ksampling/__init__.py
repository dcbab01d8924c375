"""A1111's samplers (k-diffusion's and A1111's own) step for step, so that a seed gives A1111's picture.

Written here rather than imported: k-diffusion is the library A1111 uses, but its package imports its training
and evaluation code on import (wandb, clean-fid, CLIP, kornia, …), which this project should not install. The
sampler functions are short and follow k-diffusion's (and A1111's `sd_samplers_*.py`) line for line; the suite
checks them against k-diffusion's own functions.

- `schedules.py`: a model's discrete noise levels (k-diffusion's DiscreteSchedule over the checkpoint's
  alphas_cumprod) and A1111's schedule types;
- `algorithms.py`, `dpm_solver.py`, `timestep_algorithms.py`: the samplers, as Python generators that yield
  each model call they need and receive its answer;
- `scheduler.py`: a diffusers-compatible scheduler that runs such a generator inside a diffusers pipeline's loop,
  one model call per loop iteration.
"""
