"""A1111's model, sampler and prompt modules for extensions (issue 21), on a running server: a stand-in extension
reads `sd_models`, `sd_samplers`, `sd_schedulers`, `prompt_parser`, `sd_vae`, `sd_hijack` and `shared`'s names
at import and in a hook, as real extensions (tag autocomplete, Ultimate SD upscale, ADetailer, agent scheduler,
dynamic prompts) do; an A1111 internal that cannot exist here fails with a message naming the extension."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from PIL import Image

from modules.generation.request import validate_request
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.stand_ins import services_with_extensions
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_embeddings import random_vectors, write_a1111_pt
from tests.fixtures.tiny_upscalers import write_malicious_pickle, write_upscaler_models

EXTENSION = '''
import json
from pathlib import Path

import torch
from modules import (prompt_parser, scripts, sd_hijack, sd_models, sd_samplers, sd_schedulers, sd_vae, shared,
                     sd_samplers_kdiffusion, shared_items)

from modules.sd_models import checkpoints_list   # a reference kept from import time, as extensions keep it

OUT = Path(__file__).parents[2] / "seen.json"


def missing(read):
    try:
        read()
    except AttributeError as error:
        return str(error)
    return None


section = ("reader", "Reader")
option = shared.OptionInfo("a", "A choice").needs_restart()
option.section = section          # as tag autocomplete does
option.info("shown after the label")

SEEN = {
    "titles": list(sd_models.checkpoints_list),
    "alias": sd_models.checkpoint_aliases["tiny-sd1"].title,
    "hashes": [(info.hash, sd_models.model_hash(info.filename), info.is_safetensors, info.metadata)
               for info in sd_models.checkpoints_list.values()],
    "tiles": sd_models.checkpoint_tiles(use_short=True),
    "shared_tiles": shared.list_checkpoint_tiles(),
    "vae_items": shared_items.sd_vae_items(),
    "closest": sd_models.get_closet_checkpoint_match("tiny-sd1-b").name,
    "samplers": [s.name for s in sd_samplers.samplers],
    "dpm_aliases": sd_samplers.all_samplers_map["DPM++ 2M"].aliases,
    "dpm_scheduler": sd_samplers.all_samplers_map["DPM++ 2M"].options["scheduler"],
    "map": sd_samplers.samplers_map["k_euler_a"],
    "k_functions": [f for _, f, _, _ in sd_samplers_kdiffusion.samplers_k_diffusion][:2],
    "schedulers": [s.label for s in sd_schedulers.schedulers],
    "karras": sd_schedulers.schedulers_map["karras"].function(4, 0.1, 10.0).tolist(),
    "schedule": prompt_parser.get_learned_conditioning_prompt_schedules(["a [b:c:0.5]"], 10),
    "attention": prompt_parser.parse_prompt_attention("an (important) word"),
    "vaes": list(sd_vae.vae_dict),
    "styles": sorted(shared.prompt_styles.styles),
    "styled": shared.prompt_styles.apply_styles_to_prompt("a cat", ["sunny"]),
    "unset_options": [shared.opts.batch_cond_uncond, shared.opts.outdir_grids, shared.opts.img2img_color_correction,
                      shared.opts.sd_vae_encode_method],
    "option_section": option.section, "option_comment": option.comment_after,
    "clip": missing(lambda: sd_hijack.model_hijack.clip),
    "create_sampler": missing(lambda: sd_samplers.create_sampler("Euler", None)),
    "model_at_import": repr(sd_models.model_data.sd_model),
}
shared.opts.add_option("reader_choice", option)
OUT.write_text(json.dumps(SEEN))


def switch(title):
    """What an extension's button does: load another checkpoint."""
    return sd_models.reload_model_weights(info=sd_models.checkpoints_list[title])


class Reader(scripts.Script):
    def title(self):
        return "Reader"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        model = shared.sd_model
        upscaler = next(u for u in shared.sd_upscalers if u.name == "tiny_esrgan_2x")
        from PIL import Image
        shared.total_tqdm.updateTotal(3)
        shared.total_tqdm.update()
        picture = Image.new("RGB", (8, 6), "white")
        shared.state.current_image = picture
        SEEN.update({
            "hook_title": model.sd_checkpoint_info.title, "is_sdxl": model.is_sdxl,
            "unet_class": type(model.pipeline.unet).__name__,
            "diffusion_model": missing(lambda: shared.sd_model.model.diffusion_model),
            "embeddings": sorted(sd_hijack.model_hijack.embedding_db.word_embeddings),
            "embedding_vectors": sd_hijack.model_hijack.embedding_db.word_embeddings["tiny-emb"].vectors,
            "lengths": list(sd_hijack.model_hijack.get_prompt_lengths("a photo of a cat")),
            "upscaled": list(upscaler.scaler.upscale(picture, 2, upscaler.data_path).size),
            "tqdm": [shared.total_tqdm.done, shared.total_tqdm.total],
            "preview_is_ours": shared.state.current_image is picture,
            "timestamp": shared.state.job_timestamp, "started": shared.state.time_start,
            "server_start": shared.state.server_start, "job_count": shared.state.job_count,
            "latent": missing(lambda: shared.state.current_latent),
            "uniform": len(sd_schedulers.schedulers_map["Uniform"].function(4)),   # the model's own noise levels
            "decoded": list(sd_samplers.sample_to_image(torch.zeros(1, 4, 2, 3)).size),
        })
        OUT.write_text(json.dumps(SEEN))
'''


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("a1111models"),
                                     {"tiny-sd1.safetensors": build_tiny_model("sd1"),
                                      "tiny-sd1-b.safetensors": build_tiny_model("sd1", seed=1)})
    write_upscaler_models(data / "models")
    (data / "models" / "VAE").mkdir(parents=True)
    safetensors.torch.save_file({"decoder.conv_in.weight": torch.zeros(1)}, data / "models" / "VAE" / "tiny-vae.safetensors")
    (data / "embeddings").mkdir()
    write_a1111_pt(data / "embeddings" / "tiny-emb.pt", random_vectors(3))
    (data / "styles.csv").write_text('name,prompt,negative_prompt\nsunny,"{prompt}, sunny day",blurry\n')
    with services_with_extensions(data, {"reader/scripts/reader.py": EXTENSION}) as services:
        yield services, data


def seen(data) -> dict:
    return json.loads((data / "extensions" / "seen.json").read_text())


def reader_module(services):
    import sys

    return next(module for name, module in sys.modules.items()
                if getattr(module, "__file__", "") and module.__file__.endswith("reader/scripts/reader.py"))


def test_names_an_extension_reads_at_import(started):
    services, data = started
    got = seen(data)
    titles = [info.title for info in services.registry.items()]
    assert got["titles"] == titles and got["alias"] == titles[1] and "tiny-sd1.safetensors" in got["alias"]
    assert got["tiles"] == ["tiny-sd1-b", "tiny-sd1"] and got["closest"] == "tiny-sd1-b.safetensors"
    assert got["hashes"] == [[entry.oldhash, entry.oldhash, True, {}] for entry in services.registry.items()]
    assert got["shared_tiles"] == titles and got["vae_items"] == ["Automatic", "None", "tiny-vae.safetensors"]
    assert got["samplers"][0] == "DPM++ 2M" and "Euler a" in got["samplers"] and "DDIM" in got["samplers"]
    assert got["dpm_aliases"] == ["k_dpmpp_2m"] and got["dpm_scheduler"] == "karras" and got["map"] == "Euler a"
    assert got["k_functions"] == ["sample_dpmpp_2m", "sample_dpmpp_sde"]
    assert got["schedulers"][:3] == ["Automatic", "Uniform", "Karras"] and len(got["karras"]) == 5
    assert got["karras"][0] == pytest.approx(10.0) and got["karras"][-1] == 0.0
    assert got["schedule"] == [[[5, "a b"], [10, "a c"]]]            # A1111's answer, lists and all
    assert got["attention"] == [["an ", 1.0], ["important", 1.1], [" word", 1.0]]
    assert got["vaes"] == ["tiny-vae.safetensors"]
    assert got["styles"] == ["sunny"] and got["styled"] == "a cat, sunny day"
    assert got["unset_options"] == [True, "", False, "Full"]         # A1111's defaults for options not acted on
    assert got["option_section"] == ["reader", "Reader"] and "requires restart" in got["option_comment"] \
        and "shown after the label" in got["option_comment"]
    assert services.options.reader_choice == "a"
    assert "extension 'reader'" in got["clip"] and "model_hijack.clip" in got["clip"]
    assert "extension 'reader'" in got["create_sampler"] and "p.sampler_name" in got["create_sampler"]
    assert got["model_at_import"] == "None"


def test_a_hook_sees_the_loaded_model_its_embeddings_and_upscalers(started):
    services, data = started
    request = validate_request({"prompt": "x", "checkpoint": "tiny-sd1", "width": 64, "height": 64, "steps": 1,
                                "save_images": False}, services.registry)
    job = services.submit_txt2img(request)
    assert job.done.wait(300) and job.state == "done", job.error
    got = seen(data)
    assert got["hook_title"] == services.registry.find("tiny-sd1").title and got["is_sdxl"] is False
    assert got["unet_class"] == "UNet2DConditionModel"
    assert "extension 'reader'" in got["diffusion_model"] and "pipeline.unet" in got["diffusion_model"]
    assert got["embeddings"] == ["tiny-emb"] and got["embedding_vectors"] == 3
    assert got["lengths"] == [5, 75]
    assert got["upscaled"] == [16, 12]
    assert got["tqdm"] == [1, 3] and got["preview_is_ours"] is True
    assert got["timestamp"] != "0" and got["started"] >= got["server_start"] and got["job_count"] == 1
    assert "extension 'reader'" in got["latent"] and got["uniform"] == 5
    scale = services.models.current.pipeline.vae_scale_factor
    assert got["decoded"] == [3 * scale, 2 * scale]   # a latent decoded by the loaded model's VAE


def test_reload_model_weights_switches_through_the_queue(started):
    from modules import sd_models, shared

    services, _ = started
    other = services.registry.find("tiny-sd1-b").title
    model = reader_module(services).switch(other)   # the title gains the file's hash once it is loaded
    assert model.sd_checkpoint_info.name == "tiny-sd1-b.safetensors" == services.models.current.info.name
    assert model.sd_checkpoint_info.title == services.models.current.info.title != other
    assert shared.sd_model == model and sd_models.select_checkpoint() == model.sd_checkpoint_info
    sd_models.unload_model_weights()
    assert services.models.current is None and shared.sd_model is None


def test_sd_vae_follows_the_setting(started):
    from modules import sd_vae

    services, data = started
    services.switch_model("tiny-sd1")
    assert sd_vae.loaded_vae_file is None and sd_vae.get_loaded_vae_name() is None   # the checkpoint's own
    services.update_options({"sd_vae": "tiny-vae.safetensors"}, from_api=False)
    try:
        assert sd_vae.loaded_vae_file == str(data.resolve() / "models" / "VAE" / "tiny-vae.safetensors")
        assert sd_vae.reload_vae_weights().sd_checkpoint_info.name == "tiny-sd1.safetensors"
        with pytest.raises(AttributeError, match="sd_vae"):
            sd_vae.reload_vae_weights(vae_file="x.safetensors")
    finally:
        services.update_options({"sd_vae": "Automatic"}, from_api=False)


def test_the_checkpoint_list_an_extension_kept_follows_a_refresh(started):
    from modules import sd_models

    services, data = started
    kept = reader_module(services).checkpoints_list
    assert "tiny-sd1-c.safetensors" not in [info.name for info in kept.values()]
    data_dir_with_checkpoints(data, {"tiny-sd1-c.safetensors": build_tiny_model("sd1", seed=2)})
    sd_models.list_models()
    assert "tiny-sd1-c.safetensors" in [info.name for info in kept.values()]
    assert sd_models.checkpoint_aliases["tiny-sd1-c"].filename == str(data.resolve() / "models" / "Stable-diffusion"
                                                                       / "tiny-sd1-c.safetensors")


def test_visible_samplers_follow_the_setting(started):
    from modules import sd_samplers

    services, _ = started
    assert "Euler" in sd_samplers.visible_sampler_names()
    services.update_options({"hide_samplers": ["Euler", "LMS"]}, from_api=False)
    try:
        visible = sd_samplers.visible_sampler_names()
        assert "Euler" not in visible and "LMS" not in visible and "Euler a" in visible
        assert len(visible) == len(sd_samplers.all_samplers) - 2
    finally:
        services.update_options({"hide_samplers": []}, from_api=False)


def test_prompt_parser_gives_a1111s_answers():
    from modules import prompt_parser

    g = lambda p: prompt_parser.get_learned_conditioning_prompt_schedules([p], 10)[0]   # noqa: E731
    # From A1111's docstring.
    assert g("a [b:3]") == [[3, "a "], [10, "a b"]]
    assert g("a[b:[c:d:2]:1]e") == [[1, "abe"], [2, "ace"], [10, "ade"]]
    assert g("[fe|||]male")[:5] == [[1, "female"], [2, "male"], [3, "male"], [4, "male"], [5, "female"]]
    assert prompt_parser.get_learned_conditioning_prompt_schedules(["a [b:1.5] c"], 10, 10) == \
        [[[5, "a  c"], [10, "a b c"]]]
    assert prompt_parser.parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).") == [
        ["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
        [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]
    indexes, flat, index_of = prompt_parser.get_multicond_prompt_list(
        prompt_parser.SdConditioning(["a AND b :0.7", "b AND c"], width=512, height=768))
    assert indexes == [[(0, 1.0), (1, 0.7)], [(2, 1.0), (3, 1.0)]] and flat == ["a", " b", "b", " c"]
    assert flat.width == 512 and flat.height == 768 and index_of[" b"] == 1
    with pytest.raises(AttributeError, match="get_learned_conditioning"):
        prompt_parser.get_learned_conditioning   # noqa: B018


def test_safe_loads_weights_and_refuses_code(tmp_path):
    from modules import modelloader, safe

    weights = write_a1111_pt(tmp_path / "emb.pt", random_vectors(2))
    assert safe.load(str(weights))["string_to_param"]["*"].shape == (2, 32)
    marker = tmp_path / "ran"
    write_malicious_pickle(tmp_path / "evil.pt", marker)
    assert safe.load(str(tmp_path / "evil.pt")) is None and not marker.exists()
    with pytest.raises(Exception, match="refused"):
        safe.unsafe_torch_load(str(tmp_path / "evil.pt"))
    assert not marker.exists()
    url = "https://example.com/models/thing.pth"
    with pytest.raises(FileNotFoundError, match="example.com/models/thing.pth"):
        modelloader.load_file_from_url(url, model_dir=str(tmp_path))
    Image.new("RGB", (1, 1)).save(tmp_path / "thing.pth", format="PNG")
    assert modelloader.load_file_from_url(url, model_dir=str(tmp_path)) == str(tmp_path / "thing.pth")
    assert modelloader.friendly_name(url) == "thing"
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "other.pth").write_bytes(b"x")
    assert modelloader.load_models(str(tmp_path), ext_filter=[".pth"]) == \
        [str(tmp_path / "thing.pth"), str(tmp_path / ".hidden" / "other.pth")]   # list_hidden_files is on
    assert modelloader.load_models(str(tmp_path / "none"), model_url=url) == [url]   # A1111: the caller downloads
