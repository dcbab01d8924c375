"""Hypernetwork training speed: our trainer (`modules.training.hypernetwork.train_hypernetwork`) against a bare loop of
the same modules. diffusers has no hypernetwork example, so the reference is a plain PyTorch loop written here: the
same hypernetwork file's modules on the same attention layers through the same attention processor
(`networks.hypernetwork.applied`), AdamW with the same learning rate and torch's default weight decay, the text
encoder on the tokenized captions, the latents' posterior means (our "deterministic" sampling on both sides),
noise, a timestep, the UNet, MSE, backward, optimiser. The ratio is therefore the cost of our training loop around
the modules (prompt templates, A1111's prompt encoding, schedules, logging), not a comparison with another project.
"""
from __future__ import annotations

from pathlib import Path

from .training import TEMPLATE, StepClock, compare, per_step, step_end
from .training_lora import WARM_UP_STEPS

LEARNING_RATE = 1e-5   # A1111's default


class _Fixed:
    """The cache `applied` asks for the file's hypernetwork: this one answers with the modules being trained."""

    def __init__(self, network):
        self.network = network

    def get(self, path):
        return self.network


def _create(model, folder: Path, name: str) -> Path:
    from modules.networks.hypernetwork.apply import attention_layers
    from modules.training.hypernetwork_files import Structure, create_hypernetwork

    widths = sorted({layer.width for layer in attention_layers(model.pipeline)})
    structure = Structure((1.0, 2.0, 1.0), "linear", False, (0.0, 0.0, 0.0))   # A1111's defaults
    return create_hypernetwork(folder, name, widths, structure, overwrite=True)


def ours_hypernetwork(model, work: Path, data: Path, size: int, batch_size: int, steps: int) -> float:
    from modules.training.common import TrainingFolders
    from modules.training.hypernetwork import train_hypernetwork
    from modules.training.requests import TrainHypernetworkRequest

    path = _create(model, work / "hypernetworks", "benchhyper")
    for state in path.parent.glob("*.optim"):
        state.unlink()
    (work / "templates").mkdir(parents=True, exist_ok=True)
    (work / "templates" / "bench.txt").write_text(TEMPLATE + "\n")
    request = TrainHypernetworkRequest(hypernetwork_name="benchhyper", data_root=str(data), steps=steps + WARM_UP_STEPS,
                                       batch_size=batch_size, training_width=size, training_height=size,
                                       learn_rate=str(LEARNING_RATE), template_filename="bench.txt",
                                       save_hypernetwork_every=0, create_image_every=0,
                                       latent_sampling_method="deterministic", seed=1)
    clock = StepClock()
    train_hypernetwork(request, path=path, model=model, job=clock,
                       folders=TrainingFolders(templates=work / "templates", log_root=work))
    return per_step(clock.ends, skip=WARM_UP_STEPS - 1)


def plain_loop(model, work: Path, data: Path, size: int, batch_size: int, steps: int) -> float:
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from modules.networks.hypernetwork.apply import applied
    from modules.networks.hypernetwork.files import HypernetworkInfo
    from modules.networks.hypernetwork.loading import load_hypernetwork
    from modules.training import dataset as datasets
    from modules.training.denoising import encode
    from modules.training.text_conditioning import frozen

    pipe = model.pipeline
    unet, text_encoder, tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
    device = next(unet.parameters()).device
    path = _create(model, work / "hypernetworks-plain", "benchplain")
    network = load_hypernetwork(path)
    modules = [module for pair in network.layers.values() for module in pair]
    for module in modules:
        module.to(device).requires_grad_(True).train()
    optimizer = torch.optim.AdamW([p for module in modules for p in module.parameters()], lr=LEARNING_RATE)
    entries = datasets.read_dataset(data, width=size, height=size)
    latents = torch.stack([encode(pipe.vae, entry.pixels).mean for entry in entries]).to(device, unet.dtype)
    prompts = [TEMPLATE.replace("[name]", "benchplain").replace("[filewords]", entry.filename_text)
               for entry in entries]
    ids = tokenizer(prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                    return_tensors="pt").input_ids
    scheduler = DDPMScheduler.from_config(model.scheduler_config)
    ends = []
    with frozen(unet, pipe.vae, text_encoder), torch.enable_grad(), \
            applied(pipe, [(HypernetworkInfo(name="benchplain", path=path), 1.0)], _Fixed(network)):
        for step in range(steps + WARM_UP_STEPS):
            chosen = [(step * batch_size + offset) % len(entries) for offset in range(batch_size)]
            with torch.no_grad():
                hidden = text_encoder(ids[chosen].to(device))[0]
            batch = latents[chosen]
            noise = torch.randn_like(batch)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(chosen),), device=device)
            noisy = scheduler.add_noise(batch, noise, timesteps)
            prediction = unet(noisy, timesteps, hidden).sample
            target = noise if scheduler.config.prediction_type == "epsilon" else \
                scheduler.get_velocity(batch, noise, timesteps)
            loss = F.mse_loss(prediction.float(), target.float())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            ends.append(step_end())
    return per_step(ends, skip=WARM_UP_STEPS - 1)


def hypernetwork(model, work: Path, data: Path, size: int, batch_size: int, steps: int) -> list[str]:
    return compare(f"hypernetwork (1, 2, 1 linear, AdamW), tiny SD1 model, {size}x{size}, batch {batch_size}",
                   lambda: ours_hypernetwork(model, work, data, size, batch_size, steps),
                   lambda: plain_loop(model, work, data, size, batch_size, steps), "plain loop, same modules",
                   ("diffusers has no hypernetwork example: the reference is a bare PyTorch loop of the same modules "
                    "on the same attention processor, so the ratio is the overhead of our loop around them",))
