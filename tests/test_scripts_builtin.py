"""The built-in scripts: X/Y/Z plot, Prompt matrix, Prompts from file or textbox, and img2img's Loopback,
Poor man's outpainting, Outpainting mk2 and SD upscale; labelled grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, services as services_module
from modules.output import grids
from modules.output.infotext import parse_infotext
from modules.generation.request import validate_request
from modules.jobs import JobError
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.pictures import photo

SMALL = {"width": 64, "height": 64, "steps": 2}
LEGEND = grids.font_size(64, 64)
ROW_LABELS = max(64 * 3 // 4, LEGEND * 4)     # the width of the row-label column for 64 px cells

# A1111's positional X/Y/Z args (v1.10.1): axis types are indices into the tab's axis list
XYZ_TXT2IMG = {"Nothing": 0, "Seed": 1, "Steps": 4, "CFG Scale": 6, "Sampler": 9, "Checkpoint name": 11}


def xyz_args(x=(0, ""), y=(0, ""), z=(0, ""), *, legend=True, sub_images=False, sub_grids=False,
             keep_random=False, vary=(False, False, False), margin=0, csv_mode=False) -> list:
    return [x[0], x[1], [], y[0], y[1], [], z[0], z[1], [], legend, sub_images, sub_grids, keep_random, *vary,
            margin, csv_mode]


# ------------------------------------------------------------------ value syntax

@pytest.mark.parametrize("text, kind, expected", [
    ("1-5", int, [1, 2, 3, 4, 5]),
    ("1-5 (+2)", int, [1, 3, 5]),
    ("10-1 (-3)", int, [10, 7, 4, 1]),
    ("1-10 [5]", int, [1, 3, 5, 7, 10]),
    ("1.5-2.5 (+0.5)", float, [1.5, 2.0, 2.5]),
    ("0-1 [3]", float, [0.0, 0.5, 1.0]),
    ("0.1-0.3 (+0.1)", float, [0.1, 0.2, 0.3]),
    ("-1", int, [-1]),
    ("7.5", float, [7.5]),
])
def test_axis_ranges(text, kind, expected):
    assert grids.expand_numbers([text], kind) == expected


def test_axis_lists_and_quoted_csv_values():
    assert grids.expand_numbers(grids.csv_values("1, 3-4, 10"), int) == [1, 3, 4, 10]
    assert grids.csv_values('"a cat, sitting", a dog,  "x" ') == ["a cat, sitting", "a dog", "x"]
    assert grids.csv_values(grids.csv_string(["Euler a", "DPM++ 2M, Karras"])) == ["Euler a", "DPM++ 2M, Karras"]


@pytest.mark.parametrize("text, kind, message", [
    ("abc", int, "'abc' is not a whole number"),
    ("1.5", int, "'1.5' is not a whole number"),
    ("1-100000000", int, "at most"),
    ("1-5 (+0)", int, "step must not be 0"),
    ("5-1 (+1)", float, "step must go from"),
])
def test_axis_value_errors_name_the_value(text, kind, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        grids.expand_numbers([text], kind)


# ------------------------------------------------------------------ grid drawing

def cells_grid(cols: int, rows: int, size: int = 64) -> Image.Image:
    return Image.new("RGB", (cols * size, rows * size), (120, 160, 200))


def dark_pixels(region: Image.Image) -> int:
    return int((np.asarray(region.convert("L")) < 128).sum())


def test_grid_annotations_size_and_labels():
    hor = [[grids.GridAnnotation(f"CFG Scale: {v}")] for v in (5, 6, 7)]
    ver = [[grids.GridAnnotation(f"Steps: {v}")] for v in (2, 3)]
    result = grids.draw_grid_annotations(cells_grid(3, 2), 64, 64, hor, ver, margin=4)
    pad_top = result.height - (2 * 64 + 4)
    assert result.width == ROW_LABELS + 3 * 64 + 2 * 4
    assert pad_top >= LEGEND                                      # room for a line of text at least
    top_band = result.crop((ROW_LABELS, 0, result.width, pad_top))
    left_band = result.crop((0, pad_top, ROW_LABELS, result.height))
    assert dark_pixels(top_band) > 20 and dark_pixels(left_band) > 20        # labels drawn
    # each column and each row has its own label
    for col in range(3):
        x = ROW_LABELS + col * (64 + 4)
        assert dark_pixels(result.crop((x, 0, x + 64, pad_top))) > 5
    for row in range(2):
        y = pad_top + row * (64 + 4)
        assert dark_pixels(result.crop((0, y, ROW_LABELS, y + 64))) > 5
    # the cells are pasted unchanged, with white margins between them
    assert result.getpixel((ROW_LABELS + 10, pad_top + 10)) == (120, 160, 200)
    assert result.getpixel((ROW_LABELS + 64 + 2, pad_top + 10)) == (255, 255, 255)


def test_label_band_grows_with_the_text_and_vanishes_without_it():
    one_line = grids.draw_grid_annotations(cells_grid(2, 1), 64, 64, [[grids.GridAnnotation("a")]] * 2,
                                           [[grids.GridAnnotation()]])
    long_text = "a long label that needs several lines"
    wrapped = grids.draw_grid_annotations(cells_grid(2, 1), 64, 64, [[grids.GridAnnotation(long_text)]] * 2,
                                          [[grids.GridAnnotation()]])
    bare = grids.draw_grid_annotations(cells_grid(2, 1), 64, 64, [[grids.GridAnnotation()]] * 2,
                                       [[grids.GridAnnotation()]])
    assert one_line.width == wrapped.width == bare.width == 128   # no row labels: no left column
    assert bare.height == 64
    assert wrapped.height - 64 > 2 * (one_line.height - 64)


def test_wrong_label_count_is_refused():
    with pytest.raises(ValueError, match="column labels"):
        grids.draw_grid_annotations(cells_grid(3, 1), 64, 64, [[grids.GridAnnotation("a")]] * 2,
                                    [[grids.GridAnnotation()]])


def test_prompt_matrix_labels_strike_out_missing_parts():
    drawn = grids.draw_prompt_matrix(cells_grid(2, 2), 64, 64, ["a cat", "in a hat", "on a mat"])
    assert drawn.width == ROW_LABELS + 128 and drawn.height > 128
    # the first column leaves "in a hat" out: its label is grey, the second column's black
    pad_top = drawn.height - 128
    first = np.asarray(drawn.crop((ROW_LABELS, 0, ROW_LABELS + 64, pad_top)).convert("L"))
    second = np.asarray(drawn.crop((ROW_LABELS + 64, 0, ROW_LABELS + 128, pad_top)).convert("L"))
    assert first.min() > 100 and second.min() < 60


def test_with_params_adds_keys_before_version():
    text = "a cat\nNegative prompt: ugly\nSteps: 2, Seed: 1, Version: v1.10.1"
    added = grids.with_params(text, {"Script": "X/Y/Z plot", "X Values": "1,2"})
    assert added == 'a cat\nNegative prompt: ugly\nSteps: 2, Seed: 1, Script: X/Y/Z plot, X Values: "1,2", ' \
                    "Version: v1.10.1"


# ------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def services(tmp_path_factory):
    checkpoints = {"tiny-a.safetensors": build_tiny_model("sd1"), "tiny-b.safetensors": build_tiny_model("sd1", 1)}
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), checkpoints)
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--disable-all-extensions"]))
    built.options.update({"sd_checkpoints_limit": 1}, from_api=False)
    built.load_scripts()
    from modules.ui import scripts as ui_scripts

    ui_scripts.record_defaults(built.generator.scripts)    # each script's default args, as --nowebui does
    yield built
    built.shutdown()


def run_script(services, script: str, args: list, **fields):
    request = validate_request({"prompt": "a photo of a cat", "checkpoint": "tiny-a", "seed": 5, **SMALL, **fields,
                                "selected_script": script, "extension_scripts": {script: args}},
                               services.registry, scripts=services.generator.scripts)
    job = services.submit_img2img(request) if request.init_images else services.submit_txt2img(request)
    assert job.done.wait(600)
    return job


def finished(job):
    assert job.state == "done", job.error
    return job.result


def files(services, folder: str) -> list[Path]:
    return sorted((services.paths.data / "outputs" / folder).rglob("*.png"))


def test_scripts_are_offered_in_their_tabs_in_a1111s_order(services):
    both = ["Prompt matrix", "Prompts from file or textbox", "X/Y/Z plot"]
    assert [s.title() for s in services.generator.scripts.txt2img.selectable_scripts] == both
    assert [s.title() for s in services.generator.scripts.img2img.selectable_scripts] == [
        "Loopback", "Outpainting mk2", "Poor man's outpainting", *both[:2], "SD upscale", both[2]]
    for runner in (services.generator.scripts.txt2img, services.generator.scripts.img2img):
        assert len(runner.defaults["x/y/z plot"]) == 18 and len(runner.defaults["prompt matrix"]) == 5
        assert len(runner.defaults["prompts from file or textbox"]) == 4


def test_xyz_steps_by_cfg_grid(services):
    samples, grid_files = len(files(services, "txt2img-images")), len(files(services, "txt2img-grids"))
    args = xyz_args(x=(XYZ_TXT2IMG["CFG Scale"], "5-7"), y=(XYZ_TXT2IMG["Steps"], "2,3"), margin=4,
                    sub_images=True)
    result = finished(run_script(services, "x/y/z plot", args))

    grid = result.images[0]
    pad_top = grid.height - (2 * 64 + 4)
    assert grid.width == ROW_LABELS + 3 * 64 + 2 * 4 and pad_top >= LEGEND
    assert dark_pixels(grid.crop((ROW_LABELS, 0, grid.width, pad_top))) > 20          # CFG labels
    assert dark_pixels(grid.crop((0, pad_top, ROW_LABELS, grid.height))) > 20         # Steps labels
    assert result.index_of_first_image == 1 and len(result.images) == 7

    # each cell: the axis values in its infotext, in grid order (x fastest), and the same seed everywhere
    cells = [parse_infotext(text) for text in result.infotexts[1:]]
    assert [(c["CFG scale"], c["Steps"]) for c in cells] == \
        [(cfg, steps) for steps in ("2", "3") for cfg in ("5.0", "6.0", "7.0")]
    assert {c["Seed"] for c in cells} == {"5"}
    # the cell images are the grid's cells
    first_cell = np.asarray(grid.crop((ROW_LABELS, pad_top, ROW_LABELS + 64, pad_top + 64)))
    assert np.array_equal(first_cell, np.asarray(result.images[1].convert("RGB")))

    grid_info = parse_infotext(result.infotexts[0])
    assert (grid_info["Script"], grid_info["X Type"], grid_info["X Values"]) == ("X/Y/Z plot", "CFG Scale", "5-7")
    assert (grid_info["Y Type"], grid_info["Y Values"]) == ("Steps", "2,3")
    assert len(files(services, "txt2img-images")) == samples + 6                # each cell saved
    saved_grids = files(services, "txt2img-grids")
    assert len(saved_grids) == grid_files + 1
    assert "Script: X/Y/Z plot" in Image.open(saved_grids[-1]).info["parameters"]


def test_xyz_only_the_grid_by_default_and_cells_unsaved_on_request(services):
    samples = len(files(services, "txt2img-images"))
    result = finished(run_script(services, "x/y/z plot", xyz_args(x=("Seed", "-1, -1")), save_images=False))
    grid = result.images[0]
    assert len(result.images) == 1 and grid.width == 128 and grid.height > 64   # Y is Nothing: no row labels
    assert len(files(services, "txt2img-images")) == samples
    info = parse_infotext(result.infotexts[0])
    fixed = info["Fixed X Values"].split(", ")
    assert len(fixed) == 2 and "-1" not in fixed                     # -1 became real seeds, written down


def test_xyz_checkpoint_axis_loads_each_checkpoint_once(services, monkeypatch):
    loads = []
    real_load = services.models._load
    monkeypatch.setattr(services.models, "_load", lambda info: loads.append(info.name) or real_load(info))
    services.queue.submit("settle", lambda job: None).done.wait(60)   # an earlier test's job has finished
    services.models.unload_all()
    # checkpoints on X would be the innermost loop (a, b, a, b with one model in memory); they go outermost
    args = xyz_args(x=(XYZ_TXT2IMG["Checkpoint name"], "tiny-a, tiny-b"), y=(XYZ_TXT2IMG["Steps"], "2,3"),
                    sub_images=True)
    result = finished(run_script(services, "x/y/z plot", args, save_images=False))
    assert sorted(loads) == ["tiny-a.safetensors", "tiny-b.safetensors"]
    models = [(parse_infotext(text)["Model"], parse_infotext(text)["Steps"]) for text in result.infotexts[1:]]
    assert models == [("tiny-a", "2"), ("tiny-b", "2"), ("tiny-a", "3"), ("tiny-b", "3")]
    assert result.images[0].width == ROW_LABELS + 2 * 64


def test_xyz_bad_sampler_fails_before_any_image(services):
    samples = len(files(services, "txt2img-images"))
    job = run_script(services, "x/y/z plot", xyz_args(x=(XYZ_TXT2IMG["Sampler"], "Euler, Eulr"), csv_mode=True))
    assert job.state == "failed" and job.error_kind is JobError
    assert "X value 'Eulr' (Sampler)" in job.error and "unknown sampler" in job.error
    assert len(files(services, "txt2img-images")) == samples


@pytest.mark.parametrize("args, message", [
    (xyz_args(x=(12, "1")), "'Negative Guidance minimum sigma' is not available"),
    (xyz_args(x=(99, "1")), "X type 99 is out of range"),
    (xyz_args(x=("Prompt S/R", "dog, cat")), "did not find 'dog'"),
    (xyz_args(y=("Steps", "2, two")), "'two' is not a whole number"),
])
def test_xyz_bad_axes_are_named(services, args, message):
    job = run_script(services, "x/y/z plot", args)
    assert job.state == "failed" and message in job.error


def test_xyz_token_merging_axis(services):
    args = xyz_args(x=("Token merging ratio", "0, 0.5"), sub_images=True)
    result = finished(run_script(services, "x/y/z plot", args))
    cells = [parse_infotext(text) for text in result.infotexts[1:]]
    assert [cell.get("Token merging ratio") for cell in cells] == [None, "0.5"]


@pytest.mark.parametrize("axis, values, key, expected", [
    ("Eta", "0.5, 1", "Eta", ["0.5", None]),
    ("Sigma noise", "0.9, 1", "Sigma noise", ["0.9", None]),
    ("RNG source", "NV, GPU", "RNG", ["NV", "GPU"]),   # (a missing RNG key reads as GPU)
])
def test_xyz_sampler_axes_take_effect(services, axis, values, key, expected):
    args = xyz_args(x=(axis, values), y=("Sampler", "DPM2 a"), sub_images=True)
    result = finished(run_script(services, "x/y/z plot", args, save_images=False))
    cells = result.images[1:]
    assert [parse_infotext(text).get(key) for text in result.infotexts[1:]] == expected
    assert not np.array_equal(np.asarray(cells[0]), np.asarray(cells[1]))


def test_xyz_z_axis_makes_a_grid_per_value_side_by_side(services):
    args = xyz_args(x=("Steps", "2,3"), z=("CFG Scale", "5, 6"), sub_grids=True, sub_images=True)
    result = finished(run_script(services, "x/y/z plot", args, save_images=False))
    main, *sub_grids = result.images[:result.index_of_first_image]
    assert len(sub_grids) == 2 and len(result.images) == 3 + 4
    assert sub_grids[0].size == sub_grids[1].size and sub_grids[0].width == 2 * 64
    assert main.width == 2 * sub_grids[0].width and main.height > sub_grids[0].height     # Z labels on top
    main_info, sub_info = parse_infotext(result.infotexts[0]), parse_infotext(result.infotexts[2])
    assert (main_info["Z Type"], main_info["Z Values"]) == ("CFG Scale", "5, 6")
    assert sub_info["X Type"] == "Steps" and "Z Type" not in sub_info and sub_info["CFG scale"] == "6.0"
    assert [parse_infotext(text)["CFG scale"] for text in result.infotexts[3:]] == ["5.0", "5.0", "6.0", "6.0"]


def test_xyz_interrupt_stops_at_the_next_cell(services, monkeypatch):
    real_generate = services.generator.generate

    def generate_then_interrupt(request, job, **kwargs):
        result = real_generate(request, job, **kwargs)
        job.interrupted = True
        return result

    monkeypatch.setattr(services.generator, "generate", generate_then_interrupt)
    job = run_script(services, "x/y/z plot", xyz_args(x=("Steps", "2,3,4"), sub_images=True), save_images=False)
    assert job.state == "interrupted"
    grid, done = job.result.images
    assert grid.width == 3 * 64 and parse_infotext(job.result.infotexts[1])["Steps"] == "2"
    pixels = np.asarray(grid.convert("L"))
    assert pixels[-64:, 64:].max() == 0 and pixels[-64:, :64].std() > 0     # cells not made are black


def test_xyz_in_img2img(services):
    request = validate_request({"prompt": "a cat", "checkpoint": "tiny-a", "seed": 3, **SMALL,
                                "init_images": [Image.new("RGB", (64, 64), (200, 80, 40))],
                                "selected_script": "x/y/z plot",
                                "extension_scripts": {"x/y/z plot": xyz_args(x=("Denoising", "0.5, 1"))}},
                               services.registry, scripts=services.generator.scripts)
    job = services.submit_img2img(request)
    assert job.done.wait(600)
    result = finished(job)
    assert parse_infotext(result.infotexts[0])["X Type"] == "Denoising"
    assert any("img2img-grids" in path for path in result.saved)


def test_prompt_matrix_makes_every_combination(services):
    grid_files = len(files(services, "txt2img-grids"))
    result = finished(run_script(services, "prompt matrix", [False, False, "positive", "comma", 0],
                                 prompt="a cat|in a hat|on a mat", save_images=False))
    assert len(result.images) == 1 + 4 and result.index_of_first_image == 1
    prompts = [parse_infotext(text)["Prompt"] for text in result.infotexts[1:]]
    assert prompts == ["a cat", "a cat, in a hat", "a cat, on a mat", "a cat, in a hat, on a mat"]
    assert {parse_infotext(text)["Seed"] for text in result.infotexts[1:]} == {"5"}
    grid = result.images[0]
    assert grid.width == ROW_LABELS + 2 * 64 and grid.height > 2 * 64
    assert len(files(services, "txt2img-grids")) == grid_files + 1


def test_prompt_matrix_options(services):
    result = finished(run_script(services, "prompt matrix", [True, True, "negative", "space", 2],
                                 negative_prompt="ugly|blurry", save_images=False))
    cells = [parse_infotext(text) for text in result.infotexts[1:]]
    assert [c["Negative prompt"] for c in cells] == ["ugly", "blurry ugly"]
    assert [c["Seed"] for c in cells] == ["5", "6"]
    assert result.images[0].width == 2 * 64 + 2           # one row of parts: no row labels, a 2 px margin


def test_prompts_from_file_with_per_line_options(services):
    lines = "\n".join(["a red apple", "", '--prompt "a blue car" --steps 3 --seed 7 --sampler_name "Euler a"',
                       "--prompt a green tree --negative_prompt blurry --width 72 --cfg_scale 4.5"])
    result = finished(run_script(services, "prompts from file or textbox", [False, False, "start", lines],
                                 prompt="", seed=11, save_images=False))
    infos = [parse_infotext(text) for text in result.infotexts]
    assert [i["Prompt"] for i in infos] == ["a red apple", "a blue car", "a green tree"]
    assert (infos[1]["Steps"], infos[1]["Seed"], infos[1]["Sampler"]) == ("3", "7", "Euler a")
    assert (infos[2]["Size-1"], infos[2]["CFG scale"], infos[2]["Negative prompt"]) == ("72", "4.5", "blurry")
    assert infos[0]["Seed"] == infos[2]["Seed"] == "11"
    assert result.images[2].size == (72, 64)


def test_prompts_from_file_seed_options_and_prompt_position(services):
    lines = "one\ntwo"
    iterated = finished(run_script(services, "prompts from file or textbox", [True, False, "end", lines],
                                   prompt="base", seed=-1, save_images=False))
    infos = [parse_infotext(text) for text in iterated.infotexts]
    assert [i["Prompt"] for i in infos] == ["base one", "base two"]
    assert int(infos[1]["Seed"]) == int(infos[0]["Seed"]) + 1
    same = finished(run_script(services, "prompts from file or textbox", [False, True, "start", lines],
                               prompt="", seed=-1, save_images=False))
    assert len({parse_infotext(text)["Seed"] for text in same.infotexts}) == 1


@pytest.mark.parametrize("lines, message", [
    ("a cat\n--prompt a dog --stepz 3", "line 2 ('--prompt a dog --stepz 3'): unknown option --stepz"),
    ("--prompt a dog --steps many", "line 1 ('--prompt a dog --steps many'): --steps 'many'"),
    ("--prompt a dog --sampler_name Eulr", "line 1"),
    ('--prompt "a dog', "line 1"),
])
def test_prompts_from_file_bad_line_fails_before_any_image(services, lines, message):
    samples = len(files(services, "txt2img-images"))
    job = run_script(services, "prompts from file or textbox", [False, False, "start", lines])
    assert job.state == "failed" and message in job.error
    assert len(files(services, "txt2img-images")) == samples


def test_xyz_progress_counts_every_cell_not_each_cell_anew(services, monkeypatch):
    seen = []
    real = services.generator.generate

    def recording(request, job, **kwargs):
        result = real(request, job, **kwargs)
        seen.append((job.image_index, job.image_count))   # what /progress reports as job_no / job_count
        return result

    monkeypatch.setattr(services.generator, "generate", recording)
    finished(run_script(services, "x/y/z plot", xyz_args(x=("Steps", "2,3"), y=("CFG Scale", "5,6,7")),
                        save_images=False))
    assert seen == [(index, 6) for index in range(6)]


def test_pasting_a_grid_infotext_sets_the_script_and_its_axes(services):
    import gradio as gr

    from modules.output.infotext import parse_infotext
    from modules.ui import scripts as scripts_ui

    with gr.Blocks():
        controls = scripts_ui.create(services.scripts.txt2img)
    xyz = services.scripts.txt2img.find_selectable("x/y/z plot")
    start, _ = controls.slices[xyz.name]
    x_type, x_values, _, y_type = controls.components[start:start + 4]   # its args: X type, X values, ..., Y type
    updates = controls.paste_updates(parse_infotext(
        'a cat\nSteps: 2, Seed: 5, Size: 64x64, Script: X/Y/Z plot, X Type: CFG Scale, X Values: "5-7", '
        'Y Type: Steps, Y Values: "2,3"'))
    assert updates[controls.chooser] == "X/Y/Z plot"
    assert updates[x_type] == XYZ_TXT2IMG["CFG Scale"] and updates[x_values] == "5-7"
    assert updates[y_type] == XYZ_TXT2IMG["Steps"]
    plain = controls.paste_updates(parse_infotext("a dog\nSteps: 2, Seed: 5, Size: 64x64"))
    assert plain == {controls.chooser: "None"}   # no Script key: back to None, axes untouched


def test_xyz_size_on_z_with_legend_makes_one_labelled_grid(services):
    result = finished(run_script(services, "x/y/z plot", xyz_args(x=("Steps", "2"), z=("Size", "64x64, 128x64")),
                                 save_images=False))
    grid = result.images[0]
    assert grid.width >= 2 * 128 and grid.height > 64   # two Z cells as wide as the widest, with labels


# ------------------------------------------------------------------ img2img's scripts (A1111's positional args)

def test_img2img_scripts_are_img2img_dropdown_scripts_in_a1111s_order(services):
    runner = services.generator.scripts.img2img
    names = [script.name for script in runner.selectable_scripts]
    assert names[:4] == ["loopback", "outpainting mk2", "poor man's outpainting", "prompt matrix"]
    assert "sd upscale" in names and "loopback" not in [s.name for s in services.generator.scripts.txt2img.scripts]


def test_loopback_feeds_each_output_back_in(services):
    result = finished(run_script(services, "loopback", [3, 0.3, "Aggressive", "None"], init_images=[photo()],
                                 denoising_strength=0.6))
    assert len(result.images) == 4 and result.index_of_first_image == 1   # grid + one image per loop
    strengths = [parse_infotext(text)["Denoising strength"] for text in result.infotexts[1:]]
    assert strengths[0] == "0.6" and strengths[2] == "0.3"
    assert float(strengths[1]) == pytest.approx(0.6 - 0.3 * 2 ** -0.5, abs=1e-3)   # the aggressive curve


@pytest.mark.parametrize("args, named", [([99], "loops"), ([4, 1.5], "final_denoising_strength"),
                                         ([4, 0.5, "Wavy"], "denoising_curve")])
def test_loopback_arguments_out_of_range_are_named(services, args, named):
    job = run_script(services, "loopback", args, init_images=[photo()])
    assert job.state == "failed" and job.error_kind is JobError and named in job.error


@pytest.mark.parametrize("script, args", [
    ("poor man's outpainting", [32, 0, 1, ["right", "down"]]),
    ("outpainting mk2", ["", 32, 0, ["right", "down"], 1.0, 0.05]),
])
def test_outpainting_extends_the_canvas_and_keeps_the_original(services, script, args):
    source = photo()
    result = finished(run_script(services, script, args, init_images=[source], denoising_strength=1.0))
    image = result.images[0]
    assert image.size == (96, 96)
    # away from the seam the original picture is untouched
    assert np.array_equal(np.asarray(image.convert("RGB"))[:48, :48], np.asarray(source)[:48, :48])


def test_sd_upscale_doubles_the_picture_tile_by_tile(services):
    lanczos = services.upscalers.names().index("Lanczos")
    result = finished(run_script(services, "sd upscale", ["", 16, lanczos, 2.0], init_images=[photo()],
                                 denoising_strength=0.3, save_images=True))
    image = result.images[0]
    assert image.size == (128, 128)
    assert "SD upscale upscaler: Lanczos" in image.info["parameters"]
    assert len(result.saved) == 1 and "img2img-images" in result.saved[0]
