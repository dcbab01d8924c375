"""Training work as jobs of the one queue (the worker owns the models): what `Services.submit_create_embedding`,
`submit_train_embedding`, `submit_create_hypernetwork`, `submit_train_hypernetwork`, `submit_train_lora` and
`submit_train_controlnet` run, on the current checkpoint (A1111 trains on the loaded model). A DreamBooth-LoRA's
missing class images are generated here, through the generation core, before its training starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from modules.generation.request import validate_request
from modules.jobs import Job, JobError, StorageFull
from modules.networks.textual_inversion import encoder_widths
from modules.training import class_images, embedding_files, hypernetwork_files, previews
from modules.training.controlnet_training import ControlNetFolders, TrainControlNetRequest, train_controlnet
from modules.training.hypernetwork import train_hypernetwork
from modules.training.lora_requests import TrainLoraRequest
from modules.training.lora_training import LoraFolders, train_lora
from modules.training.requests import (CreateEmbeddingRequest, CreateHypernetworkRequest, TrainEmbeddingRequest,
                                       TrainHypernetworkRequest)
from modules.training.common import TrainingFolders, TrainingResult
from modules.training.textual_inversion import train_embedding


def _current_model(services):
    return services.generator.load(services.options.sd_model_checkpoint or None)


def create_embedding(services, request: CreateEmbeddingRequest) -> Callable[[Job], Path]:
    def run(job: Job) -> Path:
        model = _current_model(services)
        if model.spec.family.xl:
            raise JobError("creating an embedding here needs an SD 1.x or 2.x checkpoint (A1111's trainable kind): "
                           f"'{model.info.title}' is SDXL")
        vectors = embedding_files.initial_vectors(model.pipeline, request.init_text, request.num_vectors_per_token)
        try:
            path = embedding_files.create_embedding(
                services.paths.embeddings, request.name, vectors, overwrite=request.overwrite_old,
                checkpoint_hash=model.info.shorthash, checkpoint_name=model.info.model_name)
        except embedding_files.EmbeddingFileError as error:
            raise JobError(str(error)) from None
        except OSError as error:
            raise StorageFull(f"could not write the embedding: {error}") from None
        services.networks.embeddings.refresh()
        return path

    return run


def preview_generator(services) -> previews.Generate:
    """Previews through the generation core, on the current model, reading the embeddings and ControlNet folders
    anew (the file being trained may be new there)."""
    def generate(fields: dict, job: Job):
        services.networks.embeddings.refresh()
        if fields.get("controlnet_units"):
            services.controlnet.registry.refresh()
        request = validate_request(fields, services.registry, services.networks, services.upscalers)
        result = services.generator.generate(request, job)
        if not result.images:   # interrupted before the image was made
            return None
        first = result.index_of_first_image
        return result.images[first], result.infotexts[first]

    return generate


def check_preview_fields(services, request) -> None:
    """A preview that could not be made is found before the first step, not at step N."""
    if not request.create_image_every:
        return
    try:
        validate_request(previews.PreviewSettings.of(request).request_fields("preview"), services.registry,
                         services.networks, services.upscalers)
    except ValidationError as error:
        problems = "; ".join(f"preview_{item['loc'][-1]}: {item['msg']}" for item in error.errors())
        raise JobError(f"the preview settings cannot make an image: {problems}") from None


def train_embedding_run(services, request: TrainEmbeddingRequest) -> Callable[[Job], TrainingResult]:
    def run(job: Job) -> TrainingResult:
        model = _current_model(services)
        options = services.options
        folders = TrainingFolders(embeddings=services.paths.embeddings, templates=services.paths.training_templates,
                                  log_root=services.paths.data)
        check_preview_fields(services, request)
        try:
            return train_embedding(request, model=model, folders=folders, job=job,
                                   clip_skip=int(options.CLIP_stop_at_last_layers), emphasis=options.emphasis,
                                   filename_word_regex=options.dataset_filename_word_regex or "",
                                   filename_join_string=options.dataset_filename_join_string or " ",
                                   generate=preview_generator(services))
        finally:
            services.networks.embeddings.refresh()   # the trained file's new step and vectors

    return run


def create_hypernetwork(services, request: CreateHypernetworkRequest) -> Callable[[Job], Path]:
    def run(job: Job) -> Path:
        try:
            path = hypernetwork_files.create_hypernetwork(
                services.paths.hypernetworks, request.name, request.enable_sizes, request.structure(),
                weight_init=request.weight_init, use_dropout=request.use_dropout, overwrite=request.overwrite_old)
        except hypernetwork_files.HypernetworkFileError as error:
            raise JobError(str(error)) from None
        except OSError as error:
            raise StorageFull(f"could not write the hypernetwork: {error}") from None
        services.networks.hypernetworks.refresh()   # /sdapi/v1/hypernetworks and <hypernet:name> know it now
        return path

    return run


def train_hypernetwork_run(services, request: TrainHypernetworkRequest) -> Callable[[Job], TrainingResult]:
    def run(job: Job) -> TrainingResult:
        model = _current_model(services)
        registry = services.networks.hypernetworks
        registry.refresh()
        info = registry.find(request.hypernetwork_name)
        if info is None:
            raise JobError(f"no hypernetwork named '{request.hypernetwork_name}' in {services.paths.hypernetworks}: "
                           "create it first (Train → Create hypernetwork)")
        options = services.options
        embeddings, _ = services.networks.embeddings.for_model(encoder_widths(model.pipeline))
        folders = TrainingFolders(templates=services.paths.training_templates, log_root=services.paths.data)
        check_preview_fields(services, request)
        return train_hypernetwork(request, path=info.path, model=model, folders=folders, job=job,
                                  clip_skip=int(options.CLIP_stop_at_last_layers), emphasis=options.emphasis,
                                  embeddings=embeddings,
                                  filename_word_regex=options.dataset_filename_word_regex or "",
                                  filename_join_string=options.dataset_filename_join_string or " ",
                                  generate=preview_generator(services))

    return run


def train_lora_run(services, request: TrainLoraRequest) -> Callable[[Job], TrainingResult]:
    def run(job: Job) -> TrainingResult:
        model = _current_model(services)
        services.registry.ensure_hash(model.info)   # the file's ss_new_sd_model_hash
        folders = LoraFolders(loras=services.paths.lora, log_root=services.paths.data)

        def make_class_images(seed: int) -> None:   # DreamBooth: the class folder topped up to num_class_images
            if request.num_class_images:
                class_images.top_up(request.class_data_root, prompt=request.class_prompt,
                                    wanted=request.num_class_images, resolution=request.resolution, seed=seed,
                                    generate=preview_generator(services), job=job)

        try:
            return train_lora(request, model=model, folders=folders, job=job, before_class_images=make_class_images,
                              generate=preview_generator(services))
        finally:
            services.networks.loras.refresh()   # the new or retrained file is listed

    return run


def train_controlnet_run(services, request: TrainControlNetRequest) -> Callable[[Job], TrainingResult]:
    def run(job: Job) -> TrainingResult:
        model = _current_model(services)
        services.registry.ensure_hash(model.info)   # named in the file's metadata
        folders = ControlNetFolders(controlnets=services.paths.controlnet,
                                    templates=services.paths.training_templates, log_root=services.paths.data)
        try:
            return train_controlnet(request, model=model, folders=folders, job=job,
                                    annotate=services.controlnet.preprocessors.run,
                                    generate=preview_generator(services))
        finally:
            services.controlnet.registry.refresh()   # the new or retrained file is listed

    return run
