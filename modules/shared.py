"""A1111's `modules.shared`, for extensions and A1111's surface here: `opts`, `cmd_opts`, `state`, `sd_model`,
`OptionInfo`.

Extensions written for A1111 read these globals, so `bind(services)` (called once the services exist and
before any extension is imported) points them at the one options object, the parsed flags, the job queue
and the model manager. Everything here forwards to those owners; nothing is stored twice.
Inside the project only A1111's surface reads it (`processing`, `scripts`, `addons/outpainting` and the built-in
scripts, which are written like extensions), and `services` binds it; the rest of the backend receives the
services it needs (design rule 3).
"""
from __future__ import annotations

from typing import Any

from modules.settings.option_info import OptionInfo as _OptionInfo

_services = None


def bind(services) -> None:
    """Point A1111's module globals (here, and `devices.device`, `paths.data_path`, …) at the running server."""
    global _services
    _services = services
    from modules import devices, paths

    devices.bind_for_extensions(services.devices)
    paths.bind_for_extensions(services.paths)


def services():
    """The running server's services (checkpoint registry, networks, upscalers, ...): for the built-in scripts'
    ui(), which list checkpoints and VAEs; not part of the A1111 surface."""
    if _services is None:
        raise RuntimeError("modules.shared is used before the web UI has started (no services bound)")
    return _services



class _Options:
    """`shared.opts`: reads and writes go to the services' Options (A1111: `opts.key`, `opts.data`, ...)."""

    def __getattr__(self, key: str) -> Any:
        return getattr(services().options, key)

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

    def interrupt(self) -> None:
        services().queue.interrupt()

    def skip(self) -> None:
        services().queue.skip()


opts = _Options()
state = _State()


def __getattr__(name: str) -> Any:
    # Module attributes that follow the running server (PEP 562).
    if name == "cmd_opts":
        return services().args
    if name == "sd_model":
        return services().models.current
    if name == "device":
        return services().devices.device
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")


def OptionInfo(default: Any = None, label: str = "", component: Any = None, component_args: Any = None,
               onchange: Any = None, section: Any = None, refresh: Any = None, comment_before: str = "",
               comment_after: str = "", infotext: str | None = None, restrict_api: bool = False,
               category_id: str | None = None) -> _OptionInfo:
    """A1111's OptionInfo signature, giving the project's OptionInfo (`opts.add_option(key, info)` takes it)."""
    return _OptionInfo(default=default, label=label, section=section or "", component=component,
                       component_args=component_args, onchange=onchange, refresh=refresh,
                       comment_before=comment_before, comment_after=comment_after,
                       infotext=infotext, restrict_api=restrict_api, category_id=category_id)


def options_section(section_identifier: tuple, options_dict: dict) -> dict:
    """A1111's helper: give every OptionInfo in `options_dict` the section (id, title)."""
    import dataclasses

    return {key: dataclasses.replace(info, section=section_identifier) for key, info in options_dict.items()}
