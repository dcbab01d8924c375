"""A1111's `modules.paths_internal`: the same folders as `modules.paths` (A1111 computes them here first), plus
the few more names extensions read. Following the running server's folders."""
from __future__ import annotations

import os

from modules import paths
from modules.addons.missing_names import missing_name

script_path = paths.script_path
modules_path = os.path.join(script_path, "modules")
cwd = os.getcwd()


def normalized_filepath(filepath: str) -> str:
    return os.path.abspath(os.path.expanduser(filepath))


def __getattr__(name: str):
    if name in ("data_path", "models_path", "extensions_dir", "extensions_builtin_dir"):
        return getattr(paths, name)
    if name == "default_output_dir":
        return os.path.join(paths.data_path, "outputs")
    if name in ("sd_model_file", "default_sd_model_file"):
        return os.path.join(paths.models_path, "Stable-diffusion", "model.ckpt")
    raise missing_name("modules.paths_internal", name)
