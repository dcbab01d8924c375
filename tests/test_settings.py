"""Settings as a user meets them: config.json across restarts, /sdapi/v1/options, freezing flags, extensions'
options, the Settings tab, the quicksettings bar and ui-config.json."""
from __future__ import annotations

import json
import logging

import gradio as gr
import pytest

from modules import cmd_args, services as services_module
from modules.options import Options
from modules.settings.option_info import OptionInfo
from modules.settings.table import OPTIONS
from modules.ui import settings, topbar, ui_config
from tests.fixtures.app_client import app_client


@pytest.fixture
def make_services(tmp_path):
    """services.create() on tmp_path with extra flags; all are shut down at the end."""
    made = []

    def make(*flags):
        made.append(services_module.create(cmd_args.parse_args(["--data-dir", str(tmp_path), "--nowebui", *flags])))
        return made[-1]

    yield make
    for services in made:
        services.shutdown()


def config(tmp_path) -> dict:
    return json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))


def elem_ids(block) -> list[str]:
    found = [block.elem_id] if getattr(block, "elem_id", None) else []
    for child in getattr(block, "children", None) or []:
        found += elem_ids(child)
    return found


def build(fn):
    """fn(page) run inside a page of its own; → (page, what fn returned)."""
    with gr.Blocks() as demo:
        made = fn(demo)
    return demo, made


# ---------------------------------------------------------------- config.json and the registry

def test_settings_persist_across_restart(tmp_path, make_services):
    first = make_services()
    first.update_options({"samples_format": "webp", "CLIP_stop_at_last_layers": 2,
                          "quicksettings_list": ["sd_model_checkpoint", "CLIP_stop_at_last_layers"]}, from_api=False)
    first.shutdown()
    assert config(tmp_path)["samples_format"] == "webp"

    again = make_services()
    assert again.options.samples_format == "webp" and again.options.CLIP_stop_at_last_layers == 2
    assert again.options.quicksettings_list == ["sd_model_checkpoint", "CLIP_stop_at_last_layers"]
    assert again.options.data["samples_format"] == "webp"          # A1111 extensions read opts.data
    with pytest.raises(TypeError):
        again.options.data["samples_format"] = "png"              # changes go through update, validated


def test_api_options_get_and_post_include_an_added_option(make_services):
    services = make_services()
    services.options.add_option("my_ext_strength", OptionInfo(0.5, "Strength", section=("my_ext", "My extension"),
                                                              component_args={"minimum": 0, "maximum": 1}))
    from webui import create_app

    with app_client(create_app(services)) as client:
        assert client.get("/sdapi/v1/options").json()["my_ext_strength"] == 0.5
        assert client.post("/sdapi/v1/options", json={"my_ext_strength": 0.8}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["my_ext_strength"] == 0.8
        refused = client.post("/sdapi/v1/options", json={"my_ext_strength": 3})
        assert refused.status_code == 422 and "my_ext_strength" in refused.text and "at most 1" in refused.text
    assert services.options.my_ext_strength == 0.8


def test_freezing_flags_refuse_changes_naming_the_key(tmp_path, make_services):
    services = make_services("--freeze-settings-in-sections", "saving-images, API",
                             "--freeze-specific-settings", "CLIP_stop_at_last_layers")
    with pytest.raises(ValueError, match=r"samples_format: .*Saving images/grids.*--freeze-settings-in-sections"):
        services.update_options({"samples_format": "jpg"}, from_api=False)
    with pytest.raises(ValueError, match="api_useragent: .*frozen"):          # A1111 spells the section "API"
        services.update_options({"api_useragent": "me"}, from_api=False)
    with pytest.raises(ValueError, match="CLIP_stop_at_last_layers: .*--freeze-specific-settings"):
        services.update_options({"CLIP_stop_at_last_layers": 3, "emphasis": "Ignore"}, from_api=False)
    assert services.options.emphasis == "Original"                            # all or nothing
    services.update_options({"emphasis": "Ignore", "samples_format": "png"}, from_api=False)   # same value: no change
    assert services.options.emphasis == "Ignore" and config(tmp_path)["emphasis"] == "Ignore"

    frozen = make_services("--freeze-settings")
    with pytest.raises(ValueError, match="emphasis: .*--freeze-settings"):
        frozen.update_options({"emphasis": "None"}, from_api=False)


def test_list_and_unknown_typed_options_validate():
    options = Options(None)
    options.update({"quicksettings_list": ["sd_vae", "CLIP_stop_at_last_layers"], "disabled_extensions": ["a"]})
    assert options.quicksettings_list == ["sd_vae", "CLIP_stop_at_last_layers"]
    with pytest.raises(ValueError, match="quicksettings_list: expected a list"):
        options.update({"quicksettings_list": "sd_vae"})
    with pytest.raises(ValueError, match="quicksettings_list: expected a list of strings"):
        options.update({"quicksettings_list": [1]})
    with pytest.raises(ValueError, match="disable_all_extensions: must be one of"):
        options.update({"disable_all_extensions": "some"})

    options.add_option("ext_models", OptionInfo(["a"], "Models", section="upscaling",
                                                component_args=lambda: {"choices": ["a", "b"]}))
    options.update({"ext_models": ["b", "a"]})
    with pytest.raises(ValueError, match="ext_models: 'c' is not one of"):
        options.update({"ext_models": ["c"]})
    options.add_option("ext_anything", OptionInfo(None, "Anything", section="upscaling"))   # A1111's None default
    options.update({"ext_anything": {"x": [1, 2]}})
    options.update({"ext_anything": None})
    options.add_option("ext_pick", OptionInfo(None, "Pick", section="upscaling",
                                              component_args={"choices": [("Label", "value")]}))
    options.update({"ext_pick": "value"})
    with pytest.raises(ValueError, match="ext_pick: must be one of"):
        options.update({"ext_pick": "Label"})


def test_add_option_with_an_a1111_section_tuple_keeps_the_saved_value(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"my_ext_strength": 0.7, "my_ext_mode": "nonsense"}))
    options = Options(tmp_path / "config.json")
    strength = OptionInfo(0.5, "Strength", section=("my_ext", "My extension", "ext_category"),
                          component_args={"minimum": 0, "maximum": 1, "step": 0.1}).info("how much").needs_reload_ui()
    options.add_option("my_ext_strength", strength)
    options.add_option("my_ext_mode", OptionInfo("fast", "Mode", section=("my_ext", "My extension"),
                                                 choices=("fast", "slow")))
    assert options.my_ext_strength == 0.7                     # saved before the extension was loaded: kept
    assert options.my_ext_mode == "fast"                      # saved but invalid: the default
    info = options.infos()["my_ext_strength"]
    assert (info.section, info.category_id) == ("my_ext", "ext_category")
    assert "(how much)" in info.comment_after and "requires restart" in info.comment_after
    assert strength.comment_before == "" and OPTIONS["samples_format"].comment_after == ""   # copies, not changes
    assert ("my_ext", "My extension") in options.sections()
    assert options.sections()[0] == ("saving-images", "Saving images/grids")
    with pytest.raises(ValueError, match="my_ext_strength: must be at most 1"):
        options.update({"my_ext_strength": 2})

    calls = []
    options.onchange("my_ext_strength", lambda: calls.append(options.my_ext_strength), call=False)
    options.update({"my_ext_strength": 0.2})
    options.update({"my_ext_strength": 0.2})                  # not a change: no call
    assert calls == [0.2]
    assert "my_ext_strength" in Options(tmp_path / "config.json").as_dict()   # saved with the others


def test_a1111_signature_through_the_shared_facade():
    from modules import shared

    info = shared.OptionInfo(1, "Count", gr.Slider, {"minimum": 1, "maximum": 4, "step": 1},
                             section=("my_ext", "My extension"))
    options = Options(None)
    options.add_option("my_ext_count", info)
    assert options.infos()["my_ext_count"].component is gr.Slider
    with pytest.raises(ValueError, match="my_ext_count: must be at most 4"):
        options.update({"my_ext_count": 5})


# ---------------------------------------------------------------- the Settings tab

def test_settings_tab_apply_saves_changes_and_refuses_a_bad_value_naming_it(tmp_path, make_services):
    services = make_services()
    services.options.add_option("my_ext_flag", OptionInfo(False, "My flag", section=("my_ext", "My extension")))
    _, tab = build(lambda demo: settings.create_tab(services, demo))
    assert {"my_ext", "saving-images", "sd"} <= set(tab.sections)
    assert isinstance(tab.components["my_ext_flag"], gr.Checkbox)
    assert isinstance(tab.components["samples_format"], gr.Radio)
    assert isinstance(tab.components["CLIP_stop_at_last_layers"], gr.Slider)
    assert "sd_vae" not in tab.components and "sd_model_checkpoint" not in tab.components   # in the top bar
    assert "disabled_extensions" not in tab.components                                         # hidden option

    result = settings.apply_settings(services, tab.codecs, {
        "samples_format": "jpg", "CLIP_stop_at_last_layers": 2.0, "my_ext_flag": True, "emphasis": "Original"})
    assert "3 settings changed: samples_format, CLIP_stop_at_last_layers, my_ext_flag." in result
    saved = config(tmp_path)
    assert saved["samples_format"] == "jpg" and saved["CLIP_stop_at_last_layers"] == 2 and saved["my_ext_flag"]

    result = settings.apply_settings(services, tab.codecs, {"samples_format": "png", "CLIP_stop_at_last_layers": 40})
    assert "Nothing saved" in result and "CLIP_stop_at_last_layers" in result
    result = settings.apply_settings(services, tab.codecs, {"sd_model_prediction_overrides": "{not json"})
    assert "Nothing saved" in result and "sd_model_prediction_overrides" in result
    assert config(tmp_path) == saved

    overrides = '{"a.safetensors": "v_prediction"}'
    settings.apply_settings(services, tab.codecs, {"sd_model_prediction_overrides": overrides})
    assert config(tmp_path)["sd_model_prediction_overrides"] == {"a.safetensors": "v_prediction"}

    # a page loaded before another change (top bar, API) saves only what was changed on it
    page = services.options.as_dict()
    services.update_options({"sd_model_prediction_overrides": {}, "CLIP_stop_at_last_layers": 3}, from_api=False)
    result = settings.apply_settings(services, tab.codecs, {
        "sd_model_prediction_overrides": overrides, "CLIP_stop_at_last_layers": 2.0, "samples_format": "webp"}, page)
    assert "1 settings changed: samples_format." in result
    assert config(tmp_path)["sd_model_prediction_overrides"] == {} and config(tmp_path)["CLIP_stop_at_last_layers"] == 3


def test_damaged_config_json_is_kept_aside_not_overwritten(tmp_path):
    from modules.options import Options

    (tmp_path / "config.json").write_text('{"samples_format": "jpg",}', encoding="utf-8")   # a trailing comma
    options = Options(tmp_path / "config.json")
    assert options.samples_format == "png"   # defaults for now
    kept = list(tmp_path.glob("config.json.broken-*"))
    assert len(kept) == 1 and kept[0].read_text(encoding="utf-8") == '{"samples_format": "jpg",}'
    options.update({"grid_format": "jpg"})
    assert kept[0].exists()


def test_a_failed_save_changes_nothing(tmp_path, monkeypatch):
    from modules import options as options_module

    options = options_module.Options(tmp_path / "config.json")

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(options_module, "write_json_atomically", disk_full)
    with pytest.raises(ValueError, match="settings not saved: No space left on device"):
        options.update({"samples_format": "jpg"})
    assert options.samples_format == "png"


def test_settings_tab_hides_folders_and_freezes_components(make_services):
    services = make_services("--hide-ui-dir-config", "--freeze-specific-settings", "samples_format")
    _, tab = build(lambda demo: settings.create_tab(services, demo))
    assert "saving-paths" not in tab.sections and "outdir_txt2img_samples" not in tab.components
    assert tab.components["samples_format"].interactive is False
    assert tab.components["grid_format"].interactive is True


def test_search_finds_options_across_sections(make_services):
    services = make_services()
    keys = [key for keys in settings.shown_keys(services).values() for key in keys]
    found = settings.matching_keys(services, keys, "FILE FORMAT")
    assert {"samples_format", "grid_format"} <= set(found) and "samples_save" not in found
    assert set(settings.matching_keys(services, keys, "controlnet")) == {k for k in keys if k.startswith("control_net")}
    assert settings.matching_keys(services, keys, "  ") == keys


# ---------------------------------------------------------------- the quicksettings bar

def test_quicksettings_list_renders_its_keys_in_order(make_services, caplog):
    services = make_services()
    services.update_options({"quicksettings_list": ["CLIP_stop_at_last_layers", "no_such_setting", "samples_format",
                                                    "sd_model_checkpoint"]}, from_api=False)
    with caplog.at_level(logging.WARNING):
        demo, bar = build(lambda demo: topbar.create_topbar(demo, services))
    assert "no_such_setting" in caplog.text
    shown = [elem_id for elem_id in elem_ids(demo) if elem_id.startswith("setting_")]
    assert shown == ["setting_CLIP_stop_at_last_layers", "setting_samples_format", "setting_sd_model_checkpoint",
                     "setting_prediction_type"]
    assert bar.vae is None and isinstance(bar.settings["CLIP_stop_at_last_layers"], gr.Slider)

    topbar.set_quicksetting(services, "CLIP_stop_at_last_layers", settings.PLAIN, 3.0)
    assert services.options.CLIP_stop_at_last_layers == 3
    with pytest.warns(UserWarning, match="samples_format"):
        update = topbar.set_quicksetting(services, "samples_format", settings.PLAIN, "tiff")
    assert update["value"] == "png" and services.options.samples_format == "png"


def test_default_quicksettings_are_the_checkpoint_and_vae(make_services):
    demo, bar = build(lambda demo: topbar.create_topbar(demo, make_services()))
    assert [i for i in elem_ids(demo) if i.startswith("setting_")] == [
        "setting_sd_model_checkpoint", "setting_prediction_type", "setting_sd_vae"]


# ---------------------------------------------------------------- ui-config.json

def small_page():
    with gr.Blocks() as demo:
        with gr.Tabs() as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps")
                sampler = gr.Dropdown(["Euler a", "DPM++ 2M"], value="Euler a", label="Sampling method")
                prompt = gr.Textbox(label="Prompt")
                with gr.Tabs(elem_id="txt2img_mode"):
                    with gr.Tab("A", id="a"):
                        tiling = gr.Checkbox(False, label="Tiling")
                    with gr.Tab("B", id="b"):
                        gr.Button("Go")
            with gr.Tab("Settings", id="settings"):
                gr.Textbox(label="Secret setting")
    return demo, tabs, steps, sampler, prompt, tiling


def test_ui_config_sets_saved_defaults_and_writes_the_missing_keys(tmp_path, caplog):
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": 30, "txt2img/Sampling steps/maximum": 200,
                                "txt2img/Sampling method/value": "No such sampler", "txt2img/Prompt/value": 5,
                                "txt2img/Tiling/value": True, "txt2img/Tabs@txt2img_mode/selected": "b",
                                "other/kept": 1}))
    demo, tabs, steps, sampler, prompt, tiling = small_page()
    with caplog.at_level(logging.WARNING):
        ui_config.apply_ui_config(path, tabs)
    assert (steps.value, steps.maximum) == (30, 200) and tiling.value is True
    assert sampler.value == "Euler a" and prompt.value in (None, "")          # bad values ignored, with a warning
    assert "txt2img/Sampling method/value" in caplog.text and "txt2img/Prompt/value" in caplog.text
    saved = json.loads(path.read_text())
    assert saved["txt2img/Sampling steps/value"] == 30 and saved["other/kept"] == 1     # nothing overwritten
    assert saved["txt2img/Sampling steps/minimum"] == 1 and saved["txt2img/Go/visible"] is True
    assert saved["txt2img/Sampling method/value"] == "No such sampler"
    assert not any(key.startswith("settings/") for key in saved)
    assert demo.get_config_file()   # the page still serialises


def test_ui_config_skips_components_marked_do_not_save_to_config(tmp_path):
    """A1111's rule, which extensions rely on (Image Browser marks its folder boxes, whose default is computed)."""
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": 30}))
    demo, tabs, steps, sampler, *_ = small_page()
    steps.do_not_save_to_config = sampler.do_not_save_to_config = True
    ui_config.apply_ui_config(path, tabs)
    saved = json.loads(path.read_text())
    assert steps.value == 20   # the saved value is not applied
    assert not any(key.startswith(("txt2img/Sampling steps/", "txt2img/Sampling method/")) for key in saved
                   if key != "txt2img/Sampling steps/value")
    assert "txt2img/Prompt/value" in saved


def test_ui_config_damaged_file_gives_defaults_and_is_left_alone(tmp_path, caplog):
    path = tmp_path / "ui-config.json"
    path.write_text("{damaged")
    demo, tabs, steps, *_ = small_page()
    with caplog.at_level(logging.WARNING):
        ui_config.apply_ui_config(path, tabs)
    assert steps.value == 20 and "damaged" in caplog.text and path.read_text() == "{damaged"

    fresh = tmp_path / "new" / "ui-config.json"
    ui_config.apply_ui_config(fresh, small_page()[1])
    assert json.loads(fresh.read_text())["txt2img/Sampling steps/value"] == 20


def test_ui_config_applies_to_the_real_page(tmp_path, make_services):
    services = make_services()
    services.paths.ui_config_file.write_text(json.dumps({"txt2img/Sampling steps/value": 33}))
    from modules.ui import create_ui

    demo = create_ui(services)
    served = next(component for component in demo.get_config_file()["components"]
                  if component["props"].get("elem_id") == "txt2img_steps")
    assert served["props"]["value"] == 33                 # what the browser is given
    saved = json.loads(services.paths.ui_config_file.read_text())
    assert saved["img2img/Sampling steps/value"] == 20 and "txt2img/Width/value" in saved
    assert not any(key.startswith(("settings/", "extensions/")) for key in saved)
    assert demo.blocks and "setting_samples_format" in elem_ids(demo)
