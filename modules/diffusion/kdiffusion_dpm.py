"""DPMSolverMultistepScheduler with k-diffusion's third-order SDE step (DPM++ 3M SDE).

diffusers' ``sde-dpmsolver++`` third-order update weights D2 by
``alpha_t * ((1 - e^{-2h} - 2h) / (2h)^2 - 0.5)``; k-diffusion's ``sample_dpmpp_3m_sde`` (eta 1) uses
``-alpha_t * phi_3`` with ``phi_3 = phi_2 / 2h - 0.5``, i.e. ``alpha_t * ((1 - e^{-2h} - 2h) / (2h)^2 + 0.5)``,
the O(h) weight a third-order term needs. The subclass adds the missing ``alpha_t * D2``. Every other update is
diffusers' own.

It keeps its own name: code that needs to know whether a scheduler is a DPM-Solver multistep one asks
``isinstance(scheduler, DPMSolverMultistepScheduler)``, or the sampler table's declared ``scheduler_class``.
Importing this module imports diffusers; ``samplers`` imports it only when such a scheduler is built.
"""
from __future__ import annotations

import torch
from diffusers import DPMSolverMultistepScheduler


class KDiffusionDPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, noise=None,
                                                **kwargs):
        x_t = super().multistep_dpm_solver_third_order_update(model_output_list, *args, sample=sample,
                                                              noise=noise, **kwargs)
        if self.config.algorithm_type != "sde-dpmsolver++":
            return x_t
        sigmas = [self.sigmas[self.step_index + 1 - k] for k in range(4)]  # t, s0, s1, s2
        alphas_sigmas = [self._sigma_to_alpha_sigma_t(s) for s in sigmas]
        lambdas = [torch.log(a) - torch.log(s) for a, s in alphas_sigmas]
        h, h_0, h_1 = lambdas[0] - lambdas[1], lambdas[1] - lambdas[2], lambdas[2] - lambdas[3]
        r0, r1 = h_0 / h, h_1 / h
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d2 = (d1_0 - d1_1) / (r0 + r1)
        return x_t + alphas_sigmas[0][0] * d2
