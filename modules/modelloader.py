"""A1111's `modules.modelloader` for extensions: finding model files in a folder, a model's friendly name, and
loading an upscaler model through spandrel (`postprocess/upscalers.py`).

This web UI downloads nothing: `load_file_from_url` gives the file when it is already in the folder and otherwise
raises an error naming the URL and where to put the file.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from modules.addons.missing_names import missing_name

log = logging.getLogger(__name__)


class ModelNotDownloaded(FileNotFoundError):
    """A model an extension asked to download, which is not on disk."""


def load_file_from_url(url: str, *, model_dir: str, progress: bool = True, file_name: str | None = None,
                       hash_prefix: str | None = None) -> str:
    """The path of `file_name` (default: the URL's file name) in `model_dir`, when it is there."""
    file_name = file_name or os.path.basename(urlparse(url).path)
    cached_file = os.path.abspath(os.path.join(model_dir, file_name))
    if not os.path.exists(cached_file):
        raise ModelNotDownloaded(f"{file_name} is not in {model_dir} and this web UI does not download models: "
                                 f"download {url} and put it there")
    return cached_file


def load_models(model_path: str, model_url: str | None = None, command_path: str | None = None, ext_filter=None,
                download_name=None, ext_blacklist=None, hash_prefix=None) -> list:
    """The model files in `command_path` (or its experiments/pretrained_models) and `model_path`, as A1111 finds
    them. With none found, A1111 downloads `model_url`: here a file of that name already in the folder is given,
    else a warning names the URL (`download_name` set) or the URL is given for the caller (as A1111 does)."""
    from modules import shared

    places = []
    if command_path is not None and command_path != model_path:
        pretrained = os.path.join(command_path, "experiments/pretrained_models")
        if os.path.exists(pretrained):
            places.append(pretrained)
        elif os.path.exists(command_path):
            places.append(command_path)
    places.append(model_path)
    found = []
    for place in places:
        for full_path in shared.walk_files(place, allowed_extensions=ext_filter):
            if os.path.islink(full_path) and not os.path.exists(full_path):
                continue
            if ext_blacklist is not None and any(full_path.endswith(x) for x in ext_blacklist):
                continue
            if full_path not in found:
                found.append(full_path)
    if model_url is not None and not found:
        if download_name is None:
            found.append(model_url)
        else:
            try:
                found.append(load_file_from_url(model_url, model_dir=places[0], file_name=download_name))
            except ModelNotDownloaded as error:
                log.warning("%s", error)
    return found


def friendly_name(file: str) -> str:
    if file.startswith("http"):
        file = urlparse(file).path
    return os.path.splitext(os.path.basename(file))[0]


def load_spandrel_model(path, *, device, prefer_half: bool | None = None, dtype=None, expected_architecture=None):
    """An upscaler (or other image model) file read by spandrel, on `device`, as the Extras tab loads one."""
    import torch

    from modules.postprocess.upscalers import load_descriptor

    dtype = dtype or (torch.float16 if prefer_half else torch.float32)
    descriptor = load_descriptor(Path(path), torch.device(device) if device is not None else torch.device("cpu"),
                                 dtype)
    if expected_architecture and descriptor.architecture.name != expected_architecture:
        log.warning("model %s: expected architecture %s, found %s", path, expected_architecture,
                    descriptor.architecture.name)
    return descriptor


def __getattr__(name: str):
    # load_upscalers, cleanup_models, move_files, …
    raise missing_name("modules.modelloader", name, "upscalers are found by the Extras tab's list "
                                                     "(shared.sd_upscalers) here")
