"""LoRA training speed: our trainer (`modules.training.lora_training.train_lora`) against the loop of diffusers'
examples/text_to_image/train_text_to_image_lora.py (SD 1.x/2.x) and train_text_to_image_lora_sdxl.py (SDXL) on the
same loaded model, images, captions, rank/alpha, batch size, resolution, optimiser and precision settings.

The example's side, as its loop is written: peft's LoRA (r = lora_alpha = the rank, gaussian init) on the UNet's
to_q/to_k/to_v/to_out.0 (`unet.add_adapter`), only the LoRA in float32 when the UNet is half precision
(`cast_training_params`), AdamW (or bitsandbytes' AdamW8bit) with lr 1e-4, weight decay 1e-2, eps 1e-8, a constant
learning-rate schedule; each step: latents sampled from the VAE posterior, noise, a timestep, the frozen text
encoder(s) on the tokenized captions (SDXL: penultimate hidden states of both, pooled output of the second, the
size/crop time ids), the UNet under autocast (mixed precision) with the LoRA, MSE to the noise (or velocity), the
loss read back (`.item()`), backward through the loss scaler, gradients clipped to norm 1.0, optimiser, schedule,
zero_grad. One difference, on both sides alike: the example encodes each batch's images with the VAE every step,
while our trainer encodes each image once and samples its posterior each step; the example here samples the same
once-encoded posterior (encoded inside its timed call, so its peak VRAM includes the VAE as ours does).
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .training import StepClock, compare, per_step, step_end

RANK = 4                          # the example's default --rank (alpha = rank on both sides)
LEARNING_RATE = 1e-4              # the example's default; ours' unet_lr default too
WARM_UP_STEPS = 3                 # run and not timed: the first steps pay one-time costs
MIXED = {"fp16": "float16", "bf16": "bfloat16"}
POSTERIOR_NOTE = "both sides sample VAE posteriors encoded once, as ours does; the example encodes each step"


def ours_lora(model, work: Path, data: Path, size: int, batch_size: int, steps: int, **settings) -> float:
    """Seconds per optimiser step of `train_lora` (steps after the warm-up), in a fresh Lora folder."""
    from modules.training.lora_requests import TrainLoraRequest
    from modules.training.lora_training import LoraFolders, train_lora

    work.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=work))   # a fresh name: an earlier run's state would be resumed
    request = TrainLoraRequest(name="bench", data_root=str(data), rank=RANK, resolution=size, batch_size=batch_size,
                               steps=steps + WARM_UP_STEPS, unet_lr=LEARNING_RATE, seed=1, **settings)
    clock = StepClock()
    train_lora(request, model=model, folders=LoraFolders(loras=folder, log_root=folder), job=clock)
    return per_step(clock.ends, skip=WARM_UP_STEPS - 1)


@contextmanager
def example_adapter(unet, rank: int, gradient_checkpointing: bool):
    """The example's LoRA on the loaded UNet for the block (its trainable parameters yielded); taken out after."""
    import torch
    from diffusers.training_utils import cast_training_params
    from diffusers.utils import recurse_remove_peft_layers
    from peft import LoraConfig

    if hasattr(unet, "peft_config"):
        raise RuntimeError("the UNet already has a peft adapter: the example's would not be alone on it")
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                        target_modules=["to_k", "to_q", "to_v", "to_out.0"])
    was_training, had_loaded = unet.training, getattr(unet, "_hf_peft_config_loaded", False)
    unet.add_adapter(config)
    if unet.dtype != torch.float32:
        cast_training_params(unet, dtype=torch.float32)   # the example: "only upcast trainable parameters"
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    try:
        unet.train()
        yield [parameter for parameter in unet.parameters() if parameter.requires_grad]
    finally:
        if gradient_checkpointing:
            unet.disable_gradient_checkpointing()
        unet.train(was_training)
        recurse_remove_peft_layers(unet)
        del unet.peft_config
        unet._hf_peft_config_loaded = had_loaded


def _example_conditioning(pipe, xl: bool, ids: list, chosen: list[int], size: int, device, dtype):
    """(encoder hidden states, added_cond_kwargs or None) as the example's loop computes them."""
    import torch

    if not xl:
        return pipe.text_encoder(ids[0][chosen].to(device), return_dict=False)[0], None
    # train_text_to_image_lora_sdxl.py's encode_prompt and compute_time_ids
    embeds = []
    for encoder, encoder_ids in zip((pipe.text_encoder, pipe.text_encoder_2), ids):
        output = encoder(encoder_ids[chosen].to(device), output_hidden_states=True, return_dict=False)
        pooled = output[0]
        embeds.append(output[-1][-2])
    time_ids = torch.tensor([[size, size, 0, 0, size, size]] * len(chosen), device=device, dtype=dtype)
    return torch.cat(embeds, dim=-1), {"time_ids": time_ids, "text_embeds": pooled.view(len(chosen), -1)}


def example_lora(model, data: Path, size: int, batch_size: int, steps: int, *, mixed_precision: str = "no",
                 gradient_checkpointing: bool = False, eight_bit: bool = False) -> float:
    """Seconds per step of the example's loop (after the warm-up) on the loaded pipeline's parts."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from modules.training import dataset as datasets
    from modules.training.denoising import encode
    from modules.training.text_conditioning import frozen

    pipe, xl = model.pipeline, model.spec.family.xl
    unet = pipe.unet
    device, dtype = next(unet.parameters()).device, unet.dtype
    entries = datasets.read_dataset(data, width=size, height=size)
    posteriors = [encode(pipe.vae, entry.pixels) for entry in entries]
    means = torch.stack([p.mean for p in posteriors]).to(device, dtype)
    stds = torch.stack([p.std for p in posteriors]).to(device, dtype)
    captions = [entry.filename_text for entry in entries]
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if xl else [])
    ids = [tokenizer(captions, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                     return_tensors="pt").input_ids for tokenizer in tokenizers]
    scheduler = DDPMScheduler.from_config(model.scheduler_config)
    autocast = getattr(torch, MIXED[mixed_precision]) if mixed_precision in MIXED and device.type == "cuda" else None
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if xl else [])
    ends = []
    with frozen(unet, pipe.vae, *encoders), torch.enable_grad(), \
            example_adapter(unet, RANK, gradient_checkpointing) as parameters:
        if eight_bit:
            import bitsandbytes

            optimizer_class = bitsandbytes.optim.AdamW8bit
        else:
            optimizer_class = torch.optim.AdamW
        optimizer = optimizer_class(parameters, lr=LEARNING_RATE, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        lr_scheduler = get_scheduler("constant", optimizer, num_warmup_steps=0,
                                     num_training_steps=steps + WARM_UP_STEPS)
        scaler = torch.amp.GradScaler("cuda", enabled=autocast is torch.float16)
        train_loss = 0.0
        for step in range(steps + WARM_UP_STEPS):
            chosen = [(step * batch_size + offset) % len(entries) for offset in range(batch_size)]
            latents = means[chosen] + stds[chosen] * torch.randn_like(means[chosen])   # latent_dist.sample()
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(chosen),), device=device).long()
            noisy = scheduler.add_noise(latents, noise, timesteps)
            hidden, added = _example_conditioning(pipe, xl, ids, chosen, size, device, dtype)
            target = noise if scheduler.config.prediction_type == "epsilon" else \
                scheduler.get_velocity(latents, noise, timesteps)
            with torch.autocast(device.type, dtype=autocast) if autocast else nullcontext():
                prediction = unet(noisy, timesteps, hidden, added_cond_kwargs=added, return_dict=False)[0]
            loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
            train_loss += loss.item()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            scaler.step(optimizer)
            scaler.update()
            lr_scheduler.step()
            optimizer.zero_grad()
            ends.append(step_end())
    return per_step(ends, skip=WARM_UP_STEPS - 1)


def lora_cpu(model, work: Path, data: Path, size: int, batch_size: int, steps: int) -> list[str]:
    return compare(f"LoRA (rank {RANK}, UNet attention, AdamW), tiny SD1 model, {size}x{size}, batch {batch_size}",
                   lambda: ours_lora(model, work, data, size, batch_size, steps),
                   lambda: example_lora(model, data, size, batch_size, steps), "train_text_to_image_lora.py",
                   (POSTERIOR_NOTE,))


def lora_checkpointing_cpu(model, work: Path, data: Path, size: int, batch_size: int, steps: int) -> list[str]:
    """The same with gradient checkpointing on both sides (the UNet's activations recomputed in the backward)."""
    return compare(f"LoRA with gradient checkpointing, tiny SD1 model, {size}x{size}, batch {batch_size}",
                   lambda: ours_lora(model, work, data, size, batch_size, steps, gradient_checkpointing=True),
                   lambda: example_lora(model, data, size, batch_size, steps, gradient_checkpointing=True),
                   "train_text_to_image_lora.py", (POSTERIOR_NOTE,))
