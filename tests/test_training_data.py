"""The training data layer (issue 22): A1111's learning-rate schedules, datasets read from a folder (captions, sizes,
alpha as loss weight, bad files), prompts from templates, and the reproducible order of batches."""
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from modules.training.dataset import (
    DatasetEntry,
    DatasetError,
    batch_order,
    create_text,
    effective_gradient_steps,
    read_dataset,
    read_template,
)
from modules.training.learn_schedule import (
    LearnRateScheduler,
    ScheduleError,
    parse_schedule,
)

# --- learning-rate schedules ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, max_steps, current, expected", [
    ("0.005:100, 1e-3:1000", 500, 0, [(0.005, 100), (0.001, 500)]),
    ("0.005", 500, 0, [(0.005, 500)]),
    ("1e-3:-1", 800, 0, [(0.001, 800)]),
    ("0.01:10, 0.005:20, 0.001", 100, 0, [(0.01, 10), (0.005, 20), (0.001, 100)]),
    ("0.01:10, 0.005:20, 0.001", 100, 15, [(0.005, 20), (0.001, 100)]),   # resumed: pairs done are skipped
    ("0.01:10, 0.005:20, 0.001:-1", 100, 20, [(0.001, 100)]),
    ("0.1:50, 0.2:200, 0.3:300", 100, 0, [(0.1, 50), (0.2, 100)]),        # stops after the first step beyond max
    ("0.001, 0.5:10", 100, 0, [(0.001, 100)]),                           # a bare rate ends the list
    (" 0.1:10 ,, 0.2:20 ,", 100, 0, [(0.1, 10), (0.2, 20)]),
])
def test_schedule_is_read_as_a1111_reads_it(text, max_steps, current, expected):
    assert parse_schedule(text, max_steps, current) == expected


@pytest.mark.parametrize("text, problem", [
    ("abc", "'abc' is not a number"), ("0.1:x", "'x' is not a whole number"), ("", "empty"), (" , ", "empty"),
    ("-1", "positive"), ("0", "positive"), ("nan", "positive"), ("inf:10", "positive"), ("0.1:5:6", "more than one"),
    ("0.1:5, abc:10", "'abc' is not a number"),
])
def test_bad_schedules_are_refused_naming_the_text(text, problem):
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text, 100)
    message = str(caught.value)
    assert repr(text) in message and problem in message and "0.001:100, 0.00001:1000, 1e-5:10000" in message


def test_a_schedule_done_before_the_current_step_is_refused():
    with pytest.raises(ScheduleError, match="no rate is left after step 300"):
        parse_schedule("0.1:100, 0.01:200", 500, current_step=300)


def test_scheduler_changes_the_optimizer_rate_at_the_step_the_schedule_says():
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight, ], lr=0.1)
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1})
    scheduler = LearnRateScheduler("0.1:3, 0.01:5", max_steps=5)
    assert (scheduler.learn_rate, scheduler.end_step, scheduler.finished) == (0.1, 3, False)
    rates = []
    for step in range(6):
        scheduler.apply(optimizer, step)
        rates.append([group["lr"] for group in optimizer.param_groups])
    assert rates == [[0.1, 0.1]] * 3 + [[0.01, 0.01]] * 3
    assert scheduler.end_step == 5 and scheduler.finished


def test_scheduler_resumes_in_the_middle_of_its_schedule():
    scheduler = LearnRateScheduler("0.1:3, 0.01:5, 0.001", max_steps=10, current_step=4)
    assert (scheduler.learn_rate, scheduler.end_step) == (0.01, 5)
    assert not scheduler.step(4) and scheduler.step(5) and scheduler.learn_rate == 0.001
    assert not scheduler.step(10) and scheduler.finished


# --- reading a dataset ------------------------------------------------------------------------------------------

def _write_dataset(folder: Path) -> Path:
    folder.mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(folder / "a_red.png")
    (folder / "a_red.txt").write_text("red square, plain\n", encoding="utf-8")
    Image.new("L", (24, 16), 0).save(folder / "b_grey.png")
    rgba = Image.new("RGBA", (16, 16), (0, 0, 255, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))
    rgba.save(folder / "c_alpha.png")
    Image.new("P", (24, 16), 3).save(folder / "00012-d palette cat.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(folder / "e_cmyk.tif")
    (folder / "f_broken.png").write_bytes(b"not a png at all")
    (folder / "notes.md").write_text("not part of the dataset")
    return folder


def test_dataset_reads_every_image_with_its_caption(tmp_path, caplog):
    entries = read_dataset(_write_dataset(tmp_path / "data"), width=32, height=24)
    assert [entry.path.name for entry in entries] == [
        "00012-d palette cat.png", "a_red.png", "b_grey.png", "c_alpha.png", "e_cmyk.tif"]
    assert [entry.filename_text for entry in entries] == ["d palette cat", "red square, plain", "b_grey", "c_alpha",
                                                          "e_cmyk"]
    for entry in entries:
        assert entry.size == (32, 24) and entry.pixels.shape == (3, 24, 32) and entry.pixels.dtype == torch.float32
        assert -1.0 <= entry.pixels.min() and entry.pixels.max() <= 1.0
        assert entry.alpha is None
    red = entries[1].pixels
    assert torch.allclose(red[:, 5, 5], torch.tensor([1.0, -1.0, -1.0]))
    cmyk = entries[4].pixels[:, 5, 5]
    assert cmyk[0] > 0.9 and cmyk[1] < -0.9 and cmyk[2] < -0.9           # CMYK red is red
    assert "f_broken.png" in caplog.text                                 # skipped with a warning


def test_alpha_is_kept_only_as_loss_weight_when_asked(tmp_path):
    folder = _write_dataset(tmp_path / "data")
    entries = {entry.path.name: entry for entry in read_dataset(folder, width=16, height=16, use_weight=True)}
    alpha = entries["c_alpha.png"].alpha
    assert alpha.mode == "L" and alpha.size == (16, 16)
    assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((5, 5)) == 255
    assert all(entry.alpha is None for name, entry in entries.items() if name != "c_alpha.png")


def test_varsize_keeps_each_size_rounded_down_to_a_multiple_of_8(tmp_path):
    folder = tmp_path / "sizes"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "square.png")
    Image.new("RGB", (30, 21)).save(folder / "odd.png")
    Image.new("RGB", (5, 40)).save(folder / "thin.png")
    entries = read_dataset(folder, width=512, height=512, varsize=True)
    assert {entry.path.name: entry.size for entry in entries} == {"odd.png": (24, 16), "square.png": (16, 16)}
    assert {entry.path.name: tuple(entry.pixels.shape) for entry in entries} == {
        "odd.png": (3, 16, 24), "square.png": (3, 16, 16)}


def test_filename_words_are_picked_and_joined(tmp_path):
    folder = tmp_path / "words"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "001-a_red_cat.png")
    [entry] = read_dataset(folder, width=8, height=8, filename_word_regex=r"[a-z]+", filename_join_string=", ")
    assert entry.filename_text == "a, red, cat"
    with pytest.raises(DatasetError, match="Filename word regex"):
        read_dataset(folder, width=8, height=8, filename_word_regex="([a-z")


def test_a_dataset_folder_must_be_given():
    with pytest.raises(DatasetError, match="folder is not given"):
        read_dataset("", width=8, height=8)


def test_a_filename_regex_that_backtracks_without_end_is_stopped(tmp_path):
    folder = tmp_path / "slow"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / ("a" * 40 + "!.png"))
    with pytest.raises(DatasetError, match="takes too long to match a+!.png"):
        read_dataset(folder, width=8, height=8, filename_word_regex=r"(a|aa)+$")


@pytest.mark.parametrize("kind, problem", [("missing", "does not exist"), ("file", "is not a folder"),
                                           ("empty", "is empty")])
def test_unusable_folders_are_refused_naming_them(tmp_path, kind, problem):
    folder = tmp_path / kind
    if kind == "file":
        folder.write_bytes(b"x")
    elif kind == "empty":
        folder.mkdir()
    with pytest.raises(DatasetError, match=problem) as caught:
        read_dataset(folder, width=8, height=8)
    assert str(folder) in str(caught.value)


def test_a_folder_without_a_readable_image_lists_what_was_skipped(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"garbage")
    (folder / "readme.md").write_text("hello")
    (folder / "x.txt").write_text("a caption")
    with pytest.raises(DatasetError) as caught:
        read_dataset(folder, width=8, height=8)
    message = str(caught.value)
    assert str(folder) in message and "x.png: not a supported image" in message and "readme.md: not an image" in message
    only_captions = tmp_path / "captions"
    only_captions.mkdir()
    (only_captions / "a.txt").write_text("a caption")
    with pytest.raises(DatasetError, match="only captions"):
        read_dataset(only_captions, width=8, height=8)


@pytest.mark.parametrize("width, height", [(0, 8), (8, 12), (-8, 8), (8.0, 8)])
def test_training_size_must_be_a_positive_multiple_of_8(tmp_path, width, height):
    with pytest.raises(DatasetError, match="multiple of 8"):
        read_dataset(_write_dataset(tmp_path / "data"), width=width, height=height)


def test_a_caption_that_is_not_utf8_skips_its_image(tmp_path):
    folder = tmp_path / "captions"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "good.png")
    Image.new("RGB", (8, 8)).save(folder / "latin.png")
    (folder / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert [entry.path.name for entry in read_dataset(folder, width=8, height=8)] == ["good.png"]


# --- templates and prompts --------------------------------------------------------------------------------------

def test_template_lines_are_read_and_bad_templates_refused(tmp_path):
    template = tmp_path / "style.txt"
    template.write_text("a painting of [name]\n\n  a [filewords] by [name]  \n", encoding="utf-8")
    assert read_template(template) == ["a painting of [name]", "a [filewords] by [name]"]
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    for path, problem in ((tmp_path / "none.txt", "does not exist"), (blank, "is empty")):
        with pytest.raises(DatasetError, match=problem) as caught:
            read_template(path)
        assert str(path) in str(caught.value)


def test_create_text_fills_the_template_reproducibly():
    lines = ["a photo of [name], [filewords]", "[name] as [filewords]"]
    caption = "red,square,plain,small"
    first = [create_text(caption, "mytoken", lines, random.Random(7), shuffle_tags=True) for _ in range(3)]
    assert len(set(first)) == 1                                             # the same seed, the same prompt
    many = {create_text(caption, "mytoken", lines, random.Random(seed)) for seed in range(20)}
    assert many == {"a photo of mytoken, red,square,plain,small", "mytoken as red,square,plain,small"}
    rng = random.Random(3)
    shuffled = [create_text(caption, "tok", ["[filewords]"], rng, shuffle_tags=True) for _ in range(20)]
    assert all(sorted(text.split(",")) == sorted(caption.split(",")) for text in shuffled)
    assert len(set(shuffled)) > 1
    assert create_text(caption, "tok", ["[name]: [filewords]"], random.Random(1), tag_drop_out=1.0) == "tok: "
    kept = create_text(caption, "tok", ["[filewords]"], random.Random(1), tag_drop_out=0.5).split(",")
    assert set(kept) < set(caption.split(","))


# --- batches ----------------------------------------------------------------------------------------------------

def _entries(*sizes):
    return [DatasetEntry(path=Path(f"{index}.png"), filename_text="", pixels=torch.zeros(1), alpha=None, size=size)
            for index, size in enumerate(sizes)]


def test_batches_never_mix_sizes_and_an_epoch_uses_every_image_once():
    entries = _entries(*[(16, 16)] * 6, *[(24, 16)] * 4, *[(16, 24)] * 2)
    order = batch_order(entries, 2, seed=5, epoch=0)
    assert len(order) == 6 and all(len(batch) == 2 for batch in order)
    assert sorted(index for batch in order for index in batch) == list(range(12))
    assert all(len({entries[index].size for index in batch}) == 1 for batch in order)
    assert batch_order(entries, 1, seed=5, epoch=0) != batch_order(entries, 1, seed=5, epoch=1)
    assert sorted(index for [index] in batch_order(entries, 1, seed=5, epoch=3)) == list(range(12))


def test_batch_order_is_a_function_of_its_arguments():
    entries = _entries(*[(16, 16)] * 7, *[(24, 16)] * 5)
    assert batch_order(entries, 3, seed=1, epoch=4) == batch_order(entries, 3, seed=1, epoch=4)
    assert batch_order(entries, 3, seed=1, epoch=4) != batch_order(entries, 3, seed=1, epoch=5)
    assert batch_order(entries, 3, seed=1, epoch=4) != batch_order(entries, 3, seed=2, epoch=4)


def test_uneven_groups_give_a1111s_number_of_full_single_size_batches():
    entries = _entries(*[(16, 16)] * 7, *[(24, 16)] * 5, (8, 8))
    for epoch in range(10):
        order = batch_order(entries, 3, seed=0, epoch=epoch)
        assert len(order) == 13 // 3
        for batch in order:
            assert len(batch) == 3 == len(set(batch))
            assert len({entries[index].size for index in batch}) == 1
    # The one batch beyond the full ones goes to a group by its images left over: 1 of 16x16, 2 of 24x16.
    wider = [sum(entries[index].size == (24, 16) for batch in batch_order(entries, 3, seed=0, epoch=epoch)
                 for index in batch) for epoch in range(300)]
    assert set(wider) == {3, 6}
    from_wider = wider.count(6)
    assert 160 < from_wider < 240
    drawn_epoch = wider.index(6)                                         # its leftovers go first: all 5 are seen
    seen = {index for batch in batch_order(entries, 3, seed=0, epoch=drawn_epoch) for index in batch}
    assert set(range(7, 12)) <= seen
    tiny_groups = _entries((8, 8), (16, 16), (24, 16))                   # no group fills a batch of 2
    [batch] = batch_order(tiny_groups, 2, seed=0, epoch=0)
    assert len(batch) == 2 and len(set(batch)) == 1                      # one image twice, as A1111 may draw it


def test_batch_size_and_gradient_steps_are_clipped_to_the_dataset():
    assert batch_order(_entries((8, 8), (8, 8)), 5, seed=0, epoch=0) in ([[0, 1]], [[1, 0]])
    assert effective_gradient_steps(10, 3, 8) == 3
    assert effective_gradient_steps(10, 3, 2) == 2
    assert effective_gradient_steps(4, 10, 5) == 1


def test_progress_text_is_a1111s_line_with_the_step_of_the_total():
    from modules.training.common import progress_text

    # the epoch of the step just done, as A1111 counts it: step 4 of 4-step epochs ends epoch 0
    assert progress_text("Training textual inversion", 4, 10, 4, 0.5, 0) == \
        "Training textual inversion [Epoch 0: 4/4] loss: 0.5000000 (step 4/10)"
    assert progress_text("Training LoRA x", 5, 10, 4, 0.25, 3) == \
        "Training LoRA x [Epoch 1: 1/4] loss: 0.2500000 (step 5/10, resumed from 3)"


def test_an_embedding_or_hypernetwork_name_never_makes_a_hidden_file():
    from modules.training.embedding_files import EmbeddingFileError, file_name
    from modules.training.hypernetwork_files import HypernetworkFileError, file_name as hypernetwork_file_name

    assert file_name("../x") == "x" and file_name(" .my.style ") == "my.style" and file_name("a/b") == "ab"
    assert hypernetwork_file_name("..\\\\net") == "net"
    with pytest.raises(EmbeddingFileError, match="no usable characters"):
        file_name("../..")
    with pytest.raises(HypernetworkFileError, match="no usable characters"):
        hypernetwork_file_name("...")


def test_a_name_too_long_for_a_file_is_refused_naming_the_field():
    """200 characters can be 400 bytes in UTF-8: a file name holds 255. Refused up front (a 422), not an OSError."""
    from pydantic import ValidationError

    from modules.training.controlnet_training import TrainControlNetRequest
    from modules.training.lora_requests import TrainLoraRequest
    from modules.training.requests import CreateEmbeddingRequest, CreateHypernetworkRequest

    long_name = "ü" * 200
    for model, fields in ((CreateEmbeddingRequest, {}), (CreateHypernetworkRequest, {}),
                          (TrainLoraRequest, {"data_root": "d"}),
                          (TrainControlNetRequest, {"data_root": "d", "condition_folder": "c"})):
        with pytest.raises(ValidationError, match="400 bytes") as raised:
            model(name=long_name, **fields)
        assert raised.value.errors()[0]["loc"] == ("name",)
        model(name="ü" * 100, **fields)   # 200 bytes: fits


def test_a_resumed_trainings_eta_counts_from_the_step_it_began_at():
    """The progress is of the whole training (step 60 of 100: 60%); the ETA comes from this job's own pace: 10
    steps since step 50 took 10 s, so 40 steps take 40 s (not the 6.7 s that 60% done in 10 s would say)."""
    import time

    from modules.jobs import Job

    job = Job(id="resumed", kind="train-lora", run=lambda _job: None, state="running", started=time.time() - 10)
    job.set_progress(60, 100, first_step=50)
    assert job.progress == 0.6 and job.eta == pytest.approx(40, abs=0.5)
    job.set_progress(50, 100)   # nothing done yet in this job: no ETA
    assert job.eta is None


def test_a_dataset_of_subfolders_says_they_are_folders(tmp_path):
    """kohya's `10_name/` layout: the images are one level down; the error says the folders are not read."""
    (tmp_path / "10_cat").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "10_cat" / "a.png")
    with pytest.raises(DatasetError, match=r"10_cat/: a folder \(only the images directly"):
        read_dataset(tmp_path, width=64, height=64)


def test_an_interrupted_training_of_our_kinds_says_so_in_the_api_answer(tmp_path):
    from modules.training.common import TrainingResult

    lora = TrainingResult("lora", "x", tmp_path / "x.safetensors", 3, None, interrupted=True)
    assert lora.info.startswith("train lora interrupted at step 3: filename: ")
    # A1111's kinds answer as A1111 does, interrupted or not
    embedding = TrainingResult("embedding", "x", tmp_path / "x.pt", 3, None, interrupted=True)
    assert embedding.info == f"train embedding complete: filename: {tmp_path / 'x.pt'} error: None"
