"""The buttons under a generation gallery without a browser: 💾 writes the images with their infotext and a log.csv
line (A1111's columns), 🗃️ a zip of them, nothing half-written when the disk refuses; 📂 opens the folder
through a replaceable opener and only shows on a server for this machine."""
from __future__ import annotations

import csv
import io
import zipfile
from types import SimpleNamespace

import pytest
from PIL import Image

from modules import cmd_args, images
from modules.output import gallery_files
from modules.ui import gallery_buttons

INFOTEXTS = [
    "a red fox\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 101, Size: 64x64, "
    "Model hash: 0123456789, Model: tiny-sd1",
    "a red fox\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 102, Size: 64x64, "
    "Model hash: 0123456789, Model: tiny-sd1",
]
INFO = {"width": 64, "height": 64, "sampler_name": "Euler a", "cfg_scale": 7.0, "steps": 2,
        "sd_model_name": "tiny-sd1", "sd_model_hash": "0123456789"}
SETTINGS = {"save_selected_only": True, "save_write_log_csv": True, "use_save_to_dirs_for_ui": False,
            "samples_format": "png", "enable_pnginfo": True}


def generation(first: int = 0, infotexts=INFOTEXTS) -> dict:
    return {"infotexts": list(infotexts), "index_of_first_image": first, "info": dict(INFO)}


@pytest.fixture
def pictures(tmp_path):
    """Two gallery images as Gradio hands them to a handler: files in its cache."""
    paths = []
    for index, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        path = tmp_path / "gradio-cache" / f"image{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (64, 64), colour).save(path)
        paths.append(path)
    return paths


def rows(folder):
    with open(folder / "log.csv", encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


def test_save_without_a_pick_writes_every_image_with_its_infotext_and_one_csv_line(tmp_path, pictures):
    folder = tmp_path / "log" / "images"
    saved = gallery_files.save_images(pictures, generation(), SETTINGS, folder)
    assert saved.names == ["00000-101.png", "00001-102.png"]
    for path, text, colour in zip(saved.files, INFOTEXTS, ((200, 30, 30), (30, 30, 200))):
        with Image.open(path) as image:
            assert image.info["parameters"] == text
            assert image.convert("RGB").getpixel((5, 5)) == colour
    header, line = rows(folder)
    assert header == ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename",
                      "negative_prompt", "sd_model_name", "sd_model_hash"]
    assert line == ["a red fox", "101", "64", "64", "Euler a", "7.0", "2", "00000-101.png", "blurry", "tiny-sd1",
                    "0123456789"]
    assert not list(folder.glob(".*.tmp"))


def test_the_picked_image_alone_is_saved_and_each_save_adds_a_line(tmp_path, pictures):
    folder = tmp_path / "saves"
    saved = gallery_files.save_images(pictures, generation(), SETTINGS, folder, selected=1)
    assert saved.names == ["00000-102.png"]
    gallery_files.save_images(pictures, generation(), SETTINGS, folder, selected=0)
    assert [line[1] for line in rows(folder)[1:]] == ["102", "101"]
    assert [line[7] for line in rows(folder)[1:]] == ["00000-102.png", "00001-101.png"]
    # with save_selected_only off, or the grid picked, all are saved
    every = gallery_files.save_images(pictures, generation(), {**SETTINGS, "save_selected_only": False}, folder,
                                      selected=1)
    assert len(every.files) == 2
    grid_picked = gallery_files.save_images(pictures, generation(first=1, infotexts=INFOTEXTS), SETTINGS, folder,
                                            selected=0)
    assert len(grid_picked.files) == 2


def test_zip_holds_the_saved_images_and_is_offered_first(tmp_path, pictures):
    folder = tmp_path / "log" / "images"
    saved = gallery_files.save_images(pictures, generation(), SETTINGS, folder, make_zip=True)
    assert saved.archive is not None and saved.archive.parent == folder
    assert saved.archive.name.endswith("_[tiny-sd1]_101-102.zip")
    assert saved.downloads[0] == saved.archive
    with zipfile.ZipFile(saved.archive) as archive:
        assert archive.namelist() == saved.names
        for name, path in zip(saved.names, saved.files):
            assert archive.read(name) == path.read_bytes()
            with Image.open(io.BytesIO(archive.read(name))) as image:
                assert image.info["parameters"] in INFOTEXTS
    assert len(rows(folder)) == 2   # the zip button saves (and logs) like 💾
    again = gallery_files.write_zip(folder, saved.archive.stem, saved)   # the same name in the same second
    assert again.name == f"{saved.archive.stem}-1.zip" and zipfile.ZipFile(saved.archive).namelist() == saved.names


def test_an_older_log_gets_the_new_header_and_its_rows_padded(tmp_path, pictures):
    folder = tmp_path / "saves"
    folder.mkdir()
    (folder / "log.csv").write_text("prompt,seed,width,height,sampler,cfgs,steps,filename,negative_prompt\n"
                                    "old,1,512,512,Euler,7,20,00000-1.png,\n", encoding="utf-8")
    gallery_files.save_images(pictures, generation(), SETTINGS, folder, selected=0)
    header, old, new = rows(folder)
    assert header == gallery_files.CSV_FIELDS
    assert old == ["old", "1", "512", "512", "Euler", "7", "20", "00000-1.png", "", "", ""]
    assert new[0] == "a red fox"


def test_no_csv_with_the_setting_off_and_grid_and_map_images_without_infotext_still_save(tmp_path, pictures):
    folder = tmp_path / "saves"
    saved = gallery_files.save_images(pictures, generation(infotexts=INFOTEXTS[:1]),
                                      {**SETTINGS, "save_write_log_csv": False}, folder, selected=1)
    assert not (folder / "log.csv").exists()
    with Image.open(saved.files[0]) as image:   # a ControlNet map after the images: no infotext of its own
        assert "parameters" not in image.info
    assert saved.names == ["00000.png"]
    named = gallery_files.save_images(pictures, {**generation(infotexts=INFOTEXTS[:1]), "seeds": [101]},
                                      SETTINGS, folder, selected=1)
    assert named.names == ["00001-101.png"]   # after its job's seed


def test_a_refused_write_leaves_the_log_as_it_was_and_no_temporary_file(tmp_path, pictures, monkeypatch):
    folder = tmp_path / "saves"
    gallery_files.save_images(pictures, generation(), SETTINGS, folder, selected=0)
    before = (folder / "log.csv").read_bytes()
    real_replace = images.os.replace

    def full_disk(source, target):
        if str(target).endswith(("log.csv", ".zip")):
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(images.os, "replace", full_disk)
    with pytest.raises(gallery_files.SaveError, match="No space left on device"):
        gallery_files.save_images(pictures, generation(), SETTINGS, folder, selected=1)
    assert (folder / "log.csv").read_bytes() == before
    assert not list(folder.rglob(".*.tmp"))
    with pytest.raises(gallery_files.SaveError, match="generate one first"):
        gallery_files.save_images([], generation(), SETTINGS, folder)


def test_open_folder_uses_the_given_opener_and_says_what_is_missing(tmp_path, monkeypatch):
    opened = []
    assert gallery_files.open_folder(tmp_path, launch=opened.append) == f"Opened {tmp_path}."
    assert opened == [tmp_path.resolve()]
    monkeypatch.setattr(gallery_files, "file_browser", opened.append)   # the default opener, replaced
    gallery_files.open_folder(tmp_path)
    assert opened == [tmp_path.resolve()] * 2
    assert "does not exist yet" in gallery_files.open_folder(tmp_path / "nothing-yet")
    (tmp_path / "file.txt").write_text("x")
    assert "is not a folder" in gallery_files.open_folder(tmp_path / "file.txt")
    assert len(opened) == 2


def test_the_folder_button_shows_only_on_a_local_server_without_hide_ui_dir_config(tmp_path):
    def shown(*flags):
        return gallery_buttons.folder_button_shown(cmd_args.parse_args(["--data-dir", str(tmp_path), *flags]))

    assert shown()
    assert not shown("--listen")
    assert not shown("--server-name", "pc.example")
    assert not shown("--hide-ui-dir-config")


def test_the_save_folder_is_served_only_when_it_is_not_the_data_folder_or_above(tmp_path):
    def services(outdir_save):
        return SimpleNamespace(paths=SimpleNamespace(data=tmp_path / "data"),
                               options=SimpleNamespace(get=lambda key: outdir_save))

    assert gallery_buttons.servable_save_folder(services("log/images")) == (tmp_path / "data/log/images").resolve()
    assert gallery_buttons.servable_save_folder(services(".")) is None
    assert gallery_buttons.servable_save_folder(services("..")) is None


def test_the_open_folder_target_is_the_last_saved_images_folder(tmp_path):
    data = tmp_path / "data"
    dated = data / "outputs" / "txt2img-images" / "2026-01-01"
    dated.mkdir(parents=True)
    services = SimpleNamespace(paths=SimpleNamespace(data=data),
                               options=SimpleNamespace(get=lambda key: {"outdir_txt2img_samples":
                                                                        "outputs/txt2img-images"}.get(key)))
    assert gallery_buttons.folder_to_open(services, "txt2img", {}) == (data / "outputs/txt2img-images").resolve()
    saved = {"saved": [str(dated / "00000-1.png")]}
    assert gallery_buttons.folder_to_open(services, "txt2img", saved) == dated
