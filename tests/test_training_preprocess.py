"""Dataset preparation (issue 22, Train → Prepare): a folder of images in, a training folder out — centre crop to
the size, oversized images split into overlapping pieces, a crop around the focal point, an auto-sized crop,
flipped copies, captions kept beside each output; bad folders refused with nothing written."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from modules.jobs import JobError
from modules.training.preprocess import (PreprocessRequest, autosized_crop, focal_crop, preprocess,
                                         split_oversized)


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def test_a_folder_is_cropped_flipped_and_captioned(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    picture(200, 100).save(source / "wide.png")
    picture(90, 120, 1).convert("L").save(source / "gray.jpg")
    (source / "wide.txt").write_text("a wide thing\n")
    (source / "notes.md").write_text("not an image")
    (source / "broken.png").write_bytes(b"not a png")
    result = preprocess(PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out"),
                                          width=64, height=64, flip=True, existing_caption="copy"))
    names = sorted(path.name for path in result.written)
    assert names == ["00001-0-gray.png", "00001-1-gray.png", "00002-0-wide.png", "00002-1-wide.png"]
    assert all(Image.open(path).size == (64, 64) and Image.open(path).mode == "RGB" for path in result.written)
    first, flipped = (Image.open(tmp_path / "out" / f"00002-{i}-wide.png") for i in (0, 1))
    assert np.array_equal(np.asarray(first)[:, ::-1], np.asarray(flipped))
    assert (tmp_path / "out" / "00002-0-wide.txt").read_text() == "a wide thing"
    assert not (tmp_path / "out" / "00001-0-gray.txt").exists()
    assert result.skipped and "broken.png" in result.skipped[0]


def test_split_oversized_cuts_overlapping_pieces_along_the_long_side():
    tall = picture(100, 400)
    pieces = split_oversized(tall, 64, 64, threshold=0.5, overlap=0.2)
    assert pieces and len(pieces) == 5 and all(piece.size == (64, 64) for piece in pieces)
    assert split_oversized(picture(100, 120), 64, 64, threshold=0.5, overlap=0.2) is None   # not oversized
    wide = split_oversized(picture(400, 100), 64, 64, threshold=0.5, overlap=0.0)
    assert len(wide) == 4


def test_focal_crop_follows_the_busy_part():
    image = Image.new("RGB", (300, 100), (128, 128, 128))
    image.paste(picture(60, 60, 3), (220, 20))   # all the detail is on the right
    request = PreprocessRequest(source_folder="x", destination_folder="y", focal_crop=True,
                                focal_face_weight=0.0)
    cropped = focal_crop(image, 64, 64, request)
    left_half = np.asarray(cropped)[:, :32].std()
    assert cropped.size == (64, 64) and left_half > 10   # the plain left of the picture was not chosen


def test_autosized_crop_picks_a_size_within_the_bounds():
    request = PreprocessRequest(source_folder="x", destination_folder="y", autosized_crop=True, min_dimension=64,
                                max_dimension=256, min_area=64 * 64, max_area=256 * 256, error_threshold=0.2)
    cropped = autosized_crop(picture(400, 200), request)
    assert cropped.size == (256, 128)
    assert autosized_crop(picture(400, 40), request) is None   # no size near 10:1 fits


def test_bad_folders_are_refused_with_nothing_written(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for source, words in ((tmp_path / "missing", "does not exist"), (empty, "no image")):
        with pytest.raises(JobError, match=words):
            preprocess(PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
    with pytest.raises(JobError, match="must not be the source"):
        preprocess(PreprocessRequest(source_folder=str(empty), destination_folder=str(empty)))
    with pytest.raises(ValidationError, match="width"):
        PreprocessRequest(source_folder="a", destination_folder="b", width=100)


class WordsInterrogator:
    """Stands in for the interrogator: fixed texts per model, and the images it was asked about."""

    def __init__(self):
        self.seen = []

    def interrogate(self, image, model, settings):
        self.seen.append((model, image.size))
        return {"clip": "a leaf on grass", "deepdanbooru": "leaf, green"}[model]


def leaf_folder(tmp_path, caption: str | None = "my leaf"):
    source = tmp_path / "photos"
    source.mkdir()
    picture(80, 64).save(source / "leaf.png")
    if caption is not None:
        (source / "leaf.txt").write_text(caption + "\n")
    return source


@pytest.mark.parametrize("captioners", [["BLIP"], ["Deepbooru", "BLIP"], ["Deepbooru"]])
def test_a_missing_captioner_fails_with_nothing_written(tmp_path, captioners):
    import torch

    from modules.postprocess.interrogate.interrogator import Interrogator

    source = leaf_folder(tmp_path)
    interrogator = Interrogator(tmp_path / "models", tmp_path, torch.device("cpu"), torch.float32)   # no weights
    (tmp_path / "existing").mkdir()
    for destination in (tmp_path / "new" / "out", tmp_path / "existing"):
        request = PreprocessRequest(source_folder=str(source), destination_folder=str(destination), width=64,
                                    height=64, flip=True, captioners=captioners)
        with pytest.raises(JobError, match="model_base_caption|model-resnet_custom_v3"):
            preprocess(request, interrogator=interrogator, settings={})
    assert not (tmp_path / "new").exists()
    assert not list((tmp_path / "existing").iterdir())


@pytest.mark.parametrize("action, expected", [
    ("ignore", "a leaf on grass, leaf, green"),
    ("copy", "my leaf"),
    ("prepend", "my leaf a leaf on grass, leaf, green"),
    ("append", "a leaf on grass, leaf, green my leaf"),
])
def test_captions_are_blip_then_tags_combined_with_the_existing_one_as_a1111(tmp_path, action, expected):
    source = leaf_folder(tmp_path)
    request = PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out"), width=64,
                                height=64, existing_caption=action, captioners=["Deepbooru", "BLIP"])
    preprocess(request, interrogator=WordsInterrogator(), settings={})
    assert (tmp_path / "out" / "00000-0-leaf.txt").read_text() == expected


def test_the_existing_caption_is_ignored_by_default_and_an_empty_caption_writes_no_txt(tmp_path):
    source = leaf_folder(tmp_path)
    request = PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out"), width=64,
                                height=64)
    assert request.existing_caption == "ignore"
    preprocess(request)
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["00000-0-leaf.png"]
    for action in ("prepend", "append", "copy"):
        preprocess(request.model_copy(update={"existing_caption": action}))
        assert (tmp_path / "out" / "00000-0-leaf.txt").read_text() == "my leaf"
    with pytest.raises(ValidationError, match="existing_caption"):
        PreprocessRequest(source_folder="a", destination_folder="b", existing_caption="merge")


def test_copy_with_no_existing_caption_keeps_the_generated_one(tmp_path):
    source = leaf_folder(tmp_path, caption=None)
    request = PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out"), width=64,
                                height=64, existing_caption="copy", captioners=["BLIP"])
    preprocess(request, interrogator=WordsInterrogator(), settings={})
    assert (tmp_path / "out" / "00000-0-leaf.txt").read_text() == "a leaf on grass"


def test_an_image_no_auto_size_fits_is_skipped_and_named(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    picture(400, 40).save(source / "strip.png")
    picture(200, 100, 1).save(source / "wide.png")
    result = preprocess(PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out"),
                                          autosized_crop=True, min_dimension=64, max_dimension=256,
                                          max_area=256 * 256, error_threshold=0.1))
    assert [path.name for path in result.written] == ["00001-0-wide.png"]
    assert Image.open(result.written[0]).size == (256, 128)
    assert result.skipped == ["strip.png: skipped 400x40 image (can't find suitable size within error threshold)"]


def test_every_chosen_operation_adds_its_pieces_each_followed_by_its_flipped_copy(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    picture(100, 400).save(source / "tall.png")
    result = preprocess(PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out"),
                                          width=64, height=64, split=True, autosized_crop=True, min_dimension=64,
                                          max_dimension=128, max_area=128 * 128, error_threshold=0.5,
                                          keep_original_size=True, flip=True))
    sizes = [Image.open(path).size for path in result.written]
    # five split pieces, the auto-sized crop, the original — each followed by its mirror image
    assert [path.name for path in result.written] == [f"00000-{index}-tall.png" for index in range(14)]
    assert sizes == [(64, 64)] * 10 + [(64, 128)] * 2 + [(100, 400)] * 2
    for index in range(0, 14, 2):
        piece, mirrored = (np.asarray(Image.open(result.written[i])) for i in (index, index + 1))
        assert np.array_equal(piece[:, ::-1], mirrored)
    assert np.array_equal(np.asarray(Image.open(result.written[12])), np.asarray(picture(100, 400)))


def test_preparing_again_replaces_the_same_names(tmp_path):
    source = leaf_folder(tmp_path)
    request = PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out"), width=64,
                                height=64, existing_caption="copy")
    first = preprocess(request)
    second = preprocess(request.model_copy(update={"width": 128, "existing_caption": "ignore"}))
    assert [path.name for path in first.written] == [path.name for path in second.written] == ["00000-0-leaf.png"]
    assert Image.open(second.written[0]).size == (128, 64)
    # the first run's caption went with the image it replaced
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["00000-0-leaf.png"]


def test_focal_crop_ignores_corners_in_the_bottom_tenth(tmp_path):
    """A1111 greys out the bottom tenth before looking for corners, so a watermark there does not pull the crop."""
    image = Image.new("RGB", (320, 64), (128, 128, 128))
    image.paste(picture(60, 6, 5), (250, 58))   # a "watermark" in the bottom-right corner
    request = PreprocessRequest(source_folder="x", destination_folder="y", focal_crop=True, focal_face_weight=0.0,
                                focal_entropy_weight=0.0, focal_edges_weight=1.0)
    cropped = focal_crop(image, 64, 64, request)
    assert np.asarray(cropped).std() == 0   # the middle of the plain picture, not the watermark
