"""A1111's `modules.scripts_postprocessing`: the classes an Extras-tab script is written with, so an extension that
ships one (beside its txt2img/img2img scripts) imports. This web UI's Extras tab does not run `ScriptPostprocessing`
classes (docs/extensions.md): the Extras pipeline is the project's own (`postprocess/`)."""
from __future__ import annotations


class PostprocessedImageSharedInfo:
    target_width = None
    target_height = None


class PostprocessedImage:
    """One image going through A1111's Extras scripts, with what they add to its file name and infotext."""

    def __init__(self, image):
        self.image = image
        self.info: dict = {}
        self.shared = PostprocessedImageSharedInfo()
        self.extra_images: list = []
        self.nametags: list[str] = []
        self.disable_processing = False
        self.caption = None

    def get_suffix(self, used_suffixes=None) -> str:
        used_suffixes = {} if used_suffixes is None else used_suffixes
        suffix = "-".join(self.nametags)
        if suffix:
            suffix = "-" + suffix
        if suffix not in used_suffixes:
            used_suffixes[suffix] = 1
            return suffix
        for number in range(1, 100):
            candidate = f"{suffix}-{number:02d}" if suffix else f"-{number:02d}"
            if candidate not in used_suffixes:
                used_suffixes[candidate] = 1
                return candidate
        return suffix

    def create_copy(self, new_image, *, nametags=None, disable_processing=False) -> "PostprocessedImage":
        copy = PostprocessedImage(new_image)
        copy.info, copy.shared, copy.caption = dict(self.info), self.shared, self.caption
        copy.nametags = self.nametags + list(nametags or [])
        copy.disable_processing = disable_processing
        return copy


class ScriptPostprocessing:
    """A1111's base class of an Extras script (`ui()`, `process(pp, **args)`); not run here."""

    filename = None
    controls = None
    args_from = None
    args_to = None
    order = 1000
    name = None

    def ui(self):
        return {}

    def process(self, pp: PostprocessedImage, **args):
        return None

    def process_firstpass(self, pp: PostprocessedImage, **args):
        return None

    def image_changed(self):
        return None
