"""A1111's backend modules real extensions import (issue 21), used by a stand-in extension on a running server as
ADetailer, agent-scheduler and the like use them: `images.save_image` with A1111's arguments, `cmd_args.parser` and
the folder flags, `extra_networks.parse_prompts`, `masking.get_crop_region`, `errors.report`, `progress`,
`modules.api.models` / `modules.api.api`, `extras.run_pnginfo`, `launch_utils`, `timer`, `util`."""
from __future__ import annotations

import base64
import io
import json
import logging
import threading

import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from modules import errors, extra_networks, extras, images, masking, progress
from modules.generation.request import validate_request
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.stand_ins import services_with_extensions
from tests.fixtures.tiny_checkpoints import build_tiny_model

PRELOAD = '''
def preload(parser):
    parser.add_argument("--stand-in-flag", type=int, default=3)
'''

EXTENSION = '''
import json
from pathlib import Path

import numpy as np
from modules import cmd_args, extra_networks, images, masking, progress, script_callbacks, scripts, shared
from modules.api import api
from modules.api.models import *  # noqa: F403 - as agent-scheduler does
from modules.txt2img import txt2img

OUT = Path(__file__).parents[2] / "seen.json"
mask = np.zeros((16, 16), dtype=np.uint8)
mask[4:6, 3:9] = 255
prompts, networks = extra_networks.parse_prompts(["<lora:x:0.5> cat", "dog"])
SEEN = {"flag": cmd_args.parser.parse_known_args(["--stand-in-flag", "7"])[0].stand_in_flag,
        "started_with": vars(cmd_args.parser.parse_args()),   # as lora-block-weight reads --api
        "lora_dir": shared.cmd_opts.lora_dir, "ckpt_dir": shared.cmd_opts.ckpt_dir,
        "esrgan": shared.cmd_opts.esrgan_models_path, "prompts": prompts,
        "networks": {kind: [params.items for params in found] for kind, found in networks.items()},
        "crop": masking.get_crop_region(mask, 2), "model": StableDiffusionTxt2ImgProcessingAPI.__name__,
        "saved": []}
try:
    txt2img("task(x)", None)
except AttributeError as error:
    SEEN["txt2img_error"] = str(error)
script_callbacks.on_image_saved(lambda params: SEEN["saved"].append(params.filename))


class StandIn(scripts.Script):
    def title(self):
        return "Stand-in"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def postprocess_image(self, p, pp, *args):
        SEEN["current_task"] = progress.current_task
        SEEN["fullfn"], SEEN["txt"] = images.save_image(
            pp.image, shared.opts.outdir_txt2img_samples, "", p.seeds[0], p.prompt, "png", info="stand-in infotext",
            p=p, suffix="-before")
        OUT.write_text(json.dumps(SEEN))
'''


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("a1111misc"),
                                     {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    files = {"stand-in/preload.py": PRELOAD, "stand-in/scripts/stand_in.py": EXTENSION}
    with services_with_extensions(data, files) as services:
        yield services, data.resolve()


def seen(data) -> dict:
    return json.loads((data / "extensions" / "seen.json").read_text())


def generate(services, prompt="a cat"):
    request = validate_request({"prompt": prompt, "checkpoint": "tiny-sd1", "width": 64, "height": 64, "steps": 1,
                                "seed": 11, "save_images": False}, services.registry)
    job = services.submit_txt2img(request)
    assert job.done.wait(300) and job.state == "done", job.error
    return job


def test_an_extension_reads_flags_parses_prompts_and_crops_at_import(started):
    services, data = started
    generate(services)   # the extension writes what it saw from its hook
    found = seen(data)
    assert found["flag"] == 7 and services.args.stand_in_flag == 3   # preload's flag, on cmd_args.parser
    assert found["started_with"]["skip_install"] and found["started_with"]["data_dir"] == str(data)
    assert found["lora_dir"] == str(data / "models" / "Lora") and found["ckpt_dir"] is None
    assert found["esrgan"] == str(data / "models" / "ESRGAN")
    assert found["prompts"] == [" cat", "dog"] and found["networks"] == {"lora": [["x", "0.5"]]}
    assert found["crop"] == [1, 2, 11, 8]   # A1111's box (3, 4, 9, 6) grown by 2
    assert found["model"] == "Txt2ImgRequest"
    assert "extension 'stand-in' asked for modules.txt2img.txt2img" in found["txt2img_error"]


def test_save_image_with_a1111_arguments_writes_the_infotext_and_fires_callbacks(started):
    services, data = started
    job = generate(services, "a dog")
    found = seen(data)
    assert found["current_task"] == job.id   # progress.current_task follows the queue's running job
    path = found["fullfn"]
    assert path.startswith(str(data / "outputs" / "txt2img-images")) and path.endswith("-11-before.png")
    assert found["txt"] is None and path in found["saved"]   # save_txt is off; on_image_saved saw the file
    with Image.open(path) as saved:
        assert images.read_info_from_image(saved) == ("stand-in infotext", {})
        assert extras.run_pnginfo(saved)[1] == "stand-in infotext"


def test_progress_names_track_queued_jobs_and_an_extensions_own_tasks(started):
    services, _ = started
    release = threading.Event()
    blocker = services.queue.submit("test-block", lambda job: release.wait(60))
    waiting = services.queue.submit("test-wait", lambda job: None)
    try:
        for _ in range(100):
            if progress.current_task == blocker.id:
                break
            threading.Event().wait(0.05)
        assert progress.current_task == blocker.id
        assert waiting.id in progress.pending_tasks
        answer = progress.progressapi(progress.ProgressRequest(id_task=waiting.id))
        assert answer.queued and not answer.active and answer.textinfo == "In queue: 1/1"
    finally:
        release.set()
    assert waiting.done.wait(30)
    assert progress.progressapi(progress.ProgressRequest(id_task=waiting.id)).completed
    task = progress.create_task_id("txt2img")
    progress.add_task_to_queue(task)
    assert list(progress.pending_tasks) == [task]
    progress.start_task(task)
    assert progress.current_task == task and task not in progress.pending_tasks
    progress.finish_task(task)
    assert progress.current_task is None and task in progress.finished_tasks


def test_the_api_module_names_run_a_generation_as_the_route_does(started):
    from modules.api import api
    from modules.api.models import (StableDiffusionImg2ImgProcessingAPI, StableDiffusionTxt2ImgProcessingAPI,
                                    TextToImageResponse)

    services, _ = started
    answer = api.Api(FastAPI(), None).text2imgapi(StableDiffusionTxt2ImgProcessingAPI(
        prompt="a bird", width=64, height=64, steps=1, seed=5, override_settings={"sd_model_checkpoint": "tiny-sd1"}))
    assert isinstance(answer, TextToImageResponse) and json.loads(answer.info)["seed"] == 5
    picture = api.decode_base64_to_image(answer.images[0])
    assert picture.size == (64, 64)
    encoded = api.encode_pil_to_base64(picture)
    assert isinstance(encoded, bytes) and Image.open(io.BytesIO(base64.b64decode(encoded))).size == (64, 64)
    answer = api.Api(FastAPI()).img2imgapi(StableDiffusionImg2ImgProcessingAPI(
        init_images=[encoded.decode()], width=64, height=64, steps=1, denoising_strength=0.5,
        include_init_images=True, override_settings={"sd_model_checkpoint": "tiny-sd1"}))
    assert len(answer.images) == 2 and answer.parameters["init_images"] == [encoded.decode()]


def test_masking_and_images_have_a1111s_helpers():
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:6, 3:9] = 255
    assert masking.get_crop_region(mask) == (3, 4, 9, 6) == masking.get_crop_region_v2(Image.fromarray(mask))
    assert masking.get_crop_region(np.zeros((16, 16), dtype=np.uint8)) == (16, 16, 0, 0)   # A1111's empty box
    assert masking.get_crop_region_v2(np.zeros((16, 16), dtype=np.uint8)) is None
    pictures = [Image.new("RGB", (8, 8), colour) for colour in ("red", "green", "blue")]
    grid = images.image_grid(pictures, batch_size=3)
    assert grid.size == (16, 16) and grid.getpixel((12, 12)) == (255, 255, 255)   # round(sqrt(3)) rows, white
    assert images.resize_image(1, Image.new("RGB", (32, 16)), 8, 8).size == (8, 8)
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert images.flatten(transparent, "#ff0000").getpixel((0, 0)) == (255, 0, 0)
    names = images.FilenameGenerator(None, 42, "a cat, sitting", Image.new("RGB", (64, 32)))
    assert names.apply("[seed]-[prompt_spaces]-[width]x[height]-[unknown]") == "42-a cat, sitting-64x32-[unknown]"
    assert images.sanitize_filename_part("a/b c") == "a_b_c"


def test_save_image_names_files_as_a1111_with_its_default_settings(tmp_path):
    fullfn, txt = images.save_image(Image.new("RGB", (8, 8)), tmp_path, "", 7, "a cat", info="text here",
                                    save_to_dirs=False)
    assert fullfn == str(tmp_path / "00000-7.png") and txt is None
    again, _ = images.save_image(Image.new("RGB", (8, 8)), tmp_path, "grid", None, None, info="t", grid=True,
                                 save_to_dirs=False)
    assert again == str(tmp_path / "grid-0000.png")
    assert images.get_next_sequence_number(tmp_path, "") == 1
    with Image.open(fullfn) as saved:
        assert images.read_info_from_image(saved)[0] == "text here"


def test_extra_networks_registry_activates_what_an_extension_registers():
    calls = []

    class Marker(extra_networks.ExtraNetwork):
        def activate(self, p, params_list):
            calls.append(("on", [params.positional for params in params_list]))

        def deactivate(self, p):
            calls.append(("off", None))

    extra_networks.register_extra_network(Marker("marker"))
    try:
        _, found = extra_networks.parse_prompt("x <marker:a:b=2> y")
        assert found["marker"][0].named == {"b": "2"}
        extra_networks.activate(None, found)
        extra_networks.deactivate(None, found)
        assert calls == [("on", [["a"]]), ("off", None)]
    finally:
        extra_networks.extra_network_registry.pop("marker")


def test_errors_report_logs_and_does_not_raise(caplog):
    with caplog.at_level(logging.ERROR, logger="modules.errors"):
        try:
            raise ValueError("broken thing")
        except ValueError:
            errors.report("my extension failed", exc_info=True)
        errors.run(lambda: 1 / 0, "dividing")
    assert "my extension failed" in caplog.text and "ValueError: broken thing" in caplog.text
    assert "dividing: ZeroDivisionError" in caplog.text
    assert errors.get_exceptions()[0]["exception"] == "division by zero"


def test_launch_utils_timer_and_util():
    from modules import launch_utils, timer, util

    assert launch_utils.is_installed("numpy") and not launch_utils.is_installed("no-such-package-here")
    assert launch_utils.run("echo hello").strip() == "hello"
    with pytest.raises(RuntimeError, match="Error code: 3"):
        launch_utils.run("exit 3")
    with pytest.raises(AttributeError, match="launch_utils.prepare_environment"):
        launch_utils.prepare_environment   # noqa: B018
    clock = timer.Timer()
    with clock.subcategory("load"):
        clock.record("weights", extra_time=0.5)
    clock.record("scripts", extra_time=0.3)
    assert clock.records["load/weights"] >= 0.5 and "load" in clock.records
    assert clock.summary() == "0.8s (scripts: 0.3s)"   # the top-level steps of 0.1 s or more
    assert sorted(["img10", "img2"], key=util.natural_sort_key) == ["img2", "img10"]
    assert util.topological_sort({"b": ["a"], "a": []}) == ["a", "b"]
