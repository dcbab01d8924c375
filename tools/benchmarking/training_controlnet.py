"""ControlNet training speed: our trainer (`modules.training.controlnet_training.train_controlnet`) against the loop of
diffusers' examples/controlnet/train_controlnet.py on the same loaded model, images, condition images, captions,
batch size and resolution.

The example's side, as its loop is written: `ControlNetModel.from_unet(unet)` in training mode, the UNet, VAE and
text encoder frozen, AdamW (lr 1e-5 as ours, weight decay 1e-2, eps 1e-8) with a constant schedule; each step:
latents sampled from the VAE posterior, noise, a timestep, the text encoder on the tokenized captions, the
ControlNet's residuals from the noisy latents, the prompts and the conditions, the UNet with them added, MSE to the
noise, the loss read back, backward, gradients clipped to norm 1.0, optimiser, schedule, zero_grad. As for LoRA,
both sides sample posteriors encoded once (the example encodes each step).
"""
from __future__ import annotations

from pathlib import Path

from .training import StepClock, compare, per_step, step_end
from .training_lora import POSTERIOR_NOTE, WARM_UP_STEPS

LEARNING_RATE = 1e-5


def ours_controlnet(model, work: Path, data: Path, size: int, batch_size: int, steps: int) -> float:
    from modules.training.controlnet_training import ControlNetFolders, TrainControlNetRequest, train_controlnet

    work.mkdir(parents=True, exist_ok=True)
    request = TrainControlNetRequest(name="bench", data_root=str(data), condition_folder="conditions",
                                     learn_rate=str(LEARNING_RATE), batch_size=batch_size, width=size, height=size,
                                     steps=steps + WARM_UP_STEPS, seed=1, overwrite=True)
    clock = StepClock()
    train_controlnet(request, model=model, folders=ControlNetFolders(controlnets=work, templates=work,
                                                                     log_root=work), job=clock)
    return per_step(clock.ends, skip=WARM_UP_STEPS - 1)


def example_controlnet(model, data: Path, size: int, batch_size: int, steps: int) -> float:
    import torch
    import torch.nn.functional as F
    from diffusers import ControlNetModel, DDPMScheduler
    from diffusers.optimization import get_scheduler

    from modules.training import controlnet_dataset, dataset as datasets
    from modules.training.denoising import encode
    from modules.training.text_conditioning import frozen

    pipe = model.pipeline
    unet, text_encoder, tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
    device, dtype = next(unet.parameters()).device, unet.dtype
    entries = datasets.read_dataset(data, width=size, height=size)
    conditions = torch.stack(controlnet_dataset.read_conditions(entries, data / "conditions")).to(device, dtype)
    posteriors = [encode(pipe.vae, entry.pixels) for entry in entries]
    means = torch.stack([p.mean for p in posteriors]).to(device, dtype)
    stds = torch.stack([p.std for p in posteriors]).to(device, dtype)
    ids = tokenizer([entry.filename_text for entry in entries], max_length=tokenizer.model_max_length,
                    padding="max_length", truncation=True, return_tensors="pt").input_ids
    scheduler = DDPMScheduler.from_config(model.scheduler_config)
    controlnet = ControlNetModel.from_unet(unet).to(device)
    controlnet.train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.999), weight_decay=1e-2,
                                  eps=1e-8)
    lr_scheduler = get_scheduler("constant", optimizer, num_warmup_steps=0, num_training_steps=steps + WARM_UP_STEPS)
    ends, train_loss = [], 0.0
    with frozen(unet, pipe.vae, text_encoder), torch.enable_grad():
        for step in range(steps + WARM_UP_STEPS):
            chosen = [(step * batch_size + offset) % len(entries) for offset in range(batch_size)]
            latents = means[chosen] + stds[chosen] * torch.randn_like(means[chosen])   # latent_dist.sample()
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(chosen),), device=device).long()
            noisy = scheduler.add_noise(latents, noise, timesteps)
            hidden = text_encoder(ids[chosen].to(device), return_dict=False)[0]
            down, mid = controlnet(noisy, timesteps, encoder_hidden_states=hidden, controlnet_cond=conditions[chosen],
                                   return_dict=False)
            prediction = unet(noisy, timesteps, encoder_hidden_states=hidden,
                              down_block_additional_residuals=[sample.to(dtype=dtype) for sample in down],
                              mid_block_additional_residual=mid.to(dtype=dtype), return_dict=False)[0]
            target = noise if scheduler.config.prediction_type == "epsilon" else \
                scheduler.get_velocity(latents, noise, timesteps)
            loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
            train_loss += loss.item()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=False)   # the example's default (--set_grads_to_none off)
            ends.append(step_end())
    return per_step(ends, skip=WARM_UP_STEPS - 1)


def controlnet(model, work: Path, data: Path, size: int, batch_size: int, steps: int) -> list[str]:
    return compare(f"ControlNet (from the UNet, AdamW), tiny SD1 model, {size}x{size}, batch {batch_size}",
                   lambda: ours_controlnet(model, work, data, size, batch_size, steps),
                   lambda: example_controlnet(model, data, size, batch_size, steps), "train_controlnet.py",
                   (POSTERIOR_NOTE,))
