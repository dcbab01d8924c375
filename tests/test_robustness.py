"""The robustness checklist (/work/shared/reference/robustness.md, sections A, B, D, E) driven as a client would.

Cases already held elsewhere are not repeated here; each test names its checklist number. The rest of the list:
A1–A3, A5, A6 and the other A7 files: test_model_loading.py; A8: test_lora.py; B11 registry level:
test_registry_and_manager.py; D24/D26 basics, D27 sampler/scheduler/model: test_api.py; D29: test_lora.py;
E31–E33 decoding: test_images.py, test_image_inputs.py, test_api_img2img.py; E34 UI escaping:
test_ui_browser_pnginfo.py; E35 parser: test_infotext.py; E36: test_cards.py, test_ui_extra_networks.py;
B14, E37 (and all of C): test_security.py. Not applicable: A9 (no scanner is used), B12 (no route takes an output
file name), B16 (no backup or config-state name comes from a request).
"""
from __future__ import annotations

import ast
import base64
import contextlib
import importlib.metadata
import io
import json
import os
import pickle
import re
import struct
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from packaging.version import Version
from PIL import Image, ImageFile, PngImagePlugin

from modules import cmd_args, services as services_module
from modules.output.infotext import parse_infotext
from modules.models import files
from modules.options import OPTIONS
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_malicious_pickle, write_safetensors
from tests.fixtures.tiny_embeddings import random_vectors, write_a1111_pt
from tests.fixtures.tiny_hypernetworks import write_hypernetwork
from tests.fixtures.png_bombs import png_declaring

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"prompt": "a cube", "width": 64, "height": 64, "steps": 2}


# ---------------------------------------------------------------- helpers

_opened: list[str] | None = None
_hooked = False


def _record_opens(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.path.realpath(os.fsdecode(args[0])))


@contextlib.contextmanager
def opened_files():
    """Every path opened meanwhile, by any thread. An audit hook sees open() also from C code; hooks cannot be
    removed, so the one hook records only inside this block."""
    global _opened, _hooked
    if not _hooked:
        sys.addaudithook(_record_opens)
        _hooked = True
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def photo() -> str:
    return b64(png(Image.new("RGB", (64, 64), (200, 120, 40))))


def zip_named_png() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.png", png(Image.new("RGB", (8, 8))))
    return buffer.getvalue()


def post_json(server, path: str, raw: str):
    """A body written by hand: NaN, Infinity and 1e309 are JSON a client can send, which `json=` cannot."""
    return server.post(path, content=raw, headers={"Content-Type": "application/json"})


def assert_names_field(response, *field: str | int) -> None:
    """A 4xx in A1111's error shape whose detail points at `field` (the last parts of a `loc`)."""
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "body", "errors"}, body
    detail = body["detail"]
    assert isinstance(detail, list) and detail, body
    locs = [item["loc"] for item in detail]
    assert any(loc[0] == "body" and loc[-len(field):] == list(field) for loc in locs), locs


def assert_still_serving(server) -> None:
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1, "seed": 1})
    assert response.status_code == 200, response.text


def info_of(response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])


# ---------------------------------------------------------------- the server

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("robust")


@pytest.fixture(scope="module")
def outside(base) -> Path:
    """A folder beside the data folder, so `../../../outside` from a model folder reaches it: nothing in it may
    ever be opened through a name from a request. It holds a real checkpoint, and the marker a pickle would write."""
    folder = base / "outside"
    folder.mkdir()
    write_safetensors(build_tiny_model("sd1", seed=5), folder / "secret.safetensors")
    return folder


@pytest.fixture(scope="module")
def server(base, outside):
    data = data_dir_with_checkpoints(base / "data", {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    write_malicious_pickle(data / "models" / "Stable-diffusion" / "zz-evil.ckpt", outside / "pwned")
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--api", "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services = services
        client.data = data
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1"}).status_code == 200
        yield client
    services.shutdown()


# ---------------------------------------------------------------- A. model and file loading

def test_a1_malicious_checkpoint_is_listed_refused_naming_the_global_and_never_run(server, outside):
    listed = {model["model_name"] for model in server.get("/sdapi/v1/sd-models").json()}
    assert listed == {"tiny-sd1", "zz-evil"}                 # the list loads; the pickle is not read for it
    response = server.post("/sdapi/v1/options", json={"sd_model_checkpoint": "zz-evil"})
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"error", "detail", "body", "errors"}
    assert "zz-evil.ckpt" in response.text and "GLOBAL exec" in response.text
    assert not (outside / "pwned").exists()
    assert server.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-sd1")
    assert_still_serving(server)


def _torch_load_calls(tree: ast.AST) -> list[ast.Call]:
    def name(node) -> str:
        return f"{name(node.value)}.{node.attr}" if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and name(node.func) in ("torch.load", "torch.serialization.load", "_TORCH_LOAD")]


def test_a4_every_pickle_read_passes_weights_only_true_explicitly():
    sources = [ROOT / "webui.py", ROOT / "launch.py", *sorted((ROOT / "modules").rglob("*.py"))]
    sites = {}
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "weights_only=False" not in text, path
        for call in _torch_load_calls(ast.parse(text)):
            flags = {kw.arg: kw.value for kw in call.keywords}
            sites[f"{path.relative_to(ROOT)}:{call.lineno}"] = (
                isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True)
    assert sites and all(sites.values()), sites
    assert {site.split(":")[0] for site in sites} == {"modules/models/files.py"}   # the one code path


def test_a4_an_unpickling_error_is_a_refusal_never_a_retry(tmp_path, monkeypatch):
    calls = []

    def refusing_load(*args, **kwargs):
        calls.append(kwargs)
        raise pickle.UnpicklingError("Weights only load failed: GLOBAL builtins.exec was not an allowed global")

    monkeypatch.setattr(files, "_TORCH_LOAD", refusing_load)
    path = write_malicious_pickle(tmp_path / "evil.pt", tmp_path / "pwned")
    with pytest.raises(files.ModelFileError, match="evil.pt.*GLOBAL builtins.exec"):
        files.load_state_dict(path)
    assert len(calls) == 1 and calls[0]["weights_only"] is True
    # The one retry there is (a non-zip file cannot be memory-mapped) stays weights-only.
    calls.clear()

    def mmap_refused(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("mmap can only be used with files saved with `torch.save(_use_new_zipfile_serialization=True)`")

    monkeypatch.setattr(files, "_TORCH_LOAD", mmap_refused)
    with pytest.raises(files.ModelFileError):
        files.load_state_dict(path)
    assert [call["weights_only"] for call in calls] == [True, True]
    assert not (tmp_path / "pwned").exists()


def _safetensors_with_header(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("content", [
    # offsets past the end of the data
    _safetensors_with_header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
    # shape × dtype (4 × 4 bytes) ≠ the span the offsets give (8 bytes)
    _safetensors_with_header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8),
    # overlapping tensors
    _safetensors_with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
    # an unknown dtype
    _safetensors_with_header({"w": {"dtype": "X99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
], ids=["offsets-past-end", "shape-dtype-span", "overlap", "dtype"])
def test_a7_inconsistent_safetensors_name_the_file(tmp_path, content):
    path = tmp_path / "inconsistent.safetensors"
    path.write_bytes(content)
    with pytest.raises(files.ModelFileError, match="inconsistent.safetensors"):
        files.load_state_dict(path)


@pytest.mark.parametrize("declared", [2**40, 100_000_001, 10_000_000, 10_000_128])
def test_a7_header_length_bombs_allocate_nothing(tmp_path, declared):
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(struct.pack("<Q", declared) + b'{"__metadata__": {}}')
    tracemalloc.start()
    try:
        for read in (files.load_state_dict, files.read_metadata):
            with pytest.raises(files.ModelFileError, match="bomb.safetensors"):
                read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_a7_a_header_length_with_a_low_byte_of_0x80_is_still_safetensors(tmp_path):
    """One safetensors file in 256 starts with 0x80, the pickle PROTO byte: it is read as what it is."""
    path = tmp_path / "lora.safetensors"
    for padding in range(256):
        safetensors.torch.save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * padding})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert files.file_kind(path) == "safetensors"
    assert torch.equal(files.load_state_dict(path)["w"], torch.ones(2))
    assert files.read_metadata(path)["pad"].startswith("x")


def test_a10_dependency_floors_from_the_advisories():
    floors = {"torch": "2.10", "gradio": "6.20", "pillow": "12.2"}
    for package, floor in floors.items():
        installed = Version(importlib.metadata.version(package))
        assert installed >= Version(floor), f"{package} {installed} is below {floor}"
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8").lower()
    for package, floor in floors.items():
        assert re.search(rf"^{package}>={re.escape(floor)}", requirements, re.MULTILINE), package
    try:   # extension installs (a later issue) bring GitPython; when it is there it must be a fixed one
        assert Version(importlib.metadata.version("GitPython")) >= Version("3.1.47")
    except importlib.metadata.PackageNotFoundError:
        pass


# ---------------------------------------------------------------- B. paths and the filesystem

HOSTILE_NAMES = [
    "../../../outside/secret.safetensors", "../../outside/secret", "{outside}/secret.safetensors", "/etc/passwd",
    "..\\..\\..\\outside\\secret.safetensors", "C:\\outside\\secret.safetensors",
    "sub/../../../../outside/secret.safetensors", "%2e%2e/%2e%2e/%2e%2e/outside/secret.safetensors",
    "tiny-sd1.safetensors\x00/../../../outside/secret.safetensors", "\uff0e\uff0e/\uff0e\uff0e/outside/secret",
    "tiny-sd1.safetensors::$DATA",
]


def _selector_requests(name: str) -> dict:
    """Every place a request names a model file: (method, path, body, field the 422 must name)."""
    unit = {"input_image": photo(), "module": "canny", "model": name}
    return {
        "checkpoint override": ("/sdapi/v1/txt2img", {**SMALL, "override_settings": {"sd_model_checkpoint": name}},
                                ("override_settings", "sd_model_checkpoint")),
        "vae override": ("/sdapi/v1/txt2img", {**SMALL, "override_settings": {"sd_vae": name}},
                         ("override_settings", "sd_vae")),
        "refiner": ("/sdapi/v1/txt2img", {**SMALL, "refiner_checkpoint": name}, ("refiner_checkpoint",)),
        "hires upscaler": ("/sdapi/v1/txt2img", {**SMALL, "enable_hr": True, "hr_upscaler": name}, ("hr_upscaler",)),
        "style": ("/sdapi/v1/txt2img", {**SMALL, "styles": [name]}, ("styles",)),
        "controlnet model": ("/sdapi/v1/txt2img", {**SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}},
                             ("model",)),
        "options checkpoint": ("/sdapi/v1/options", {"sd_model_checkpoint": name}, ("sd_model_checkpoint",)),
        "options vae": ("/sdapi/v1/options", {"sd_vae": name}, ("sd_vae",)),
        "extras upscaler": ("/sdapi/v1/extra-single-image", {"image": photo(), "upscaler_1": name}, ("upscaler_1",)),
        "detect module": ("/controlnet/detect", {"controlnet_module": name, "controlnet_input_images": [photo()]},
                          ("controlnet_module",)),
    }


def test_the_open_spy_sees_opens_from_any_thread(outside):
    import threading

    with opened_files() as opened:
        thread = threading.Thread(target=lambda: (outside / "secret.safetensors").open("rb").close())
        thread.start()
        thread.join()
    assert str((outside / "secret.safetensors").resolve()) in opened


@pytest.mark.parametrize("selector", list(_selector_requests("x")))
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_b11_hostile_model_names_are_422_and_nothing_outside_is_opened(server, outside, selector, name):
    name = name.replace("{outside}", str(outside))
    path, body, field = _selector_requests(name)[selector]
    with opened_files() as opened:
        response = server.post(path, json=body)
    assert_names_field(response, *field)
    assert not [path for path in opened if path.startswith(str(outside))]
    assert not (outside / "pwned").exists()


@pytest.mark.parametrize("tag", ["lora", "hypernet"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_b11_hostile_network_names_in_prompts_match_nothing(server, outside, tag, name):
    """A1111 carries on without a network it cannot find; the warning says which one."""
    name = name.replace("{outside}", str(outside))
    with opened_files() as opened:
        response = server.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": f"a cube <{tag}:{name}:1>", "seed": 3})
    warnings = info_of(response)["warnings"]
    assert len(warnings) == 1 and "not found" in warnings[0], warnings
    assert not [path for path in opened if path.startswith(str(outside))]


def test_b11_the_model_in_use_is_untouched_by_the_attempts(server):
    assert server.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-sd1")
    assert info_of(server.post("/sdapi/v1/txt2img", json=SMALL))["sd_model_name"] == "tiny-sd1"


@pytest.fixture(scope="module")
def linked_models(tmp_path_factory):
    """A models tree where each kind has a real sub-folder, a linked folder and a linked file, both pointing
    outside. Policy: linked folders are never entered (a link cannot pull a foreign tree into the scan);
    a linked file is the user's own choice (checkpoints on another disk) and is listed."""
    root = tmp_path_factory.mktemp("linked")
    data, elsewhere = root / "data", root / "elsewhere"
    tensor = {"w": torch.zeros(2)}
    kinds = {"Stable-diffusion": ".safetensors", "Lora": ".safetensors", "VAE": ".safetensors",
             "hypernetworks": ".pt", "ControlNet": ".safetensors", "embeddings": ".pt"}
    for kind, extension in kinds.items():
        folder = data / ("embeddings" if kind == "embeddings" else f"models/{kind}")
        for where, stem in ((folder / "sub", "inside"), (elsewhere / kind, "foreign"), (elsewhere / kind, "single")):
            where.mkdir(parents=True, exist_ok=True)
            path = where / f"{stem}-{kind.lower()}{extension}"
            if kind == "hypernetworks":
                write_hypernetwork(path)
            elif kind == "embeddings":
                write_a1111_pt(path, random_vectors(), name=path.stem)
            else:
                safetensors.torch.save_file(tensor, str(path))
        (folder / "linked").symlink_to(elsewhere / kind, target_is_directory=True)
        (folder / f"link-single-{kind.lower()}{extension}").symlink_to(
            elsewhere / kind / f"single-{kind.lower()}{extension}")
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--api", "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        yield client
    services.shutdown()


@pytest.mark.parametrize("kind, route", [
    ("stable-diffusion", "/sdapi/v1/sd-models"), ("lora", "/sdapi/v1/loras"), ("vae", "/sdapi/v1/sd-vae"),
    ("hypernetworks", "/sdapi/v1/hypernetworks"), ("controlnet", "/controlnet/model_list"),
    ("embeddings", "/sdapi/v1/embeddings"),
])
def test_b13_linked_folders_are_not_entered_linked_files_are_listed(linked_models, kind, route):
    response = linked_models.get(route)
    assert response.status_code == 200, response.text
    listing = json.dumps(response.json())
    assert f"inside-{kind}" in listing                 # the real sub-folder is scanned
    assert f"link-single-{kind}" in listing            # a file link placed by the user is followed
    assert f"foreign-{kind}" not in listing            # the linked folder is not


@pytest.mark.parametrize("key", sorted(key for key, info in OPTIONS.items() if info.restrict_api))
def test_b15_restricted_settings_cannot_be_changed_over_the_api(server, key):
    before = server.services.options.as_dict()[key]
    value = (not before) if isinstance(before, bool) else "/tmp/evil" if isinstance(before, str) else before
    response = server.post("/sdapi/v1/options", json={key: value})
    assert_names_field(response, key)
    assert server.services.options.as_dict()[key] == before
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {key: value}})
    assert_names_field(response, "override_settings", key)
    assert server.services.options.as_dict()[key] == before


def _assert_names_the_file_not_the_folder(response, status: int, name: str, data: Path) -> None:
    assert response.status_code == status, response.text
    assert name in response.text and str(data) not in response.text and "/tmp" not in response.text, response.text


def test_b_a_checkpoint_deleted_after_listing_is_a_404_naming_it_and_the_server_goes_on(server):
    """The request named a listed file that was then deleted: a 500 with the server's path, before."""
    folder = server.data / "models" / "Stable-diffusion"
    write_safetensors(build_tiny_model("sd1", seed=7), folder / "soon-gone.safetensors")
    assert server.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    (folder / "soon-gone.safetensors").unlink()
    for response in (server.post("/sdapi/v1/options", json={"sd_model_checkpoint": "soon-gone"}),
                     server.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {
                         "sd_model_checkpoint": "soon-gone"}}),
                     server.post("/sdapi/v1/txt2img", json={**SMALL, "refiner_checkpoint": "soon-gone"})):
        _assert_names_the_file_not_the_folder(response, 404, "soon-gone.safetensors", server.data)
    server.post("/sdapi/v1/refresh-checkpoints")
    assert_still_serving(server)


def test_b_a_refused_or_damaged_hires_upscaler_is_a_422_as_in_extras(server):
    folder = server.data / "models" / "ESRGAN"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "refused.pth").write_bytes(b"\x80\x02garbage")
    (folder / "damaged.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    server.services.upscalers.refresh()
    try:
        for name in ("refused", "damaged"):
            response = server.post("/sdapi/v1/txt2img", json={**SMALL, "enable_hr": True, "hr_scale": 1.5,
                                                              "hr_upscaler": name})
            _assert_names_the_file_not_the_folder(response, 422, name, server.data)
            assert "hr_upscaler" in response.text
    finally:
        for path in folder.iterdir():
            path.unlink()
        server.services.upscalers.refresh()
    assert_still_serving(server)


def test_b_an_unexpected_error_names_no_server_path(server, monkeypatch):
    from modules.diffusion import sampling

    def crash(*args, **kwargs):
        raise OSError(5, "Input/output error", str(server.data / "models" / "secret" / "file.bin"))

    monkeypatch.setattr(sampling, "denoise", crash)
    response = server.post("/sdapi/v1/txt2img", json=SMALL)
    _assert_names_the_file_not_the_folder(response, 500, "file.bin", server.data)


# ---------------------------------------------------------------- D. request validation

@pytest.mark.parametrize("field", ["width", "height"])
@pytest.mark.parametrize("value", [0, -8, 7, 513, 2**31, 2**64, "512", None])
def test_d24_bad_sizes_are_422_naming_the_field(server, field, value):
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, field: value})
    assert response.status_code == 422, response.text
    assert_names_field(response, field)


def test_d24_any_multiple_of_8_is_accepted(server):
    image = server.post("/sdapi/v1/txt2img", json={**SMALL, "width": 72, "height": 64}).json()["images"][0]
    assert Image.open(io.BytesIO(base64.b64decode(image))).size == (72, 64)


@pytest.mark.parametrize("path, payload, field", [
    ("/sdapi/v1/txt2img", {"width": 2048, "height": 2048, "batch_size": 8}, "batch_size"),
    ("/sdapi/v1/txt2img", {"width": 4096, "height": 4096}, "width"),
    ("/sdapi/v1/txt2img", {"width": 8192, "height": 8192, "batch_size": 64}, "width"),
    ("/sdapi/v1/txt2img", {"width": 1024, "height": 1024, "enable_hr": True, "hr_scale": 4.0}, "hr_scale"),
    ("/sdapi/v1/txt2img", {"width": 512, "height": 512, "enable_hr": True, "hr_resize_x": 8192,
                           "hr_resize_y": 8192}, "hr_scale"),
    ("/sdapi/v1/img2img", {"width": 4096, "height": 4096}, "width"),
    ("/sdapi/v1/txt2img", {"batch_size": 64, "n_iter": 1000}, "n_iter"),     # 64,000 images
    ("/sdapi/v1/txt2img", {"batch_size": 8, "n_iter": 126}, "n_iter"),
])
def test_d25_over_the_pixel_budget_is_422_before_any_job_or_model(server, monkeypatch, path, payload, field):
    submitted, loaded = [], []
    queue, models = server.services.queue, server.services.models
    real_submit, real_get = queue.submit, models.get
    monkeypatch.setattr(queue, "submit", lambda *a, **k: submitted.append(a) or real_submit(*a, **k))
    monkeypatch.setattr(models, "get", lambda *a, **k: loaded.append(a) or real_get(*a, **k))
    body = {**SMALL, **payload}
    if path.endswith("img2img"):
        body["init_images"] = [photo()]
    response = server.post(path, json=body)
    assert response.status_code == 422, response.text
    assert_names_field(response, field)
    assert submitted == [] and loaded == []


@pytest.mark.parametrize("path, field, literal, extra", [
    ("/sdapi/v1/txt2img", "steps", "1000000000", ""),
    ("/sdapi/v1/txt2img", "steps", "-1", ""),
    ("/sdapi/v1/txt2img", "steps", "1e309", ""),
    ("/sdapi/v1/txt2img", "steps", "true", ""),
    ("/sdapi/v1/txt2img", "steps", "100000000000000000000000000000", ""),
    ("/sdapi/v1/txt2img", "cfg_scale", '"Infinity"', ""),
    ("/sdapi/v1/txt2img", "cfg_scale", "-1e309", ""),
    ("/sdapi/v1/txt2img", "subseed_strength", "NaN", ""),
    ("/sdapi/v1/txt2img", "hr_scale", "Infinity", ', "enable_hr": true'),
    ("/sdapi/v1/txt2img", "refiner_switch_at", "NaN", ', "refiner_checkpoint": "tiny-sd1"'),
    ("/sdapi/v1/img2img", "denoising_strength", "-0.1", ', "init_images": ["{photo}"]'),
    ("/sdapi/v1/img2img", "denoising_strength", "1.1", ', "init_images": ["{photo}"]'),
    ("/sdapi/v1/img2img", "denoising_strength", "NaN", ', "init_images": ["{photo}"]'),
    ("/sdapi/v1/img2img", "denoising_strength", "1e309", ', "init_images": ["{photo}"]'),
])
def test_d26_out_of_range_and_non_finite_numbers_are_422(server, path, field, literal, extra):
    steps = "" if field == "steps" else ', "steps": 2'
    raw = ('{"prompt": "x", "width": 64, "height": 64' + steps + extra.replace("{photo}", photo())
           + f', "{field}": {literal}}}')
    response = post_json(server, path, raw)
    assert response.status_code == 422, response.text
    assert_names_field(response, field)


@pytest.mark.parametrize("field, value", [("weight", "NaN"), ("guidance_end", "Infinity"), ("threshold_a", "NaN")])
def test_d26_non_finite_controlnet_numbers_are_422(server, field, value):
    unit = f'{{"input_image": "{photo()}", "module": "canny", "model": "None", "{field}": {value}}}'
    raw = ('{"prompt": "x", "width": 64, "height": 64, "steps": 2, '
           f'"alwayson_scripts": {{"controlnet": {{"args": [{unit}]}}}}}}')
    response = post_json(server, "/sdapi/v1/txt2img", raw)
    assert response.status_code == 422, response.text
    assert field in json.dumps(response.json()["detail"])


def test_d27_unknown_vae_lists_the_choices(server):
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"sd_vae": "nope.safetensors"}})
    assert_names_field(response, "override_settings", "sd_vae")
    assert "Automatic" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("field", ["hr_sampler_name", "hr_scheduler"])
def test_d27_unknown_hires_sampler_or_schedule_is_422(server, field):
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "enable_hr": True, field: "Bogus"})
    assert response.status_code == 422, response.text
    assert "Bogus" in response.text and ("Euler" in response.text or "Karras" in response.text)


def test_d27_unknown_lora_is_a_warning_in_info_not_a_silent_no_op(server):
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": "a cube <lora:not-there:0.8>"})
    assert info_of(response)["warnings"] == ["LoRA not found: not-there"]


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"])
def test_d28_a_megabyte_prompt_is_422_quickly(server, field):
    started = time.monotonic()
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, field: "word " * 200_000})
    assert time.monotonic() - started < 5
    assert_names_field(response, field)


def test_d28_a_ten_thousand_token_prompt_runs_whole_in_bounded_time(server):
    """Prompts of any length are A1111 behaviour (75-token chunks, README): nothing is cut, nothing hangs."""
    prompt = " ".join(["cat"] * 10_000)
    started = time.monotonic()
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": prompt})
    assert time.monotonic() - started < 60
    info = info_of(response)
    assert info["prompt"] == prompt and parse_infotext(info["infotexts"][0])["Prompt"] == prompt


@pytest.mark.parametrize("seed", [0, 2**32 - 1, 123456789])
def test_d30_seeds_in_range_are_used_and_recorded_exactly(server, seed):
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "seed": seed, "subseed": 2**32 - 1,
                                                      "subseed_strength": 0.5})
    info = info_of(response)
    parsed = parse_infotext(info["infotexts"][0])
    assert info["seed"] == info["all_seeds"][0] == seed and parsed["Seed"] == str(seed)
    assert info["subseed"] == 2**32 - 1 and parsed["Variation seed"] == str(2**32 - 1)
    png_text = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).info["parameters"]
    assert parse_infotext(png_text)["Seed"] == str(seed)


def test_d30_seed_minus_one_is_random_and_the_one_recorded_is_the_one_used(server):
    first, second = (server.post("/sdapi/v1/txt2img", json={**SMALL, "seed": -1}) for _ in range(2))
    seeds = [info_of(response)["seed"] for response in (first, second)]
    assert seeds[0] != seeds[1] and all(0 <= seed <= 2**32 - 1 for seed in seeds)
    assert parse_infotext(info_of(first)["infotexts"][0])["Seed"] == str(seeds[0])
    replay = server.post("/sdapi/v1/txt2img", json={**SMALL, "seed": seeds[0]})
    assert replay.json()["images"][0] == first.json()["images"][0]     # same pixels, same infotext


@pytest.mark.parametrize("seed", [2**32, 2**63, 2**64, -2])
def test_d30_seeds_out_of_range_are_422(server, seed):
    assert_names_field(server.post("/sdapi/v1/txt2img", json={**SMALL, "seed": seed}), "seed")


# ---------------------------------------------------------------- E. images and metadata

def _image_field_requests(image: str) -> dict:
    """Every request field that takes an image: (path, body, field the 422 must name)."""
    return {
        "init image": ("/sdapi/v1/img2img", {**SMALL, "save_images": True, "init_images": [image]},
                       ("init_images", 0)),
        "mask": ("/sdapi/v1/img2img", {**SMALL, "save_images": True, "init_images": [photo()], "mask": image},
                 ("mask",)),
        "control image": ("/sdapi/v1/txt2img", {**SMALL, "save_images": True, "alwayson_scripts": {"controlnet": {"args": [
            {"input_image": image, "module": "canny", "model": "None"}]}}}, ("input_image",)),
        "extras": ("/sdapi/v1/extra-single-image", {"image": image, "upscaler_1": "Lanczos"}, ("image",)),
        "extras batch": ("/sdapi/v1/extra-batch-images", {"imageList": [{"data": image, "name": "a.png"}],
                                                          "upscaler_1": "Lanczos"}, ("imageList", 0, "data")),
        "png info": ("/sdapi/v1/png-info", {"image": image}, ("image",)),
        "detect": ("/controlnet/detect", {"controlnet_module": "canny", "controlnet_input_images": [image]},
                   ("controlnet_input_images", 0)),
    }


NOT_IMAGES = {
    "html": b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="8" height="8"/></svg>',
    "zip": zip_named_png(),
}


@pytest.mark.parametrize("kind", list(NOT_IMAGES))
@pytest.mark.parametrize("target", list(_image_field_requests("")))
def test_e31_html_svg_and_zip_as_images_are_422_and_nothing_is_stored(server, kind, target):
    outputs = server.services.paths.outputs
    before = sorted(outputs.rglob("*"))
    for value in (b64(NOT_IMAGES[kind]), f"data:image/png;base64,{b64(NOT_IMAGES[kind])}"):
        path, body, field = _image_field_requests(value)[target]
        response = server.post(path, json=body)
        assert_names_field(response, *field)
        assert "not a supported image" in response.text
    assert sorted(outputs.rglob("*")) == before


@pytest.mark.parametrize("size", [20000, 10000])
@pytest.mark.parametrize("target", list(_image_field_requests("")))
def test_e32_tiny_files_declaring_huge_images_are_422_without_decoding(server, monkeypatch, size, target):
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    path, body, field = _image_field_requests(b64(png_declaring(size, size)))[target]
    started = time.monotonic()
    response = server.post(path, json=body)
    assert time.monotonic() - started < 2
    assert_names_field(response, *field)
    assert "limit" in response.text
    assert (size, size) not in decoded                 # refused from the header: no pixel buffer was made


@pytest.mark.parametrize("compressed", [True, False])
def test_e34_megabytes_of_png_text_are_refused_as_metadata_too_large(server, compressed):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Steps: 20, " * 500_000, zip=compressed)    # 5.5 MB
    image = b64(png(Image.new("RGB", (8, 8)), pnginfo=info))
    started = time.monotonic()
    response = server.post("/sdapi/v1/png-info", json={"image": image})
    assert time.monotonic() - started < 5
    assert_names_field(response, "image")
    assert "metadata too large" in response.text
    # As an init image only the pixels matter: the text is refused or ignored, never a 5xx.
    assert server.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [image]}).status_code in (200, 422)
    assert_still_serving(server)


def test_e34_markup_in_parameters_comes_back_as_json_data(server):
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{hostile}\nSteps: 2, Sampler: Euler, Seed: 1, Size: 8x8")
    response = server.post("/sdapi/v1/png-info", json={"image": b64(png(Image.new("RGB", (8, 8)), pnginfo=info))})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["parameters"]["Prompt"] == hostile and body["info"].startswith(hostile)


@pytest.mark.parametrize("text", [
    "a cat\nSteps: 2, Face restoration: , Seed: 5, Size: 512x",
    "a cat\nSteps: abc, Sampler: Euler a, Seed: 5, CFG scale: nan",
    'a cat\nSteps: 2, Seed: 5, Lora hashes: "a: 1, Model: "x\\',
    'a cat\nSteps: 2, Seed: 5, Model: ../../../outside/secret.safetensors, Model hash: 0000000000, VAE: ../x.pt',
    "a cat\nSteps: 2, Seed: 5, Size: 64x64, " + "Junk: " * 200_000,
    "Negative prompt:\n" * 50_000 + "Steps: 2, Seed: 5, Sampler: Euler",
    ":" * 1_000_000,
])
def test_e35_malformed_infotext_fills_what_it_can_quickly_and_never_fails(server, outside, text):
    """Fields set in the request win; from the pasted infotext what parses is used, the rest is ignored."""
    started = time.monotonic()
    with opened_files() as opened:
        response = server.post("/sdapi/v1/txt2img", json={**SMALL, "infotext": text})
    assert time.monotonic() - started < 10
    info = info_of(response)
    assert (info["width"], info["height"], info["steps"]) == (64, 64, 2)
    if "Seed: 5" in text:
        assert info["seed"] == 5
    assert info["sd_model_name"] == "tiny-sd1"
    assert not [path for path in opened if path.startswith(str(outside))]


@pytest.mark.parametrize("text, field", [
    ("a cat\nSteps: 2, Seed: 5, Size: 99999x99999", "width"),
    ("a cat\nSteps: 1000000000, Seed: 5, Size: 64x64", "steps"),
    ("a cat\nSteps: 2, Seed: 18446744073709551616, Size: 64x64", "seed"),
    ("a cat\nSteps: 2, Seed: 5, Size: 64x64, Sampler: ../../x", "sampler_name"),
])
def test_e35_infotext_values_out_of_range_are_422_naming_the_field(server, text, field):
    assert_names_field(server.post("/sdapi/v1/txt2img", json={"infotext": text}), field)


@pytest.mark.parametrize("value", [5, ["a"], {"Steps": 2}])
def test_e35_infotext_that_is_not_text_is_422(server, value):
    assert_names_field(server.post("/sdapi/v1/txt2img", json={**SMALL, "infotext": value}), "infotext")


# ---------------------------------------------------------------- malformed JSON itself

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("path", ["/sdapi/v1/txt2img", "/sdapi/v1/options", "/sdapi/v1/png-info"])
@pytest.mark.parametrize("raw", [DEEP, '{"prompt": "x", "override_settings": ' + '{"a":' * 50_000 + "1" + "}" * 50_001,
                                 '{"prompt": ', b'{"prompt": "\xff\xfe"}', "[]", "null"],
                         ids=["deep-list", "deep-object", "truncated", "not-utf8", "list", "null"])
def test_malformed_json_bodies_get_a_4xx_in_a1111_shape(server, path, raw):
    started = time.monotonic()
    response = server.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert time.monotonic() - started < 5
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"error", "detail", "body", "errors"}, response.text
