"""A1111's file-name patterns (`images.FilenameGenerator`, `sanitize_filename_part`): "[seed]-[prompt_spaces]",
"[date]", "[datetime<%Y%m%d>]", "[model_name]", ... turned into a file or folder name for one image.

Extensions build names with them (`FilenameGenerator(p, seed, prompt, image).apply("[seed]")`), and A1111's
`images.save_image` names its folders and files with the settings `directories_filename_pattern` and
`samples_filename_pattern`. A pattern this web UI does not know is kept as written, as in A1111.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import re
import string
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from modules.addons import running

# Characters a file name may not hold on the system it is written on (A1111's sets).
INVALID_CHARS = '#<>:"/\\|?*\n\r\t' if os.name == "nt" else "/"
MAX_PART_LENGTH = 128   # A1111's --filenames-max-length default

_NON_LETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + "]+")
_PATTERN = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
_PATTERN_ARG = re.compile(r"(.*)<([^>]*)>$")
_SKIP = object()   # "this key has nothing to say here": its text before it is dropped too (A1111)
DEFAULT_TIME_FORMAT = "%Y%m%d%H%M%S"


def sanitize_filename_part(text: str | None, replace_spaces: bool = True) -> str | None:
    """A piece of text made safe inside a file name (A1111's rules): spaces to "_" if asked, forbidden characters
    to "_", no leading space, no trailing space or dot, at most MAX_PART_LENGTH characters."""
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(char): "_" for char in INVALID_CHARS})
    return text.lstrip(" ")[:MAX_PART_LENGTH].rstrip(" .")


def _setting(key: str, default):
    """A setting of the running server (A1111's FilenameGenerator reads `opts`); `default` before it has started."""
    try:
        return getattr(running.services().options, key)
    except (RuntimeError, AttributeError):
        return default


def _hash(text: str, *args) -> str:
    length = int(args[0]) if args and args[0] else 8
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class FilenameGenerator:
    """`apply(pattern)` replaces each known "[key]" (with optional "<argument>"s) by this image's value."""

    def __init__(self, p, seed, prompt, image, zip: bool = False, basename: str = ""):
        self.p, self.seed, self.prompt, self.image, self.zip, self.basename = p, seed, prompt, image, zip, basename

    def _p(self, name: str, default=None):
        return getattr(self.p, name, default) if self.p is not None else default

    def _batched(self) -> bool:
        return self._p("batch_size", 1) > 1 and not self.zip

    replacements = {
        "basename": lambda self: self.basename or "img",
        "seed": lambda self: self.seed if self.seed is not None else "",
        "seed_first": lambda self: (self._p("all_seeds") or [self.seed])[0] if self._p("batch_size", 1) > 1
        else self.seed,
        "seed_last": lambda self: (self._p("all_seeds") or [self.seed])[-1] if self._p("batch_size", 1) > 1
        else _SKIP,
        "steps": lambda self: self._p("steps"),
        "cfg": lambda self: self._p("cfg_scale"),
        "width": lambda self: self.image.width,
        "height": lambda self: self.image.height,
        "styles": lambda self: self.p and sanitize_filename_part(
            ", ".join(style for style in self._p("styles", []) if style != "None") or "None", replace_spaces=False),
        "sampler": lambda self: self.p and sanitize_filename_part(self._p("sampler_name"), replace_spaces=False),
        "scheduler": lambda self: self.p and sanitize_filename_part(self._p("scheduler"), replace_spaces=False),
        "model_name": lambda self: self._checkpoint(lambda info: Path(info.filename).stem),   # A1111's name_for_extra
        "model_hash": lambda self: self._checkpoint(lambda info: info.shorthash),
        "date": lambda self: datetime.datetime.now().strftime("%Y-%m-%d"),
        "datetime": lambda self, *args: self._datetime(*args),
        "job_timestamp": lambda self: self._p("job_timestamp") or datetime.datetime.now().strftime(DEFAULT_TIME_FORMAT),
        "prompt_hash": lambda self, *args: _hash(self.prompt or "", *args),
        "negative_prompt_hash": lambda self, *args: _hash(self._p("negative_prompt", ""), *args),
        "full_prompt_hash": lambda self, *args: _hash(f"{self._p('prompt', '')} {self._p('negative_prompt', '')}",
                                                      *args),
        "prompt": lambda self: sanitize_filename_part(self.prompt),
        "prompt_spaces": lambda self: sanitize_filename_part(self.prompt, replace_spaces=False),
        "prompt_words": lambda self: self._prompt_words(),
        "batch_number": lambda self: self._p("batch_index", 0) + 1 if self._batched() else _SKIP,
        "batch_size": lambda self: self._p("batch_size", 1),
        "generation_number": lambda self: (self._p("iteration", 0) * self._p("batch_size", 1)
                                           + self._p("batch_index", 0) + 1)
        if (self._p("n_iter", 1) > 1 or self._batched()) else _SKIP,
        "clip_skip": lambda self: _setting("CLIP_stop_at_last_layers", 1),
        "denoising": lambda self: self._p("denoising_strength") or _SKIP,
        "user": lambda self: self._p("user"),
        "none": lambda self: "",
        "image_hash": lambda self, *args: hashlib.sha256(self.image.tobytes()).hexdigest()[
            :int(args[0]) if args and args[0] else None],
    }

    def _checkpoint(self, field):
        """`field(info)` of the checkpoint in use (p's, else the loaded one), file-name safe; None if none."""
        model = self._p("sd_model")
        if model is None:
            try:
                model = running.services().models.current
            except RuntimeError:
                model = None
        info = getattr(model, "info", None)
        value = field(info) if info is not None else None
        return sanitize_filename_part(value, replace_spaces=False) if value else None

    def _prompt_words(self) -> str:
        words = [word for word in _NON_LETTERS.split(self.prompt or "") if word] or ["empty"]
        return sanitize_filename_part(" ".join(words[:_setting("directories_max_prompt_words", 8)]),
                                      replace_spaces=False)

    def _datetime(self, *args) -> str:
        try:
            zone = ZoneInfo(args[1]) if len(args) > 1 else None
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
        now = datetime.datetime.now().astimezone(zone)
        try:
            text = now.strftime(args[0] if args and args[0] else DEFAULT_TIME_FORMAT)
        except (ValueError, TypeError):
            text = now.strftime(DEFAULT_TIME_FORMAT)
        return sanitize_filename_part(text, replace_spaces=False)

    def apply(self, pattern: str) -> str:
        result = ""
        for match in _PATTERN.finditer(pattern):
            text, key = match.groups()
            if key is None:
                result += text
                continue
            arguments = []
            while (argument := _PATTERN_ARG.match(key)) is not None:
                key, value = argument.groups()
                arguments.insert(0, value)
            replace = self.replacements.get(key.lower())
            value = replace(self, *arguments) if replace is not None else None
            if value is _SKIP:
                continue
            result += text + (str(value) if value is not None else f"[{key}]")
        return result
