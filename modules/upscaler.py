"""A1111's `modules.upscaler`: `UpscalerData` (the entries of `shared.sd_upscalers`, upscaling with the server's
upscalers as the Extras tab does) and the `Upscaler` base class extensions annotate with. Upscaler classes an
extension defines are not added to the server's list (the project's upscalers are files in `models/`)."""
from __future__ import annotations

from PIL import Image

from modules.addons.running import services


class Upscaler:
    """A1111's base: `upscale(img, scale)` runs `do_upscale` until the image reaches `scale` (at most 3 passes)."""

    name: str | None = None
    model_path: str | None = None
    scalers: list = []

    def __init__(self, create_dirs: bool = False):
        self.scale = 1

    def do_upscale(self, img: Image.Image, selected_model: str | None) -> Image.Image:
        return img

    def upscale(self, img: Image.Image, scale: float, selected_model: str | None = None) -> Image.Image:
        self.scale = scale
        width, height = int(img.width * scale) // 8 * 8, int(img.height * scale) // 8 * 8
        for _ in range(3):
            if img.width >= width and img.height >= height:
                break
            previous = img.size
            img = self.do_upscale(img, selected_model)
            if img.size == previous:
                break
        if img.size != (width, height):
            img = img.resize((width, height), resample=Image.Resampling.LANCZOS)
        return img


class UpscalerData:
    """One entry of `shared.sd_upscalers` (`name`, `data_path`, `scale`); its `scaler.upscale(img, scale, ...)` runs
    the server's upscaler of that name. Call it from a script's hook (the job's thread owns the device)."""

    def __init__(self, entry: dict):
        self.name = entry["name"]
        self.data_path = entry["model_path"]
        self.local_data_path = entry["model_path"]
        self.model_url = entry["model_url"]
        self.scale = entry["scale"] or 4
        self.scaler = self

    def upscale(self, img: Image.Image, scale: float, selected_model=None) -> Image.Image:
        return services().upscalers.upscale(img, scale, self.name)

    def __repr__(self) -> str:
        return f"UpscalerData({self.name!r})"


def server_upscalers() -> list[UpscalerData]:
    return [UpscalerData(entry) for entry in services().upscalers.api_list()]
