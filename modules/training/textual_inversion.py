"""Textual-inversion training: A1111's Train → Train embedding (`train_embedding`, `POST /sdapi/v1/train/embedding`)
on a loaded SD 1.x / 2.x checkpoint.

Only the embedding's vectors learn (AdamW, weight decay 0, A1111's learning-rate schedule string, optional
gradient clipping by value or norm with its own schedule, gradient accumulation); the UNet, VAE and text encoder
stay frozen. Each optimiser step takes `gradient_step` batches of `batch_size` images from the dataset
(`dataset.py`: captions through the prompt template, tags shuffled or dropped), their latents (encoded once, as
A1111's "once" / "deterministic" / "random" latent sampling says), and minimises `denoising.denoising_loss`.

Files, as A1111 writes them: the embedding in the embeddings folder (`<name>.pt`, its `step` the steps done) with
its optimiser state beside it (`<name>.pt.optim`: A1111's `hash` and `optimizer_state_dict`, plus the training's
seed); under `<log_directory>/<date>/<name>/`: `embeddings/<name>-<step>.pt` every `save_embedding_every` steps
and `textual_inversion_loss.csv`. Interrupting saves both files: training the same embedding again resumes from
its step with the same optimiser state, data order and noise, and ends where an uninterrupted run would.

Previews every `create_image_every` steps go to `images/`; with `save_image_with_stored_embedding`, as A1111's,
the first preview after each `embeddings/<name>-<step>.pt` also goes to `image_embeddings/<name>-<preview step>.png`,
captioned and carrying that saved embedding (`embedding_image.py`).
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import torch

from modules.jobs import Job, JobError
from modules.networks.textual_inversion import SINGLE_KEY, Embedding, encoder_widths, fit_problem, load_embedding
from modules.training import dataset as datasets, previews
from modules.training.common import (BatchPlan, StepLoop, TrainingFolders, TrainingResult, log_folder, loss_weight,
                                     optimizer_state_bytes, prepare_latents, read_training_data, require_sd1_or_sd2,
                                     saved_optimizer_state, training_seed)
from modules.training.denoising import denoising_loss, training_scheduler
from modules.training.embedding_files import save_embedding
from modules.training.embedding_image import save_embedding_image
from modules.training.learn_schedule import LearnRateScheduler
from modules.training.requests import TrainEmbeddingRequest
from modules.training.text_conditioning import TrainingTextEncoder, frozen

LOSS_LOG = "textual_inversion_loss.csv"


def find_embedding_file(folder: Path, name: str) -> Path:
    for suffix in (".pt", ".safetensors", ".bin"):
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    raise JobError(f"no embedding named '{name}' in {folder}: create it first (Train → Create embedding)")


def vectors_hash(vectors: torch.Tensor) -> str:
    """A1111's `Embedding.checksum()` role: whether a saved optimiser state belongs to these vectors."""
    return hashlib.sha256(vectors.detach().float().cpu().numpy().tobytes()).hexdigest()[:12]


def train_embedding(request: TrainEmbeddingRequest, *, model, folders: TrainingFolders, job: Job,
                    clip_skip: int = 1, emphasis: str = "Original", filename_word_regex: str = "",
                    filename_join_string: str = " ", generate: previews.Generate | None = None) -> TrainingResult:
    """Run the training on the worker (it owns the model). Everything that can be wrong with the request, the
    embedding or the dataset is raised as a JobError before the first step. With `generate` (the generation
    core), a preview every `create_image_every` steps, made with the embedding saved so far."""
    pipeline = model.pipeline
    require_sd1_or_sd2(model, "textual inversion")
    path = find_embedding_file(folders.embeddings, request.embedding_name)
    embedding = load_embedding(path)
    problem = fit_problem(embedding, encoder_widths(pipeline))
    if problem:
        raise JobError(f"embedding '{embedding.name}' does not fit '{model.info.title}': {problem}")
    start = int(embedding.step or 0)
    result = TrainingResult("embedding", embedding.name, path, start, None)
    if start >= request.steps:
        job.textinfo = "Model has already been trained beyond specified max steps"
        return result

    lr_schedule = LearnRateScheduler(request.learn_rate, request.steps, start)
    entries, templates = read_training_data(request, folders.templates, filename_word_regex, filename_join_string)
    without_name = [line for line in templates if "[name]" not in line]
    if without_name:   # a prompt without the embedding gives it no gradient (A1111 fails at the first step)
        raise JobError(f"The prompt template {request.template_filename} has lines without [name], where the "
                       f"embedding goes (e.g. {without_name[0]!r}): every line needs it to train an embedding; "
                       "choose subject_filewords.txt or style_filewords.txt, or edit the template")

    vectors = embedding.vectors_for(SINGLE_KEY).detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([vectors], lr=lr_schedule.learn_rate, weight_decay=0.0)
    saved = saved_optimizer_state(path, vectors_hash(vectors))
    if saved:
        optimizer.load_state_dict(saved["optimizer_state_dict"])
    seed = training_seed(saved, request.seed)
    trained = Embedding(name=embedding.name, vectors={SINGLE_KEY: vectors}, path=path, step=start,
                        sd_checkpoint=model.info.shorthash, sd_checkpoint_name=model.info.model_name)

    folder = log_folder(folders.log_root, request.log_directory, embedding.name)
    result.log_folder = folder
    plan = BatchPlan(entries, request.batch_size, request.gradient_step, seed)
    scheduler = training_scheduler(model.scheduler_config)
    device = next(pipeline.unet.parameters()).device

    job.textinfo = f"Preparing dataset from {request.data_root}..."
    latents = prepare_latents(pipeline.vae, entries, request.latent_sampling_method, seed)
    weights = [loss_weight(entry, latents[index].mean.shape) if request.use_weight else None
               for index, entry in enumerate(entries)]

    def batch_loss(number: int, batch: list[int], generator: torch.Generator) -> torch.Tensor:
        encoder = TrainingTextEncoder(pipeline, model.spec.family, clip_skip=clip_skip, emphasis=emphasis,
                                      embeddings={trained.name: trained})
        rng = random.Random(generator.initial_seed())
        texts = [datasets.create_text(entries[i].filename_text, trained.name, templates, rng,
                                      shuffle_tags=request.shuffle_tags, tag_drop_out=request.tag_drop_out)
                 for i in batch]
        last_texts[:] = texts
        sampled = torch.stack([latents[i].sample(generator if request.latent_sampling_method == "random"
                                                 else None) for i in batch])
        weight = torch.stack([weights[i] for i in batch]) if request.use_weight else None
        cond = encoder.encode_batch(texts).to(device)
        return denoising_loss(pipeline.unet, scheduler, sampled, cond, generator, weight=weight)

    last_texts: list[str] = []   # the latest batch's prompts: A1111's preview prompt is its first
    # A1111's `embedding_yet_to_be_embedded`: the latest `<name>-<step>.pt` saved, until a preview image carries it
    not_yet_in_an_image: list[Embedding] = []

    def after_step(step: int) -> None:
        trained.step = step
        if request.save_embedding_every and step % request.save_embedding_every == 0:
            every = folder / "embeddings" / f"{trained.name}-{step}.pt"
            not_yet_in_an_image[:] = [_save(trained, optimizer, seed, every, name=f"{trained.name}-{step}")]
        if generate is not None and request.create_image_every and step % request.create_image_every == 0:
            _save(trained, optimizer, seed, path)   # what the generation reads (and a resumable state)
            made = previews.make_preview(generate, previews.PreviewSettings.of(request), last_texts[0], job,
                                         folder / "images", result)
            if made is not None and request.save_image_with_stored_embedding and not_yet_in_an_image:
                save_embedding_image(job.preview, not_yet_in_an_image.pop(), folder / "image_embeddings",
                                     trained.name, step)

    loop = StepLoop(request, job, result, optimizer, lr_schedule, [vectors], plan, folder / LOSS_LOG,
                    "Training textual inversion", batch_loss, after_step)
    with frozen(pipeline.unet, pipeline.vae, pipeline.text_encoder), torch.enable_grad():
        loop.run(start)
    _save(trained, optimizer, seed, path)
    return result


def _save(embedding: Embedding, optimizer, seed: int, path: Path, name: str | None = None) -> Embedding:
    """The embedding, then its optimiser state; each written atomically (a full disk keeps the last good file).
    Returns what was saved, as it is now (later steps do not change it)."""
    from modules.images import replace_atomically

    vectors = embedding.vectors_for(SINGLE_KEY)
    named = Embedding(name=name or embedding.name, vectors={SINGLE_KEY: vectors.detach().clone()}, path=path,
                      step=embedding.step, sd_checkpoint=embedding.sd_checkpoint,
                      sd_checkpoint_name=embedding.sd_checkpoint_name)
    try:
        save_embedding(named, path)
        replace_atomically(Path(f"{path}.optim"), optimizer_state_bytes(vectors_hash(vectors), optimizer, seed))
    except OSError as error:
        from modules.jobs import StorageFull

        raise StorageFull(f"could not save the embedding {path}: {error}") from None
    return named
