"""The diffusion maths around diffusers: samplers and schedules, seeds and noise, one denoising pass and its loop features, attention, compilation, warm-up and live previews."""
