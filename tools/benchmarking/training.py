"""Training speed (issue 22): one optimiser step of our textual-inversion trainer against the loop of diffusers'
own example (examples/textual_inversion/textual_inversion.py: the token-embedding matrix trainable, the other
rows restored after each step) on the same model, data, batch size and prompts, in this process, interleaved.

Both sides start from latents encoded once (our "once" latent sampling; the example encodes every step, which
would only add the VAE's cost to its side), so the figure is the cost of each side's step: conditioning with the
embedding's vectors, the UNet forward and backward, the optimiser. Target: ours ≤ 1.1× the example's time.
"""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

from .checkpoints import tiny_checkpoint
from .measuring import synchronize

TEMPLATE = "a photo of a [name], [filewords]"


class _StepClock:
    """The training job's stand-in: records when each optimiser step ends."""

    def __init__(self):
        self.id, self.textinfo, self.ends = "benchmark", "", []
        self.interrupted = False

    def set_progress(self, step: int, steps: int) -> None:
        synchronize()
        self.ends.append(time.perf_counter())

    def set_preview(self, image) -> None:
        pass


def _dataset(folder: Path, size: int, count: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / f"{index:03d}.png")
        (folder / f"{index:03d}.txt").write_text(f"a red thing, number {index}")


def _per_step(ends: list[float], skip: int) -> float:
    gaps = [later - earlier for earlier, later in zip(ends[skip:], ends[skip + 1:])]
    return statistics.median(gaps)


def ours(model, work: Path, data: Path, size: int, batch_size: int, steps: int) -> float:
    from modules.training.embedding_files import create_embedding, initial_vectors
    from modules.training.requests import TrainEmbeddingRequest
    from modules.training.textual_inversion import TrainingFolders, train_embedding

    folders = TrainingFolders(embeddings=work / "embeddings", templates=work / "templates", log_root=work)
    folders.templates.mkdir(parents=True, exist_ok=True)
    (folders.templates / "bench.txt").write_text(TEMPLATE + "\n")
    create_embedding(folders.embeddings, "benchthing", initial_vectors(model.pipeline, "thing", 4), overwrite=True)
    for state in folders.embeddings.glob("*.optim"):
        state.unlink()
    request = TrainEmbeddingRequest(embedding_name="benchthing", data_root=str(data), steps=steps + 3,
                                    batch_size=batch_size, training_width=size, training_height=size,
                                    template_filename="bench.txt", create_image_every=0, save_embedding_every=0,
                                    latent_sampling_method="deterministic", seed=1)
    clock = _StepClock()
    train_embedding(request, model=model, folders=folders, job=clock)
    return _per_step(clock.ends, skip=2)


def diffusers_example(model, data: Path, size: int, batch_size: int, steps: int) -> float:
    """The example's loop body, on the same pipeline's parts."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from modules.training import dataset as datasets
    from modules.training.denoising import encode
    from modules.training.text_conditioning import frozen

    pipe = model.pipeline
    # the example adds a token and trains the embedding matrix: on copies, the loaded model stays as it is
    tokenizer, text_encoder, unet = copy.deepcopy(pipe.tokenizer), copy.deepcopy(pipe.text_encoder), pipe.unet
    placeholder = "<benchthing>"
    tokenizer.add_tokens([placeholder])
    token_id = tokenizer.convert_tokens_to_ids(placeholder)
    text_encoder.resize_token_embeddings(len(tokenizer))
    embeddings = text_encoder.get_input_embeddings()
    with torch.no_grad():
        embeddings.weight[token_id] = embeddings.weight[tokenizer.convert_tokens_to_ids("thing</w>")]
    text_encoder.requires_grad_(False)
    embeddings.weight.requires_grad_(True)
    optimizer = torch.optim.AdamW([embeddings.weight], lr=0.005, weight_decay=0.0)
    scheduler = DDPMScheduler.from_config(model.scheduler_config)
    entries = datasets.read_dataset(data, width=size, height=size)
    latents = torch.stack([encode(pipe.vae, entry.pixels).mean for entry in entries])
    prompts = [TEMPLATE.replace("[name]", placeholder).replace("[filewords]", entry.filename_text)
               for entry in entries]
    keep = torch.ones(len(tokenizer), dtype=torch.bool)
    keep[token_id] = False
    original = embeddings.weight.data.clone()
    device = next(unet.parameters()).device
    ends = []
    with frozen(unet, pipe.vae), torch.enable_grad():
        for step in range(steps + 3):
            chosen = [(step * batch_size + offset) % len(entries) for offset in range(batch_size)]
            ids = tokenizer([prompts[i] for i in chosen], padding="max_length", truncation=True,
                            max_length=tokenizer.model_max_length, return_tensors="pt").input_ids.to(device)
            batch = latents[chosen].to(device)
            noise = torch.randn_like(batch)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch.shape[0],), device=device)
            noisy = scheduler.add_noise(batch, noise, timesteps)
            hidden = text_encoder(ids)[0]
            prediction = unet(noisy, timesteps, hidden).sample
            target = noise if scheduler.config.prediction_type == "epsilon" else \
                scheduler.get_velocity(batch, noise, timesteps)
            loss = F.mse_loss(prediction.float(), target.float())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                embeddings.weight[keep] = original[keep]
            synchronize()
            ends.append(time.perf_counter())
    return _per_step(ends, skip=2)


def bench_training(work: Path, size: int = 64, batch_size: int = 2, steps: int = 20) -> list[str]:
    """Lines of the report: seconds per step on each side and the ratio."""
    from modules import cmd_args, services as services_module

    data_dir = work / "training-data"
    (data_dir / "models" / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
    tiny_checkpoint(data_dir / "models" / "Stable-diffusion" / "tiny.safetensors", seed=0)
    images = work / "training-images"
    _dataset(images, size, 8)
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data_dir), "--nowebui"]))
    try:
        model = services.generator.load(None)
        ours_seconds = ours(model, work / "training-ours", images, size, batch_size, steps)
        example_seconds = diffusers_example(model, images, size, batch_size, steps)
        ours_again = ours(model, work / "training-ours", images, size, batch_size, steps)
    finally:
        services.shutdown()
    ours_seconds = min(ours_seconds, ours_again)
    return [f"textual inversion, tiny SD1 model, {size}x{size}, batch {batch_size}, median of {steps} steps:",
            f"  ours:             {ours_seconds * 1000:8.1f} ms/step",
            f"  diffusers example:{example_seconds * 1000:8.1f} ms/step",
            f"  ratio ours/example: {ours_seconds / example_seconds:.2f} (target <= 1.10)"]
