"""A1111 infotext: exact strings, key order, quoting, parsing back, hostile input."""
import random
import time

import pytest

from modules.output.infotext import (
    INFOTEXT_KEY_ORDER, RE_PARAM, create_infotext, find_params, infotext_to_request_fields,
    parse_infotext, quote, unquote,
)

# The example from reference §4.1, as A1111 v1.10.1 writes it.
REFERENCE_EXAMPLE = (
    "a cat in a hat\n"
    "Negative prompt: ugly, blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, Hires upscale: 2, "
    'Hires upscaler: Latent, Lora hashes: "foo: 0123456789ab", Version: v1.10.1'
)


def reference_inputs():
    # Deliberately out of order: the function must put keys in A1111's order.
    params = {
        "Version": "v1.10.1", "Model": "v1-5-pruned-emaonly", "Seed": 1234, "Steps": 20,
        "Size": "512x512", "CFG scale": 7, "Sampler": "DPM++ 2M", "Schedule type": "Karras",
        "Model hash": "6ce0161689", "Clip skip": None, "Face restoration": None,
    }
    extra = {"Denoising strength": 0.7, "Hires upscale": 2, "Hires upscaler": "Latent",
             "Lora hashes": "foo: 0123456789ab"}
    return params, extra


def test_reference_example_exact():
    params, extra = reference_inputs()
    assert create_infotext("a cat in a hat", "ugly, blurry", params, extra) == REFERENCE_EXAMPLE


def test_key_order_matches_a1111():
    assert INFOTEXT_KEY_ORDER[:8] == ("Steps", "Sampler", "Schedule type", "CFG scale",
                                      "Image CFG scale", "Seed", "Face restoration", "Size")
    assert INFOTEXT_KEY_ORDER[-4:] == ("RNG", "Tiling", "Version", "User")
    params = {k: "v" for k in reversed(INFOTEXT_KEY_ORDER)}
    line = create_infotext("p", "", params, {"Extra B": 1, "Extra A": 2})
    keys = [k for k, _ in find_params(line.split("\n")[-1])]
    assert keys == list(INFOTEXT_KEY_ORDER[:-2]) + ["Extra B", "Extra A", "Version", "User"]


def test_float_and_int_formatting():
    text = create_infotext("p", "", {"Steps": 20, "CFG scale": 7.0, "Seed": 1, "Tiling": True})
    assert text == "p\nSteps: 20, CFG scale: 7.0, Seed: 1, Tiling: True"


def test_none_omitted_and_empty_negative_has_no_line():
    text = create_infotext("p", "", {"Steps": 20, "Sampler": None, "Seed": 3, "Size": "64x64"})
    assert text == "p\nSteps: 20, Seed: 3, Size: 64x64"
    assert "Negative prompt" not in text


def test_key_equal_to_value_is_written_bare():
    assert create_infotext("p", "", {"Steps": 1}, {"Pad conds": "Pad conds"}) == "p\nSteps: 1, Pad conds"


@pytest.mark.parametrize("value, expected", [
    ("plain", "plain"),
    ("a, b", '"a, b"'),
    ("k: v", '"k: v"'),
    ("two\nlines", '"two\\nlines"'),
    ('say "hi", ok', '"say \\"hi\\", ok"'),
    ("ünïcode, ok", '"ünïcode, ok"'),
    (7.5, "7.5"),
])
def test_quote(value, expected):
    assert quote(value) == expected
    assert unquote(quote(value)) == str(value)


def test_unquote_leaves_non_json_alone():
    assert unquote('"unterminated') == '"unterminated'
    assert unquote('"bad \\x escape"') == '"bad \\x escape"'
    assert unquote("") == ""


def test_multiline_prompt_roundtrip():
    text = create_infotext("line one\nline two", "neg one\nneg two", {"Steps": 20, "Seed": 5, "Size": "512x768"})
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "line one\nline two"
    assert parsed["Negative prompt"] == "neg one\nneg two"
    assert parsed["Steps"] == "20"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "768")


def test_reference_example_parses():
    parsed = parse_infotext(REFERENCE_EXAMPLE)
    assert parsed["Prompt"] == "a cat in a hat"
    assert parsed["Negative prompt"] == "ugly, blurry"
    assert parsed["Steps"] == "20"
    assert parsed["Sampler"] == "DPM++ 2M"
    assert parsed["Schedule type"] == "Karras"
    assert parsed["CFG scale"] == "7"
    assert parsed["Lora hashes"] == "foo: 0123456789ab"
    assert parsed["Version"] == "v1.10.1"
    assert "Size" not in parsed and parsed["Size-1"] == "512"
    # A1111's defaults for keys the text does not have
    assert parsed["Clip skip"] == "1"
    assert parsed["RNG"] == "GPU"
    assert parsed["Hires resize-1"] == 0 and parsed["Hires sampler"] == "Use same sampler"
    assert parsed["Masked area padding"] == 32 and parsed["Mask mode"] == "Inpaint masked"


def test_roundtrip_values_with_quotes_commas_colons_newlines():
    extra = {"Lora hashes": "a: 0123, b: 4567", "Note": 'he said "x"\nthen: y', "ControlNet 0":
             'Module: canny, Model: control [abc], Weight: 1.0', "Quoted": '"whole"'}
    params = {"Steps": 30, "Sampler": "Euler a", "CFG scale": 5.5, "Seed": 42, "Size": "640x384"}
    parsed = parse_infotext(create_infotext("p, with: colon", "n", params, extra))
    for key, value in extra.items():
        assert parsed[key] == value
    assert parsed["Prompt"] == "p, with: colon"
    assert parsed["Sampler"] == "Euler a" and parsed["CFG scale"] == "5.5"


def test_text_without_params_line_is_all_prompt():
    parsed = parse_infotext("just a prompt, with: one colon\nNegative prompt: bad")
    assert parsed["Prompt"] == "just a prompt, with: one colon"
    assert parsed["Negative prompt"] == "bad"
    assert parsed["Clip skip"] == "1"


def test_only_prompt_and_params():
    parsed = parse_infotext("Steps: 20, Sampler: Euler, Seed: 1")
    assert parsed["Prompt"] == "" and parsed["Negative prompt"] == ""
    assert parsed["Seed"] == "1"


@pytest.mark.parametrize("sampler, name, schedule", [
    ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
    ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential"),
    ("LMS Karras", "LMS", "Karras"),
    ("Euler SGM Uniform", "Euler", "SGM Uniform"),
    ("Euler a", "Euler a", "Automatic"),
])
def test_legacy_combined_sampler_is_split(sampler, name, schedule):
    parsed = parse_infotext(f"p\nSteps: 20, Sampler: {sampler}, Seed: 1")
    assert (parsed["Sampler"], parsed["Schedule type"]) == (name, schedule)


def test_explicit_schedule_type_wins_over_split():
    parsed = parse_infotext("p\nSteps: 20, Sampler: DPM++ 2M Karras, Schedule type: Exponential, Seed: 1")
    assert (parsed["Sampler"], parsed["Schedule type"]) == ("DPM++ 2M Karras", "Exponential")


def test_backcompat_flags_from_version():
    parsed = parse_infotext("a [b:c:5]\nSteps: 20, Sampler: DDIM, Seed: 1, Version: v1.5.2")
    assert parsed["Old prompt editing timelines"] is True
    assert parsed["Pad conds v0"] is True
    assert parsed["Downcast alphas_cumprod"] is True
    assert "Downcast alphas_cumprod" not in parse_infotext("p\nSteps: 2, Seed: 1, Version: v1.10.1")


@pytest.mark.parametrize("text", [
    "p\nSteps: 20, Face restoration: , Size: 512x, Seed: 1",
    "p\nSteps: abc, Sampler: \"Euler, Seed: 1, Size: 64x64",
    'p\nSteps: 1, Lora hashes: "a: 1, Seed: 3, Model: "x\\',
    "",
    "\n\n\n",
    "Negative prompt:",
    ":" * 1000,
    '"' * 1000,
])
def test_malformed_inputs_do_not_raise(text):
    parsed = parse_infotext(text)
    assert "Prompt" in parsed


def test_malformed_values_are_kept_or_dropped_like_a1111():
    parsed = parse_infotext("p\nSteps: abc, Face restoration: , Size: 512x, Seed: 1")
    assert parsed["Steps"] == "abc"
    assert parsed["Size"] == "512x" and "Size-1" not in parsed
    assert "Face restoration" not in parsed
    assert parsed["Seed"] == "1"


@pytest.mark.parametrize("body", [
    "a" * 1_000_000,
    " " * 1_000_000,
    'Key: "' + "x" * 1_000_000,
    "Steps: 20, " * 100_000,
    'ab: "x\\", ' * 100_000,
    "word " * 200_000 + "\n" + "Steps: 1, Seed: 2, Size: 8x8",
])
def test_megabyte_inputs_return_quickly(body):
    start = time.perf_counter()
    parse_infotext(body)
    assert time.perf_counter() - start < 2.0


def test_find_params_equals_a1111_regex():
    alphabet = list("abZ_1  -/::,,\"\"\\\té") + ["\u00a0", "x"]
    rng = random.Random(1)
    for _ in range(20_000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert find_params(s) == RE_PARAM.findall(s), s
    assert find_params(REFERENCE_EXAMPLE.split("\n")[-1]) == RE_PARAM.findall(REFERENCE_EXAMPLE.split("\n")[-1])


def test_request_fields_conversion():
    text = create_infotext("a cat", "ugly", {
        "Steps": 25, "Sampler": "Euler a", "Schedule type": "Karras", "CFG scale": 6.5, "Seed": 77,
        "Size": "640x512", "Variation seed": 9, "Variation seed strength": 0.25, "Clip skip": 2,
        "Tiling": "True", "Denoising strength": 0.4, "Seed resize from": "320x256"}, {"Hires upscale": 1.5})
    result = infotext_to_request_fields(parse_infotext(text))
    assert result["errors"] == {}
    assert result["fields"] == {
        "prompt": "a cat", "negative_prompt": "ugly", "steps": 25, "sampler_name": "Euler a",
        "scheduler": "Karras", "cfg_scale": 6.5, "seed": 77, "width": 640, "height": 512,
        "subseed": 9, "subseed_strength": 0.25, "seed_resize_from_w": 320, "seed_resize_from_h": 256,
        "clip_skip": 2, "tiling": True, "denoising_strength": 0.4, "hr_scale": 1.5,
        "hr_resize_x": 0, "hr_resize_y": 0, "enable_hr": True,
        # A1111's defaults for the inpainting keys, filled in when the infotext lacks them
        "inpainting_mask_invert": 0, "inpainting_fill": 1, "inpaint_full_res": False, "inpaint_full_res_padding": 32,
    }
    assert isinstance(result["fields"]["steps"], int) and isinstance(result["fields"]["cfg_scale"], float)


def test_request_fields_defaults_from_parse():
    fields = infotext_to_request_fields(parse_infotext("p\nSteps: 20, Sampler: Euler, Seed: 1"))["fields"]
    assert fields["clip_skip"] == 1 and fields["scheduler"] == "Automatic"
    assert "hr_sampler_name" not in fields and "hr_prompt" not in fields and "enable_hr" not in fields


def test_request_fields_report_bad_values():
    parsed = parse_infotext("p\nSteps: abc, CFG scale: nan, Seed: 1.5, Size: 512x, Tiling: maybe, "
                            "Variation seed strength: lots, Sampler: Euler")
    result = infotext_to_request_fields(parsed)
    assert result["errors"] == {
        "Steps": "not an integer: 'abc'",
        "CFG scale": "not a finite number: 'nan'",
        "Seed": "not an integer: '1.5'",
        "Size": "not WIDTHxHEIGHT: '512x'",
        "Tiling": "not True/False: 'maybe'",
        "Variation seed strength": "not a number: 'lots'",
    }
    assert result["fields"]["sampler_name"] == "Euler"
    for field in ("steps", "cfg_scale", "seed", "width", "height", "tiling", "subseed_strength"):
        assert field not in result["fields"]


def test_inpainting_keys_map_to_request_fields():
    text = create_infotext("a cat", "", {"Steps": 20, "Seed": 1, "Size": "512x512"}, {
        "Mask blur": 8, "Mask mode": "Inpaint not masked", "Masked content": "latent noise",
        "Inpaint area": "Only masked", "Masked area padding": 16})
    fields = infotext_to_request_fields(parse_infotext(text))["fields"]
    assert (fields["mask_blur"], fields["inpainting_mask_invert"], fields["inpainting_fill"],
            fields["inpaint_full_res"], fields["inpaint_full_res_padding"]) == (8, 1, 2, True, 16)
    bad = infotext_to_request_fields(parse_infotext(text.replace("latent noise", "sparkles")))
    assert "Masked content" in bad["errors"] and "inpainting_fill" not in bad["fields"]
