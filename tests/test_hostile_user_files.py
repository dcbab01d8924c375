"""Hostile things in the user's folders: FIFOs and device-like files where models, configs and previews are read,
and JSON (or YAML) nested 100,000 deep where a parser recurses. The server starts, lists what is good, names what
is not, answers /internal/ping meanwhile, and keeps generating.

A real webui.py process: a FIFO that hangs a start must fail the test, not the test run (each wait is bounded).
"""
from __future__ import annotations

import json
import os
import struct
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import safetensors.torch

from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.server import Server
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_loras import kohya_lora, write_lora

DEEP_LIST = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000


def deep_header_file(path: Path, deep: str) -> None:
    """A 200 KB safetensors whose header nests `deep` in its metadata."""
    header = ('{"__metadata__": ' + deep + "}").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    sd1 = build_tiny_model("sd1")
    data_dir_with_checkpoints(root, {"tiny-sd1.safetensors": sd1})
    models = root / "models"
    write_lora(kohya_lora(sd1, seed=5), models / "Lora" / "good-lora.safetensors")
    vae = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in sd1.state_dict.items()
           if k.startswith("first_stage_model.")}
    (models / "VAE").mkdir(parents=True)
    safetensors.torch.save_file(vae, str(models / "VAE" / "good-vae.safetensors"))
    # FIFOs wherever a model, a config or a card's side file is read
    for path in ("Lora/fifo.safetensors", "Stable-diffusion/fifo.safetensors", "VAE/fifo.pt", "ControlNet/fifo.pth",
                 "hypernetworks/fifo.pt", "Lora/good-lora.png", "Lora/good-lora.json", "Lora/good-lora.txt",
                 "Stable-diffusion/tiny-sd1.json", "Stable-diffusion/tiny-sd1.yaml"):
        fifo(models / path)
    for path in ("embeddings/fifo.pt", "styles.csv", "ui-config.json"):
        fifo(root / path)
    fifo(root / "extensions" / "with-fifos" / "scripts" / "fifo.py")
    fifo(root / "extensions" / "with-fifos" / "metadata.ini")
    fifo(root / "extensions" / "with-fifos" / "javascript" / "fifo.js")
    # JSON and YAML nested 100,000 deep
    deep_header_file(models / "Lora" / "deep-lora.safetensors", DEEP_LIST)
    deep_header_file(models / "Stable-diffusion" / "deep-checkpoint.safetensors", DEEP_OBJECT)
    deep_header_file(models / "VAE" / "deep-vae.safetensors", DEEP_LIST)
    deep_header_file(models / "ControlNet" / "deep-controlnet.safetensors", DEEP_LIST)
    deep_header_file(root / "embeddings" / "deep-embedding.safetensors", DEEP_OBJECT)
    write_lora(kohya_lora(sd1, seed=6), models / "Lora" / "deep-card.safetensors")
    (models / "Lora" / "deep-card.json").write_text(DEEP_OBJECT)
    (root / "config.json").write_text(DEEP_LIST)
    return root


@pytest.fixture(scope="module")
def server(data):
    process = Server(data, "--api")
    try:
        process.wait_ready(timeout=90)   # a FIFO that hangs the start fails here
    except BaseException:
        process.stop()
        raise
    yield process
    process.stop()


def call(server, path: str, body: dict | None = None, timeout: float = 30):
    request = urllib.request.Request(server.url + path.lstrip("/"), method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_the_server_starts_and_the_broken_config_is_moved_aside(server, data):
    assert not (data / "config.json").exists() or (data / "config.json").read_text() != DEEP_LIST
    assert [path.name for path in data.glob("config.json.broken-*")]
    assert "RecursionError" not in server.log() and "Traceback" not in server.log()


@pytest.mark.parametrize("route, good, bad", [
    ("/sdapi/v1/loras", "good-lora", ("fifo", "deep-lora")),
    ("/sdapi/v1/sd-models", "tiny-sd1", ("fifo",)),
    ("/sdapi/v1/sd-vae", "good-vae.safetensors", ("fifo.pt",)),
    ("/sdapi/v1/hypernetworks", None, ("fifo",)),
    ("/controlnet/model_list", None, ("fifo",)),
])
def test_listings_keep_the_good_files_and_skip_fifos(server, route, good, bad):
    status, body = call(server, route)
    assert status == 200, body
    text = json.dumps(body)
    assert good is None or good in text
    for name in bad:
        assert f'"{name}"' not in text and f"{name} [" not in text, (route, name)


def test_refreshing_with_fifos_answers_even_45_at_once(server):
    with ThreadPoolExecutor(max_workers=45) as pool:
        results = list(pool.map(lambda _: call(server, "/sdapi/v1/refresh-loras", {}), range(45)))
    assert all(status == 200 for status, _ in results)
    for route in ("/sdapi/v1/refresh-checkpoints", "/sdapi/v1/refresh-vae", "/sdapi/v1/refresh-embeddings"):
        assert call(server, route, {})[0] == 200
    started = time.perf_counter()
    assert call(server, "/internal/ping")[0] == 200
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("body, field, name", [
    ({"sd_model_checkpoint": "deep-checkpoint"}, "sd_model_checkpoint", "deep-checkpoint"),
    ({"sd_vae": "deep-vae.safetensors"}, "sd_vae", "deep-vae"),
])
def test_selecting_a_deeply_nested_file_is_a_clear_4xx(server, body, field, name):
    status, answer = call(server, "/sdapi/v1/options", body)
    assert 400 <= status < 500, answer
    text = json.dumps(answer)
    assert name in text and str(server.url) not in text and "/tmp/" not in text


def test_a_deeply_nested_controlnet_is_a_clear_4xx(server):
    unit = {"enabled": True, "module": "none", "model": "deep-controlnet",
            "image": "data:image/png;base64," + _png_base64()}
    status, answer = call(server, "/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                        "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert 400 <= status < 500, answer
    assert "deep-controlnet" in json.dumps(answer)


def test_embeddings_and_cards_with_hostile_side_files_still_list(server):
    assert call(server, "/sdapi/v1/embeddings")[0] == 200
    status, body = call(server, "/sdapi/v1/loras")
    assert status == 200 and "deep-card" in [item["name"] for item in body]   # its deeply nested .json is ignored


def test_generation_still_works_with_the_good_files(server):
    status, body = call(server, "/sdapi/v1/txt2img", {"prompt": "x <lora:good-lora:0.5>", "steps": 2, "width": 64,
                                                      "height": 64, "seed": 1}, timeout=120)
    assert status == 200 and len(body["images"]) == 1
    assert json.loads(body["info"])["warnings"] == []


def test_the_ui_page_builds(server):
    with urllib.request.urlopen(server.url, timeout=60) as page:
        assert page.status == 200


def _png_base64() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 40, 40)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_nothing_raised_anywhere_in_the_server(server):
    log = server.log()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
