"""Extensions' pydantic-1 models on pydantic 2 (issue 21), as agent-scheduler writes them: a stand-in extension
defines `class Config(Parent.__config__)` with `schema_extra` / `orm_mode`, Optional fields without a default,
bare `@root_validator`s (as the ControlNet extension) and a subclass of A1111's StableDiffusionTxt2ImgProcessingAPI,
serves them on its own route from `on_app_started` and queues the request through `Api().text2imgapi` from its own
thread (agent-scheduler's API task runner). The web UI's own models are unchanged."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Optional

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, PydanticUserError, root_validator

from modules import cmd_args, services as services_module
from modules.addons import pydantic_v1_idioms
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

EXTENSION = '''
import json
import threading
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from fastapi import FastAPI
from pydantic import BaseModel, Field, root_validator

from modules import progress, script_callbacks, sd_samplers
from modules.api.api import Api
from modules.api.models import StableDiffusionTxt2ImgProcessingAPI
from modules.call_queue import queue_lock


class TaskModel(BaseModel):
    id: str = Field(title="Task Id")
    name: Optional[str] = Field(title="Task Name")
    priority: Optional[int]
    note: Any
    params: Dict[str, Any] = Field(title="Task Parameters")


class Task(TaskModel):
    params: str

    class Config(TaskModel.__config__):
        orm_mode = True
        exclude = ["params"]     # no pydantic setting: pydantic 1 ignored it


class Txt2ImgTaskArgs(StableDiffusionTxt2ImgProcessingAPI):
    checkpoint: Optional[str] = Field(None, title="Custom checkpoint.")
    sampler_index: Optional[str] = Field(sd_samplers.samplers[0].name, title="Sampler name", alias="sampler_name")

    class Config(StableDiffusionTxt2ImgProcessingAPI.__config__):
        @staticmethod
        def schema_extra(schema: Dict[str, Any], model) -> None:
            schema.get("properties", {}).pop("send_images", None)


class Unit(BaseModel):   # the ControlNet extension's ControlNetUnit checks itself so
    start: float = 0.0
    end: float = 1.0
    weight: int = 1

    @root_validator
    def ordered(cls, values):
        if values["start"] > values["end"]:
            raise ValueError("start > end")
        return values

    @root_validator(pre=True)
    def weight_from_text(cls, values):
        return {**values, "weight": int(values.get("weight", 1))}


class QueueResponse(BaseModel):
    tasks: List[TaskModel]
    queued_at: datetime

    class Config:
        json_encoders = {datetime: lambda dt: int(dt.timestamp() * 1e3)}


api = Api(FastAPI(), queue_lock)
results = {}
saved = []
script_callbacks.on_image_saved(lambda params: saved.append(params.filename) if progress.current_task else None)


def run(task_id, params):
    progress.start_task(task_id)
    try:
        results[task_id] = api.text2imgapi(StableDiffusionTxt2ImgProcessingAPI(**json.loads(params))).info
    except Exception as error:
        results[task_id] = error
    finally:
        progress.finish_task(task_id)


def on_app_started(block, app):
    @app.post("/stand-in/queue/txt2img", response_model=QueueResponse)
    def queue_txt2img(body: Txt2ImgTaskArgs):
        args = body.dict()
        args["override_settings"] = {"sd_model_checkpoint": args.pop("checkpoint")}
        args.update(save_images=True, send_images=False)
        task = Task(id="task-1", params=json.dumps(args))
        progress.add_task_to_queue(task.id)
        threading.Thread(target=run, args=(task.id, task.params)).start()
        return QueueResponse(tasks=[TaskModel(**{**task.dict(), "params": args})],
                             queued_at=datetime(2024, 1, 1, tzinfo=timezone.utc))


script_callbacks.on_app_started(on_app_started)
'''


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    from webui import prepare_extensions

    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("pydantic1"),
                                     {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    script = data / "extensions" / "v1-models" / "scripts" / "v1_models.py"
    script.parent.mkdir(parents=True)
    script.write_text(textwrap.dedent(EXTENSION))
    args = cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start", "--skip-install"],
                               preload=prepare_extensions)
    services = services_module.create(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        services.load_scripts()   # as webui.py does before building the app
    assert not services.scripts.errors, services.scripts.errors
    module = next(module for module in list(sys.modules.values())
                  if getattr(module, "__file__", None) == str(script))
    app = FastAPI()
    services.scripts.callbacks.fire("app_started", None, app)
    yield services, module, TestClient(app), [str(warning.message) for warning in caught]
    services.shutdown()


def test_v1_models_of_an_extension_load_with_pydantic_1_meanings(started):
    _, module, _, caught = started
    task = module.TaskModel(id="a", params={})
    assert task.name is None and task.priority is None and task.note is None   # optional: default None
    assert module.TaskModel.model_fields["name"].title == "Task Name"          # Field's settings kept
    with pytest.raises(ValueError):
        module.TaskModel(params={})                                            # a plain str stays required
    assert module.Task(id="b", params="{}").params == "{}"
    assert module.Task.model_config.get("from_attributes") is True and "exclude" not in module.Task.model_config
    assert module.Txt2ImgTaskArgs.model_config["strict"] is True   # A1111Body's settings inherited
    assert not [text for text in caught if "config" in text.lower()], caught   # translated silently
    assert module.Unit(weight="3").weight == 3                                 # pre=True root validator
    with pytest.raises(ValueError, match="start > end"):
        module.Unit(start=0.5, end=0.2)                                        # the bare @root_validator


def test_an_extension_route_takes_its_v1_body_and_queues_a_real_generation(started):
    services, module, client, _ = started
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Txt2ImgTaskArgs"]["properties"]
    assert "prompt" in schema and "send_images" not in schema   # schema_extra, as json_schema_extra
    answer = client.post("/stand-in/queue/txt2img", json={
        "prompt": "queued cat", "sampler_name": "Euler", "steps": 1, "width": 64, "height": 64, "seed": 7,
        "cfg_scale": 5, "checkpoint": "tiny-sd1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["queued_at"] == 1704067200000   # the model's json_encoders
    queued = body["tasks"][0]
    assert queued["name"] is None and queued["params"]["sampler_index"] == "Euler"   # alias of sampler_name
    deadline = time.monotonic() + 300
    while "task-1" not in module.results and time.monotonic() < deadline:
        time.sleep(0.2)
    result = module.results["task-1"]
    assert isinstance(result, str), result
    info = json.loads(result)
    assert info["prompt"] == "queued cat" and info["seed"] == 7 and (info["width"], info["height"]) == (64, 64)
    assert len(module.saved) == 1 and Path(module.saved[0]).is_file()   # saved while its task was current
    assert Path(module.saved[0]).is_relative_to(services.paths.outputs)


class _OwnModel(BaseModel):   # defined outside any extension folder, after install
    value: Optional[int]


def test_models_outside_extensions_keep_pydantic_2_meanings():
    pydantic_v1_idioms.install()

    class Late(BaseModel):
        value: Optional[int]

    for model in (_OwnModel, Late):
        assert model.model_fields["value"].is_required()
    assert Late.__config__.__name__ == "Config"   # the name exists for every model
    with pytest.raises(PydanticUserError, match="skip_on_failure"):
        class Bare(BaseModel):
            value: int = 0

            @root_validator
            def checked(cls, values):
                return values


# The web UI's modules with pydantic models, imported, then re-executed after install(): nothing may change.
PROJECT_MODELS_SCRIPT = '''
import importlib, json, sys
from pydantic import BaseModel
NAMES = ("modules.api.models", "modules.progress", "modules.generation.request", "modules.controlnet.units",
         "modules.postprocess.postprocessing", "modules.api.routes.controlnet")

def described():
    found = {}
    for name in NAMES:
        module = importlib.import_module(name)
        for key, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == name:
                fields = {field: [info.is_required(), repr(info.default)] for field, info in value.model_fields.items()}
                try:
                    schema = value.model_json_schema()
                except Exception as error:
                    schema = type(error).__name__
                found[f"{name}.{key}"] = [fields, dict(value.model_config).keys().__repr__(), schema]
    return found

before = described()
from modules.addons import pydantic_v1_idioms
pydantic_v1_idioms.install()
for name in NAMES:
    importlib.reload(sys.modules[name])
print(json.dumps({"before": before, "after": described()}, default=str))
'''


def test_the_web_uis_own_models_are_unchanged():
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", PROJECT_MODELS_SCRIPT], cwd=root, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(found["before"]) > 20 and "modules.api.models.Txt2ImgRequest" in found["before"]
    assert found["after"] == found["before"]
