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
                                          width=64, height=64, flip=True))
    names = sorted(path.name for path in result.written)
    assert names == ["00001-0-gray.png", "00001-1-gray.png", "00002-0-wide.png", "00002-1-wide.png"]
    assert all(Image.open(path).size == (64, 64) and Image.open(path).mode == "RGB" for path in result.written)
    first, flipped = (Image.open(tmp_path / "out" / f"00002-{i}-wide.png") for i in (0, 1))
    assert np.array_equal(np.asarray(first)[:, ::-1], np.asarray(flipped))
    assert (tmp_path / "out" / "00002-0-wide.txt").read_text() == "a wide thing"
    assert not (tmp_path / "out" / "00001-0-gray.txt").exists()
    assert result.skipped and "broken.png" in result.skipped[0]
    # prepared again into the same folder: the first run's files stay
    again = preprocess(PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out"),
                                         width=64, height=64))
    assert len(again.written) == 2 and all(path.name.startswith("0000") for path in again.written)
    assert len(list((tmp_path / "out").glob("*.png"))) == 6


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
