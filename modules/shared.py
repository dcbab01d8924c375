"""A1111's `modules.shared`, for extensions and A1111's surface here: `opts`, `cmd_opts`, `state`, `sd_model`,
`OptionInfo`, `prompt_styles`, `sd_upscalers`, `total_tqdm`, `listfiles`, `walk_files`, … (docs/extensions.md).

Extensions written for A1111 read these globals, so `bind(services)` (called once the services exist and
before any extension is imported) points them at the one options object, the parsed flags, the job queue
and the model manager. Everything here forwards to those owners; nothing is stored twice.
Inside the project only A1111's surface reads it (`processing`, `scripts`, `addons/outpainting` and the built-in
scripts, which are written like extensions), and `services` binds it; the rest of the backend receives the
services it needs (design rule 3).
"""
from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime
from typing import Any

from modules.addons import running
from modules.addons.missing_names import missing_name
from modules.settings.option_info import OptionInfo as _OptionInfo
from modules.util import listfiles, natural_sort_key, walk_files  # noqa: F401 - A1111's names here too
from modules.shared_total_tqdm import TotalTQDM

_server_start = time.time()
total_tqdm = TotalTQDM()
demo = None   # A1111's page (gr.Blocks), set by webui.py once the UI is built (None with --nowebui)


def bind(services) -> None:
    """Point A1111's module globals (here, and `devices.device`, `paths.data_path`, …) at the running server."""
    global _server_start
    running.bind(services)
    _server_start = time.time()
    from modules import devices, paths

    devices.bind_for_extensions(services.devices)
    paths.bind_for_extensions(services.paths)


def services():
    """The running server's services (checkpoint registry, networks, upscalers, ...): for the built-in scripts'
    ui(), which list checkpoints and VAEs; not part of the A1111 surface."""
    return running.services()


def _as_a1111(key: str, value: Any) -> Any:
    """A folder setting is absolute: ours are relative to the data folder, and an extension would resolve one
    against its working directory."""
    if ((key.startswith("outdir_") or key in ("temp_dir", "control_net_detectedmap_dir")) and isinstance(value, str)
            and value and not os.path.isabs(value)):
        return str(services().paths.data / value)
    return value


class _Options:
    """`shared.opts`: reads and writes go to the services' Options (A1111: `opts.key`, `opts.data`, ...)."""

    def __getattr__(self, key: str) -> Any:
        return _as_a1111(key, getattr(services().options, key))

    def get(self, key: str, default: Any = None) -> Any:
        return _as_a1111(key, services().options.get(key, default))

    def __setattr__(self, key: str, value: Any) -> None:
        services().update_options({key: value}, from_api=False)

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        services().update_options({key: value}, from_api=is_api)
        return True

    def save(self, filename: str | None = None) -> None:
        """Settings are saved on every change; kept for extensions that call it."""


class _State:
    """`shared.state`: the running job, as A1111's State reports it."""

    @property
    def _job(self):
        return services().queue.current

    @property
    def interrupted(self) -> bool:
        job = self._job
        return bool(job and job.interrupted)

    @property
    def skipped(self) -> bool:
        job = self._job
        return bool(job and job.skipped)

    @property
    def job(self) -> str:
        job = self._job
        return job.id if job else ""

    @property
    def job_count(self) -> int:
        job = self._job
        return job.image_count if job else 0

    @property
    def job_no(self) -> int:
        job = self._job
        return job.image_index if job else 0

    @job_count.setter
    def job_count(self, value: int) -> None:
        self._set("image_count", int(value))

    @job_no.setter
    def job_no(self, value: int) -> None:
        self._set("image_index", int(value))

    def nextjob(self) -> None:
        job = self._job
        if job is not None:
            job.image_index += 1

    def begin(self, job: str = "") -> None:
        """The job queue tracks jobs itself; kept for scripts that call it."""

    def end(self) -> None:
        """The job queue tracks jobs itself; kept for scripts that call it."""

    def _set(self, name: str, value) -> None:
        job = self._job
        if job is not None:
            setattr(job, name, value)

    @property
    def sampling_step(self) -> int:
        job = self._job
        return job.step if job else 0

    @property
    def sampling_steps(self) -> int:
        job = self._job
        return job.steps if job else 0

    @property
    def textinfo(self) -> str:
        job = self._job
        return job.textinfo if job else ""

    @textinfo.setter
    def textinfo(self, value: str) -> None:
        job = self._job
        if job is not None:
            job.textinfo = str(value)

    @sampling_step.setter
    def sampling_step(self, value: int) -> None:
        self._set("step", int(value))

    @sampling_steps.setter
    def sampling_steps(self, value: int) -> None:
        self._set("steps", int(value))

    @property
    def current_image(self):
        """The latest live preview of the running job (a PIL image), or None."""
        job = self._job
        return job.preview if job else None

    @current_image.setter
    def current_image(self, image) -> None:
        self.assign_current_image(image)

    def assign_current_image(self, image) -> None:
        """Show `image` as the running job's live preview (A1111's scripts show their own progress so)."""
        job = self._job
        if job is not None:
            job.set_preview(image)

    @property
    def id_live_preview(self) -> int:
        job = self._job
        return job.preview_id if job else 0

    @property
    def time_start(self) -> float | None:
        job = self._job
        return job.started if job else None

    @property
    def job_timestamp(self) -> str:
        """When the running job started, as A1111 writes it ("20240101123456"; "0" without a job)."""
        job = self._job
        started = job.started if job and job.started else None
        return datetime.fromtimestamp(started).strftime("%Y%m%d%H%M%S") if started else "0"

    @property
    def server_start(self) -> float:
        return _server_start

    @property
    def processing_has_refined_job_count(self) -> bool:
        """Set by a script that announced its own job count (A1111 then keeps it)."""
        return bool(getattr(self._job, "a1111_refined_job_count", False))

    @processing_has_refined_job_count.setter
    def processing_has_refined_job_count(self, value: bool) -> None:
        self._set("a1111_refined_job_count", bool(value))

    def dict(self) -> dict:
        return {"skipped": self.skipped, "interrupted": self.interrupted, "stopping_generation": False,
                "job": self.job, "job_count": self.job_count, "job_timestamp": self.job_timestamp,
                "job_no": self.job_no, "sampling_step": self.sampling_step, "sampling_steps": self.sampling_steps}

    def interrupt(self) -> None:
        services().queue.interrupt()

    def skip(self) -> None:
        services().queue.skip()

    def __getattr__(self, name: str):
        # current_latent, stopping_generation, server_command, need_restart, …
        raise missing_name("modules.shared.state", name, "the live preview is state.current_image; the latents "
                                                         "stay inside the sampling loop")


opts = _Options()
state = _State()


class _PromptStyles:
    """`shared.prompt_styles`: A1111's StyleDatabase over the project's styles.csv store."""

    @property
    def styles(self) -> dict:
        return {style.name: style for style in services().networks.styles.items()}

    def apply_styles_to_prompt(self, prompt: str, styles: list[str]) -> str:
        return services().networks.styles.apply(prompt, "", styles)[0]

    def apply_negative_styles_to_prompt(self, prompt: str, styles: list[str]) -> str:
        return services().networks.styles.apply("", prompt, styles)[1]

    def get_style_prompts(self, styles: list[str]) -> list[str]:
        return [self.styles[name].prompt for name in styles if name in self.styles]

    def get_negative_style_prompts(self, styles: list[str]) -> list[str]:
        return [self.styles[name].negative_prompt for name in styles if name in self.styles]

    def extract_styles_from_prompt(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        prompt, negative_prompt, names = services().networks.styles.extract(prompt, negative_prompt)
        return names, prompt, negative_prompt

    def reload(self) -> None:
        services().networks.styles.reload()

    def __getattr__(self, name: str):
        raise missing_name("modules.shared.prompt_styles", name)


prompt_styles = _PromptStyles()


def __getattr__(name: str) -> Any:
    # Module attributes that follow the running server (PEP 562).
    if name == "cmd_opts":
        return services().args
    if name == "sd_model":
        from modules import sd_models

        return sd_models.current_model()
    if name == "device":
        return services().devices.device
    if name == "sd_upscalers":
        from modules import upscaler

        return upscaler.server_upscalers()
    if name == "face_restorers":
        from modules import face_restoration

        return face_restoration.restorers()
    if name == "hide_dirs":
        return {"visible": not services().args.hide_ui_dir_config}
    if name == "interrogator":   # A1111's InterrogateModels("interrogate"), over the server's Interrogator
        from modules import interrogate

        return interrogate.InterrogateModels("interrogate")
    if name in ("list_checkpoint_tiles", "refresh_checkpoints", "list_samplers", "reload_hypernetworks"):
        from modules import shared_items

        return getattr(shared_items, name)
    if name in ("models_path", "script_path", "data_path", "extensions_dir", "extensions_builtin_dir"):
        from modules import paths

        return getattr(paths, name)
    raise missing_name("modules.shared", name)


class _MutableOptionInfo(_OptionInfo):
    """A1111's OptionInfo is a plain object: extensions set `info.section = …` after making one and call
    `.info(…)`, `.html(…)`, `.needs_restart()`, … with or without using the result. This one has the project's
    fields and checks, and changes in place (`opts.add_option` stores its own copy)."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)


def _in_place(method_name: str):
    def chained(self, *args):
        changed = getattr(_OptionInfo, method_name)(self, *args)
        self.__dict__.update(changed.__dict__)
        return self

    chained.__name__ = method_name
    return chained


for _method in ("info", "html", "link", "js", "needs_restart", "needs_reload_ui"):
    setattr(_MutableOptionInfo, _method, _in_place(_method))
del _method


def OptionInfo(default: Any = None, label: str = "", component: Any = None, component_args: Any = None,
               onchange: Any = None, section: Any = None, refresh: Any = None, comment_before: str = "",
               comment_after: str = "", infotext: str | None = None, restrict_api: bool = False,
               category_id: str | None = None) -> _OptionInfo:
    """A1111's OptionInfo signature, giving the project's OptionInfo (`opts.add_option(key, info)` takes it)."""
    return _MutableOptionInfo(default=default, label=label, section=section or "", component=component,
                              component_args=component_args, onchange=onchange, refresh=refresh,
                              comment_before=comment_before, comment_after=comment_after,
                              infotext=infotext, restrict_api=restrict_api, category_id=category_id)


def options_section(section_identifier: tuple, options_dict: dict) -> dict:
    """A1111's helper: give every OptionInfo in `options_dict` the section (id, title)."""
    return {key: dataclasses.replace(info, section=section_identifier) for key, info in options_dict.items()}
