"""Training work as jobs of the one queue (the worker owns the models): what `Services.submit_create_embedding`
and `submit_train_embedding` run, on the current checkpoint (A1111 trains on the loaded model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from modules.jobs import Job, JobError, StorageFull
from modules.training import embedding_files
from modules.training.requests import CreateEmbeddingRequest, TrainEmbeddingRequest
from modules.training.textual_inversion import TrainingFolders, TrainingResult, train_embedding


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


def train_embedding_run(services, request: TrainEmbeddingRequest) -> Callable[[Job], TrainingResult]:
    def run(job: Job) -> TrainingResult:
        model = _current_model(services)
        options = services.options
        folders = TrainingFolders(embeddings=services.paths.embeddings, templates=services.paths.training_templates,
                                  log_root=services.paths.data)
        try:
            return train_embedding(request, model=model, folders=folders, job=job,
                                   clip_skip=int(options.CLIP_stop_at_last_layers), emphasis=options.emphasis,
                                   filename_word_regex=options.dataset_filename_word_regex or "",
                                   filename_join_string=options.dataset_filename_join_string or " ")
        finally:
            services.networks.embeddings.refresh()   # the trained file's new step and vectors

    return run
