"""Temporary files a killed process left behind are removed at start, each once, and nothing else; a folder
inside another output folder is not walked twice (a big outputs folder costs one walk at start)."""
from __future__ import annotations

import os

from modules import cmd_args, paths as paths_module
from modules.output import leftovers


def test_leftovers_in_nested_output_folders_are_removed_and_walked_once(tmp_path, monkeypatch):
    paths = paths_module.from_args(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    nested = paths.outputs / "log" / "images"   # an output folder (💾 Save's) inside the outputs folder
    nested.mkdir(parents=True)
    leftover = nested / ".0123456789abcdef.tmp"
    leftover.write_bytes(b"half an image")
    kept = nested / "00001-1.png"
    kept.write_bytes(b"an image")
    visits = []
    real_walk = os.walk

    def counting_walk(top, *args, **kwargs):
        for root, dirs, names in real_walk(top, *args, **kwargs):
            visits.append(os.path.realpath(root))
            yield root, dirs, names

    monkeypatch.setattr(leftovers.os, "walk", counting_walk)
    removed = leftovers.remove(paths, [nested, paths.outputs])
    assert removed == [leftover] and not leftover.exists() and kept.exists()
    assert visits.count(os.path.realpath(nested)) == 1
