"""Robustness A and B: model and file loading (pickles, inconsistent safetensors, header bombs, dependency
floors), and paths and the filesystem (hostile names in every model selector and prompt, linked folders,
restricted settings, files that vanish or fail)."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import pickle
import re
import struct
import tracemalloc
from pathlib import Path

import pytest
import safetensors.torch
import torch
from packaging.version import Version

from modules import cmd_args, services as services_module
from modules.models import files
from modules.settings.table import OPTIONS
from tests.fixtures.app_client import app_client
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_malicious_pickle, write_safetensors
from tests.fixtures.tiny_embeddings import random_vectors, write_a1111_pt
from tests.fixtures.tiny_hypernetworks import write_hypernetwork
from tests.robustness.checks import SMALL, assert_names_field, assert_still_serving, info_of, opened_files, photo

ROOT = Path(__file__).resolve().parent.parent.parent


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
