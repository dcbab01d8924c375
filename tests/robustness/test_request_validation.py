"""Robustness D: request validation (sizes, the pixel budget, out-of-range and non-finite numbers, unknown names,
huge prompts, seeds), and malformed JSON bodies themselves."""
from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image

from modules.output.infotext import parse_infotext
from tests.robustness.checks import SMALL, assert_names_field, info_of, photo, post_json


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
