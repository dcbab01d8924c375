"""More of A1111's module namespace real extensions import (issue 21), read by stand-in extensions on a running
server: `modules.rng`, `paths_internal`, `extensions`, `face_restoration` (and `codeformer_model`,
`gfpgan_model`), `scripts_postprocessing`, and `processing`'s `process_images_inner`, `create_infotext`,
`create_random_tensors`, `create_binary_mask`; an A1111 internal that cannot exist here is an error naming the
extension that asked; an extension that needs A1111's model code (`ldm`) is listed with the reason."""
from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image

from modules.generation.request import validate_request
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.stand_ins import services_with_extensions
from tests.fixtures.tiny_checkpoints import build_tiny_model

READER = '''
import json
from pathlib import Path

from modules import (extensions, face_restoration, hashes, paths_internal, processing, rng, scripts, shared,
                     scripts_postprocessing)
from modules.codeformer_model import codeformer
from modules.gfpgan_model import gfpgan_fix_faces

OUT = Path(__file__).parents[2] / "seen.json"
SEEN = {"models_path": paths_internal.models_path, "data_path": paths_internal.data_path,
        "active": [extension.name for extension in extensions.active()],
        "restorers": [restorer.name() for restorer in face_restoration.restorers()],
        "codeformer": codeformer.name(), "postprocessed": scripts_postprocessing.PostprocessedImage(None).nametags}
import modules   # noqa: E402 - A1111 has imported most of modules/ by now: `modules.<name>` works after this
SEEN["modules.shared_items"] = modules.shared_items.list_checkpoint_tiles()
CHECKPOINT = Path(paths_internal.models_path) / "Stable-diffusion" / "tiny-sd1.safetensors"
SEEN["cached_before"] = hashes.sha256_from_cache(CHECKPOINT, "extension/tiny")
SEEN["sha256"] = hashes.sha256(CHECKPOINT, "extension/tiny")
SEEN["cached_after"] = hashes.sha256_from_cache(CHECKPOINT, "extension/tiny")
try:
    processing.sd_hijack_internals
except AttributeError as error:
    SEEN["missing"] = str(error)
OUT.write_text(json.dumps(SEEN))

calls = []
inner = processing.process_images_inner


def wrapped(p, *args, **kwargs):   # as the ControlNet extension wraps it
    calls.append(p.prompt)
    return inner(p, *args, **kwargs)


processing.process_images_inner = wrapped

runner = scripts.scripts_txt2img   # as LoRA Block Weight wraps the runner's run (A1111: the dropdown script)
original_run = runner.run


def wrapped_run(p, *args):
    calls.append(f"run {args[0]}")
    return original_run(p, *args)


runner.run = wrapped_run


class Dropdown(scripts.Script):
    def title(self):
        return "Reader dropdown"

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        p.prompt = "a dropdown cat"
        return processing.process_images(p)


class Reader(scripts.Script):
    def title(self):
        return "Reader"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        p.extra_generation_params["Reader"] = "yes"
        SEEN["infotext"] = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds)
        SEEN["noise"] = rng.ImageRNG((4, 8, 8), [p.seed]).next().flatten()[:4].tolist()
        SEEN["tensors"] = processing.create_random_tensors((4, 8, 8), [p.seed]).flatten()[:4].tolist()
        SEEN["wrapped"] = list(calls)
        SEEN["outpaths"] = [p.outpath_samples, p.outpath_grids]
        SEEN["titles"] = scripts.scripts_txt2img.titles   # the dropdown's (LoRA Block Weight adds itself)
        SEEN["opts_outdir"] = [shared.opts.outdir_txt2img_samples, shared.opts.get("outdir_txt2img_samples")]
        OUT.write_text(json.dumps(SEEN))
'''

NEEDS_LDM = '''
from ldm.models.diffusion.ddpm import LatentDiffusion
'''


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("a1111more"),
                                     {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    with services_with_extensions(data, {"reader/scripts/main.py": READER,
                                         "needs-ldm/scripts/main.py": NEEDS_LDM}) as services:
        yield services, data


def test_an_extension_reads_the_servers_folders_extensions_and_restorers(started):
    services, data = started
    seen = json.loads((data / "extensions" / "seen.json").read_text())
    assert seen["models_path"] == str(data.resolve() / "models") and seen["data_path"] == str(data.resolve())
    assert "reader" in seen["active"] and "needs-ldm" in seen["active"]
    assert seen["restorers"] == ["CodeFormer", "GFPGAN"] and seen["codeformer"] == "CodeFormer"
    assert seen["postprocessed"] == []
    assert seen["modules.shared_items"] == [info.title for info in services.registry.items()]
    checkpoint = data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    assert seen["cached_before"] is None and seen["cached_after"] == seen["sha256"]
    assert seen["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert "extension 'reader' asked for modules.processing.sd_hijack_internals" in seen["missing"]


def test_hooks_see_a1111s_helpers_and_a_wrapped_process_images_inner(started):
    from modules.diffusion import rng

    services, data = started
    request = validate_request({"prompt": "a cat", "checkpoint": "tiny-sd1", "width": 64, "height": 64, "steps": 1,
                                "seed": 77, "save_images": False}, services.registry)
    job = services.submit_txt2img(request)
    assert job.done.wait(300) and job.state == "done", job.error
    seen = json.loads((data / "extensions" / "seen.json").read_text())
    assert "Reader dropdown" in seen["titles"]
    assert seen["wrapped"] == ["a cat"]   # the extension's wrapper ran: process_images calls it
    # where A1111 saves, as absolute folders, as shared.opts gives them (A1111 resolves against its cwd)
    assert seen["outpaths"] == [str(data / "outputs" / "txt2img-images"), str(data / "outputs" / "txt2img-grids")]
    assert seen["opts_outdir"] == [str(data / "outputs" / "txt2img-images")] * 2
    assert seen["infotext"].startswith("a cat\nSteps: 1, Sampler: ") and "Seed: 77," in seen["infotext"]
    assert "Reader: yes" in seen["infotext"]
    expected = rng.ImageRNG((4, 8, 8), [77], device=services.devices.device).next().flatten()[:4].tolist()
    assert seen["noise"] == pytest.approx(expected) and seen["tensors"] == pytest.approx(expected)
    assert "Reader: yes" in job.result.infotexts[0]
    request = validate_request({"prompt": "a cat", "checkpoint": "tiny-sd1", "width": 64, "height": 64, "steps": 1,
                                "seed": 77, "save_images": False, "selected_script": "reader dropdown"},
                               services.registry, scripts=services.scripts)
    job = services.submit_txt2img(request)
    assert job.done.wait(300) and job.state == "done", job.error
    seen = json.loads((data / "extensions" / "seen.json").read_text())
    index = services.scripts.txt2img.selectable_scripts.index(services.scripts.txt2img.find_selectable("reader "
                                                                                                        "dropdown"))
    assert seen["wrapped"][-2:] == [f"run {index + 1}", "a dropdown cat"]   # the runner's run, then the script's
    assert job.result.infotexts[0].startswith("a dropdown cat\n")


def test_an_extension_needing_a1111s_model_code_is_listed_with_the_reason(started):
    services, _ = started
    failures = [failure for failure in services.scripts.failures() if "needs-ldm" in str(failure)]
    text = " ".join(str(failure) for failure in failures)
    assert "ldm" in text and "runs on diffusers" in text, services.scripts.failures()


def test_create_binary_mask_reads_alpha_as_a1111():
    from modules.processing import create_binary_mask

    image = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 200))
    image.putpixel((2, 0), (0, 0, 0, 100))
    assert list(create_binary_mask(image).getdata()) == [0, 255, 0, 0]
    assert list(create_binary_mask(image, round=False).getdata()) == [0, 200, 100, 0]
    assert create_binary_mask(Image.new("RGB", (2, 2), (255, 255, 255))).mode == "L"
