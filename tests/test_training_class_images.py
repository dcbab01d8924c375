"""DreamBooth class images made by the project (issue 22) on a tiny SD1 checkpoint: a class folder with too few
images is topped up to `num_class_images` with generated PNGs (training size, infotext, never over a file) before
the LoRA trains with prior preservation; a second run makes none; the same seed makes the same images; an
interrupt keeps what was made and the training does not start; bad input is refused before anything is made."""
from __future__ import annotations

import numpy as np
import pytest
import safetensors
from PIL import Image
from pydantic import ValidationError

from modules import cmd_args, services as services_module
from modules.jobs import Interrupted, JobError
from modules.training import class_images, runs
from modules.training.lora_requests import TrainLoraRequest
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

CLASS_PROMPT = "a photo of a square"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("class_images"),
                                     {"tiny.safetensors": build_tiny_model("sd1")})
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    services.instance_images = _write_images(data / "instance", 2)
    yield services
    services.shutdown()


@pytest.fixture(autouse=True)
def few_steps(monkeypatch):
    """The real generation core, at 2 steps instead of txt2img's 20: the same images in a tenth of the time."""
    real = runs.preview_generator

    def generator(services):
        generate = real(services)
        return lambda fields, job: generate({**fields, "steps": 2}, job)

    monkeypatch.setattr(runs, "preview_generator", generator)


def _write_images(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / f"{index:02d}.png")
    return folder


class _Job:
    """What the training run touches of a Job; Interrupt is pressed once `stop_after` class images are shown."""

    def __init__(self, stop_after: int = 10 ** 9):
        self.id, self.stop_after, self.shown, self.texts = "test", stop_after, 0, []
        self.step = self.steps = 0

    @property
    def interrupted(self) -> bool:
        return self.shown >= self.stop_after

    @property
    def textinfo(self) -> str:
        return self.texts[-1] if self.texts else ""

    @textinfo.setter
    def textinfo(self, text: str) -> None:
        self.texts.append(text)

    def set_progress(self, step: int, steps: int, first_step: int | None = None) -> None:
        self.step, self.steps = step, steps

    def set_preview(self, image) -> None:
        self.shown += 1


def _request(services, class_folder, **fields) -> TrainLoraRequest:
    return TrainLoraRequest(**{"name": "sks", "data_root": str(services.instance_images), "instance_prompt": "sks",
                               "class_data_root": str(class_folder), "class_prompt": CLASS_PROMPT,
                               "num_class_images": 3, "resolution": 64, "rank": 4, "steps": 1, "seed": 7,
                               **fields})


def _train(services, request, job=None):
    return runs.train_lora_run(services, request)(job or _Job())


def _listing(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_the_class_folder_is_topped_up_before_training_with_prior_preservation(services, tmp_path):
    classes = _write_images(tmp_path / "class", 1)   # the user's own class image stays; two are made
    job = _Job()
    result = _train(services, _request(services, classes), job)

    made = sorted(path.name for path in classes.iterdir() if path.name != "00.png")
    assert made == ["class-00001.png", "class-00002.png"]
    assert job.texts[:2] == ["Generating class images 1/2", "Generating class images 2/2"]
    for number, name in ((1, made[0]), (2, made[1])):
        with Image.open(classes / name) as image:
            assert image.size == (64, 64)
            infotext = image.info["parameters"]
        assert infotext.startswith(CLASS_PROMPT) and "Steps: 2," in infotext and "Size: 64x64" in infotext
        assert f"Seed: {7 + number}," in infotext   # the training seed + the image's number
    assert result.step == 1 and not result.interrupted
    with safetensors.safe_open(result.path, "pt") as handle:
        assert handle.metadata()["ss_num_reg_images"] == "3"   # trained with all three

    # enough images now: a second training makes none and changes none
    before = _listing(classes)
    again = _Job()
    assert _train(services, _request(services, classes, name="sks_again"), again).step == 1
    assert _listing(classes) == before
    assert not any(text.startswith("Generating class images") for text in again.texts)


def test_the_same_seed_makes_the_same_images_and_a_free_name_is_taken(services, tmp_path):
    generate = runs.preview_generator(services)
    first, second, other = tmp_path / "first", tmp_path / "second", tmp_path / "other"
    for folder, seed, count in ((first, 11, 2), (second, 11, 2), (other, 12, 1)):
        class_images.top_up(folder, prompt=CLASS_PROMPT, wanted=count, resolution=64, seed=seed, generate=generate,
                            job=_Job())
    pixels = {folder: [np.asarray(Image.open(path)) for path in sorted(folder.iterdir())]
              for folder in (first, second, other)}
    assert len(pixels[first]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(pixels[first], pixels[second]))
    assert not np.array_equal(pixels[first][0], pixels[other][0])

    # a user's file under the name the next image would take is never overwritten
    (first / "class-00002.png").write_bytes(b"the user's")
    (first / "notes.txt").write_text("not an image")   # not counted
    written = class_images.top_up(first, prompt=CLASS_PROMPT, wanted=4, resolution=64, seed=11, generate=generate,
                                  job=_Job())
    assert [path.name for path in written] == ["class-00003.png"]
    assert (first / "class-00002.png").read_bytes() == b"the user's"


def test_an_interrupt_keeps_the_images_made_and_the_training_does_not_start(services, tmp_path):
    classes = tmp_path / "class"   # created by the run
    with pytest.raises(Interrupted, match="1 of 3 made"):
        _train(services, _request(services, classes, name="stopped"), _Job(stop_after=1))
    assert [path.name for path in classes.iterdir()] == ["class-00000.png"]
    assert not (services.paths.lora / "stopped.safetensors").exists()


@pytest.mark.parametrize("fields, named", [({"num_class_images": 1001}, "num_class_images"),
                                           ({"num_class_images": -1}, "num_class_images"),
                                           ({"class_prompt": ""}, "class_prompt"),
                                           ({"class_data_root": ""}, "num_class_images needs class_data_root")])
def test_out_of_range_fields_are_refused(services, tmp_path, fields, named):
    with pytest.raises(ValidationError, match=named):
        _request(services, tmp_path / "class", **fields)


def test_bad_folders_are_refused_before_any_image_is_made(services, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(JobError, match="class images folder .*a_file.class cannot be"):
        _train(services, _request(services, blocker / "class", name="unwritable"))
    # a bad instance folder is found before the class images are made, not after
    classes = tmp_path / "class"
    with pytest.raises(JobError, match="does not exist"):
        _train(services, _request(services, classes, name="no_instances", data_root=str(tmp_path / "missing")))
    assert not classes.exists()
    assert not list(services.paths.lora.glob("unwritable*")) and not list(services.paths.lora.glob("no_instances*"))
