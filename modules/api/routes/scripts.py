"""GET /sdapi/v1/scripts, /script-info and /extensions: the scripts loaded from scripts/ and extensions (and
ControlNet), and the extensions themselves.

Script names are A1111's `script.name` (the title in lower case, what `script_name` and `alwayson_scripts` match).
As in A1111, /scripts lists the always-on scripts too; here that is ControlNet, in both modes.
"""
from __future__ import annotations

from fastapi import APIRouter

from modules.addons import extensions as extensions_module
from modules.api import models
from modules.controlnet.units import ControlNetUnit
from modules.services import Services

CONTROLNET = "controlnet"


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    @router.get("/scripts", response_model=models.ScriptsList)
    def scripts():
        return script_lists(services)

    @router.get("/script-info", response_model=list[models.ScriptInfo])
    def script_info():
        return script_infos(services)

    @router.get("/extensions", response_model=list[models.ExtensionItem])
    def extensions():
        # Built-in and user extensions; commit_date is a string of the unix time, as A1111's model has it.
        return [{"name": item.name, "remote": item.remote, "branch": item.branch, "commit_hash": item.commit_hash,
                 "version": item.version, "commit_date": "" if item.commit_date is None else str(item.commit_date),
                 "enabled": item.enabled}
                for item in extensions_module.discover(services.paths, services.options, services.args)]

    return router


def script_lists(services: Services) -> models.ScriptsList:
    """Dropdown scripts, then always-on ones (ControlNet last), per tab, by name."""
    def names(runner) -> list[str]:
        return [*(s.name for s in runner.selectable_scripts), *(s.name for s in runner.alwayson_scripts), CONTROLNET]
    return models.ScriptsList(txt2img=names(services.scripts.txt2img), img2img=names(services.scripts.img2img))


def script_infos(services: Services) -> list[models.ScriptInfo]:
    """txt2img's scripts, then img2img's, as A1111 lists them."""
    controlnet_args = _controlnet_args(int(services.options.control_net_unit_count))

    def loaded(runner) -> list[models.ScriptInfo]:
        return [models.ScriptInfo(name=script.name, is_alwayson=script.alwayson, is_img2img=runner.is_img2img,
                                  args=[models.ScriptArg(**info) for info in runner.arg_infos.get(script.name, [])])
                for script in [*runner.selectable_scripts, *runner.alwayson_scripts]]
    return [*loaded(services.scripts.txt2img),
            models.ScriptInfo(name=CONTROLNET, is_alwayson=True, is_img2img=False, args=controlnet_args),
            *loaded(services.scripts.img2img),
            models.ScriptInfo(name=CONTROLNET, is_alwayson=True, is_img2img=True, args=controlnet_args)]


def _controlnet_args(unit_count: int) -> list[models.ScriptArg]:
    # The extension's arguments are its units, each a dict of unit fields; the default one is switched off.
    unit = ControlNetUnit(enabled=False).model_dump()
    return [models.ScriptArg(label=f"ControlNet Unit {index}", value=unit) for index in range(unit_count)]
