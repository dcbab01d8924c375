"""ControlNet preprocessors ("modules" in sd-webui-controlnet): a photo in, an annotation map out.

Names, aliases, sliders and Control Type filtering are the extension's. The maths lives in `annotators`;
networks load on first use from the annotator folder (`--controlnet-annotator-models-path`, default
`models/annotators`) and are never downloaded.

Files each preprocessor needs under models/annotators (from https://huggingface.co/lllyasviel/Annotators
unless the row says otherwise):

| preprocessor | files |
|---|---|
| none, invert, canny, threshold, blur_gaussian, tile_resample, scribble_xdog, lineart_standard, shuffle | — |
| softedge_hed, softedge_hedsafe, scribble_hed | ControlNetHED.pth |
| softedge_pidinet, softedge_pidisafe, scribble_pidinet | table5_pidinet.pth |
| depth_midas, normal_midas | dpt_hybrid-midas-501f0c75.pt |
| depth_leres | res101.pth |
| depth_zoe | ZoeD_M12_N.pt |
| depth_anything | depth-anything-small-hf/config.json, depth-anything-small-hf/model.safetensors (from https://huggingface.co/LiheYoung/depth-anything-small-hf) |
| mlsd | mlsd_large_512_fp32.pth |
| lineart_realistic | sk_model.pth |
| lineart_coarse | sk_model2.pth |
| lineart_anime | netG.pth |
| normal_bae | scannet.pt |
| openpose | body_pose_model.pth |
| openpose_hand | body_pose_model.pth, hand_pose_model.pth |
| openpose_face, openpose_faceonly | body_pose_model.pth, facenet.pth |
| openpose_full | body_pose_model.pth, hand_pose_model.pth, facenet.pth |
| seg_ufade20k | upernet-convnext-small/config.json, upernet-convnext-small/model.safetensors (from https://huggingface.co/openmmlab/upernet-convnext-small) |
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import PIL.Image
import torch

from modules.controlnet import annotators
from modules.models import files


class PreprocessorError(Exception):
    """A preprocessor that cannot run; the message says which and what to do."""


@dataclass(frozen=True)
class Slider:
    label: str
    value: float
    minimum: float
    maximum: float
    step: float = 1.0


@dataclass(frozen=True)
class Preprocessor:
    name: str
    control_type: str               # the extension's Control Type ("All" when it belongs to none in particular)
    resolution: Slider | None       # "Preprocessor Resolution"; None: the image is used as it is
    threshold_a: Slider | None
    threshold_b: Slider | None
    weight_files: tuple[str, ...]   # needed under the annotator folder; () = works out of the box
    aliases: tuple[str, ...] = ()   # the extension's internal name first, where it differs from `name`


# How a map is made: the network it needs (a key of annotators.NETWORKS, or None) and a function of
# (network, RGB array, map size, resolution, threshold a, threshold b) → RGB array.
@dataclass(frozen=True)
class _Recipe:
    network: str | None
    make: Callable[..., np.ndarray]


def _simple(operation: Callable[..., np.ndarray], *thresholds: str) -> _Recipe:
    """A weight-free map of the image resized to the map size; `thresholds` picks which of a / b it takes."""
    def make(_network, image, size, _resolution, a, b):
        values = {"a": a, "b": b}
        return operation(annotators.resize(image, size), *(values[name] for name in thresholds))
    return _Recipe(None, make)


def _detector(network: str, **options) -> _Recipe:
    """A controlnet_aux detector; `options` maps its keyword arguments to fixed values or to "a" / "b"."""
    def make(detector, image, size, resolution, a, b):
        values = {key: {"a": a, "b": b}.get(value, value) if isinstance(value, str) else value
                  for key, value in options.items()}
        return annotators.resize(annotators.run_detector(detector, image, resolution, **values), size)
    return _Recipe(network, make)


def _at_size(network: str, operation: Callable[..., np.ndarray]) -> _Recipe:
    """A transformers network run on the image resized to the map size."""
    return _Recipe(network, lambda net, image, size, _res, _a, _b: operation(net, annotators.resize(image, size)))


RESOLUTION = Slider("Preprocessor Resolution", 512, 64, 2048)
INVERT = "invert (from white bg & black line)"
LINEART_STANDARD = "lineart_standard (from white bg & black line)"


def _entry(name, control_type, recipe, a=None, b=None, aliases=(), resolution=RESOLUTION):
    network_files = annotators.NETWORKS[recipe.network].files if recipe.network else ()
    return Preprocessor(name, control_type, resolution, a, b, network_files, tuple(aliases)), recipe


_ENTRIES = [
    _entry("none", "All", _Recipe(None, lambda _n, image, *_: image), resolution=None),
    _entry(INVERT, "All", _Recipe(None, lambda _n, image, *_: annotators.invert(image)), aliases=("invert",),
           resolution=None),
    _entry("blur_gaussian", "Tile/Blur", _simple(annotators.blur_gaussian, "a"),
           Slider("Sigma", 9.0, 0.01, 64.0, 0.01)),
    _entry("canny", "Canny", _simple(annotators.canny, "a", "b"),
           Slider("Low Threshold", 100, 1, 255), Slider("High Threshold", 200, 1, 255)),
    _entry("depth_anything", "Depth", _at_size("depth_anything", annotators.depth_anything)),
    _entry("depth_leres", "Depth", _detector("leres", thr_a="a", thr_b="b", boost=False),
           Slider("Remove Near %", 0, 0, 100, 0.1), Slider("Remove Background %", 0, 0, 100, 0.1)),
    _entry("depth_midas", "Depth", _detector("midas"), aliases=("depth",)),
    _entry("depth_zoe", "Depth", _detector("zoe")),
    _entry("lineart_anime", "Lineart", _detector("lineart_anime")),
    _entry("lineart_coarse", "Lineart", _detector("lineart_coarse", coarse=True)),
    _entry("lineart_realistic", "Lineart", _detector("lineart", coarse=False), aliases=("lineart",)),
    _entry(LINEART_STANDARD, "Lineart", _simple(annotators.lineart_standard), aliases=("lineart_standard",)),
    _entry("mlsd", "MLSD", _detector("mlsd", thr_v="a", thr_d="b"),
           Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
           Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)),
    _entry("normal_bae", "NormalMap", _detector("normal_bae")),
    _entry("normal_midas", "NormalMap", _Recipe("midas", lambda net, image, size, res, a, b: annotators.resize(
        annotators.rgb(np.asarray(net(image, bg_th=a, depth_and_normal=True, detect_resolution=res,
                                      image_resolution=res, output_type="np")[1])), size)),
           Slider("Normal Background Threshold", 0.4, 0.0, 1.0, 0.01), aliases=("normal_map",)),
    _entry("openpose", "OpenPose", _detector("openpose", include_body=True)),
    _entry("openpose_face", "OpenPose", _detector("openpose_face", include_body=True, include_face=True)),
    _entry("openpose_faceonly", "OpenPose", _detector("openpose_face", include_body=False, include_face=True)),
    _entry("openpose_full", "OpenPose", _detector("openpose_full", include_body=True, include_hand=True,
                                                  include_face=True)),
    _entry("openpose_hand", "OpenPose", _detector("openpose_hand", include_body=True, include_hand=True)),
    _entry("scribble_hed", "Scribble/Sketch", _detector("hed", scribble=True)),
    _entry("scribble_pidinet", "Scribble/Sketch", _detector("pidinet", scribble=True, safe=False),
           aliases=("pidinet_scribble",)),
    _entry("scribble_xdog", "Scribble/Sketch", _simple(annotators.scribble_xdog, "a"),
           Slider("XDoG Threshold", 32, 1, 64)),
    _entry("seg_ufade20k", "Segmentation", _at_size("upernet", annotators.segment_ade20k), aliases=("segmentation",)),
    _entry("shuffle", "Shuffle", _simple(annotators.content_shuffle)),
    _entry("softedge_hed", "SoftEdge", _detector("hed", safe=False), aliases=("hed",)),
    _entry("softedge_hedsafe", "SoftEdge", _detector("hed", safe=True), aliases=("hed_safe",)),
    _entry("softedge_pidinet", "SoftEdge", _detector("pidinet", safe=False), aliases=("pidinet",)),
    _entry("softedge_pidisafe", "SoftEdge", _detector("pidinet", safe=True), aliases=("pidinet_safe",)),
    _entry("threshold", "All", _simple(annotators.threshold, "a"), Slider("Binarization Threshold", 127, 0, 255)),
    _entry("tile_resample", "Tile/Blur", _simple(annotators.tile_resample, "a"),
           Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01), resolution=None),
]
PREPROCESSORS: tuple[Preprocessor, ...] = tuple(preprocessor for preprocessor, _ in _ENTRIES)
_RECIPES: dict[str, _Recipe] = {preprocessor.name: recipe for preprocessor, recipe in _ENTRIES}

# The extension's Control Type radio: each type's default preprocessor (`preprocessor_filters`) and the
# extra name fragments that also select it (`preprocessor_filters_aliases`).
CONTROL_TYPE_DEFAULTS = {
    "All": "none", "Canny": "canny", "Depth": "depth_midas", "NormalMap": "normal_bae", "OpenPose": "openpose_full",
    "MLSD": "mlsd", "Lineart": LINEART_STANDARD, "SoftEdge": "softedge_pidinet", "Scribble/Sketch": "scribble_pidinet",
    "Segmentation": "seg_ofade20k", "Shuffle": "shuffle", "Tile/Blur": "tile_resample", "Inpaint": "inpaint_only",
    "InstructP2P": "none", "Reference": "reference_only", "Recolor": "recolor_luminance",
    "Revision": "revision_clipvision", "T2I-Adapter": "none", "IP-Adapter": "ip-adapter_clip_sd15",
    "Instant_ID": "instant_id", "SparseCtrl": "none",
}
CONTROL_TYPE_FRAGMENTS = {
    "instructp2p": ["ip2p"], "segmentation": ["seg"], "normalmap": ["normal"],
    "t2i-adapter": ["t2i_adapter", "t2iadapter", "t2ia"], "ip-adapter": ["ip_adapter", "ipadapter"],
    "scribble/sketch": ["scribble", "sketch"], "tile/blur": ["tile", "blur"], "openpose": ["openpose", "densepose"],
}
ANNOTATORS_REPOSITORY = "https://huggingface.co/lllyasviel/Annotators"
_FOLDER_SOURCES = {
    annotators.UPERNET_FOLDER: "https://huggingface.co/openmmlab/upernet-convnext-small",
    annotators.DEPTH_ANYTHING_FOLDER: "https://huggingface.co/LiheYoung/depth-anything-small-hf",
}


def name_matches_type(name: str, control_type: str) -> bool:
    """Whether a preprocessor's or model's name says it is of `control_type` (the extension's filter)."""
    pattern = control_type.lower()
    text = name.lower()
    return pattern in text or any(fragment in text for fragment in CONTROL_TYPE_FRAGMENTS.get(pattern, []))


def named_control_type(name: str) -> str | None:
    """The Control Type a model's name says (None when it names none: "my_guide.safetensors")."""
    stem = name.split("[")[0]
    return next((control_type for control_type in CONTROL_TYPE_DEFAULTS
                 if control_type != "All" and name_matches_type(stem, control_type)), None)


class _WeightReader:
    """Reads annotator weight files for one network, turning every failure into a PreprocessorError."""

    def __init__(self, folder: Path, preprocessor: str):
        self.folder = folder
        self.preprocessor = preprocessor

    def path(self, file: str) -> Path:
        path = self.folder / file
        if not path.is_file():
            subfolder, _, _ = file.rpartition("/")
            source = _FOLDER_SOURCES.get(subfolder, ANNOTATORS_REPOSITORY)
            raise PreprocessorError(
                f"Preprocessor {self.preprocessor} needs {file} in {self.folder}: download it from {source} "
                f"and put it in that folder (--controlnet-annotator-models-path sets another folder)")
        return path

    def __call__(self, file: str, key: str | None = None) -> dict[str, torch.Tensor]:
        path = self.path(file)
        try:
            data = files.load_object(path) if key else files.load_state_dict(path)
        except files.ModelFileError as error:
            raise PreprocessorError(f"Preprocessor {self.preprocessor}: cannot read {path}: {error}") from None
        if key:
            data = data.get(key) if isinstance(data, dict) else None
            if not isinstance(data, dict):
                raise PreprocessorError(f"Preprocessor {self.preprocessor}: {path} has no '{key}' weights")
            data = {name: value for name, value in data.items() if isinstance(value, torch.Tensor)}
        return data


def _value(slider: Slider | None, given: float | None) -> float | None:
    """The threshold to use: the given one, or the slider's default (None when the preprocessor has none)."""
    if slider is None:
        return None
    return slider.value if given is None else float(given)


class Preprocessors:
    """The preprocessor list and its loaded annotator networks (loaded on first use, kept until unload)."""

    def __init__(self, annotator_dir: Path, device: torch.device):
        self.annotator_dir = Path(annotator_dir)
        self.device = device
        self._by_name = {key.lower(): p for p in PREPROCESSORS for key in (p.name, *p.aliases)}
        self._networks: dict[str, object] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """ "none" and invert first, then the others sorted, as the extension lists them."""
        return [p.name for p in PREPROCESSORS[:2]] + sorted(p.name for p in PREPROCESSORS[2:])

    def find(self, name: str) -> Preprocessor | None:
        return self._by_name.get((name or "").strip().lower())

    def run(self, name: str, image: PIL.Image.Image, resolution: int = 512,
            threshold_a: float | None = None, threshold_b: float | None = None) -> PIL.Image.Image:
        """The map for `image` (RGB), its short side `resolution` rounded as controlnet_aux rounds it."""
        preprocessor = self._get(name)
        recipe = _RECIPES[preprocessor.name]
        if preprocessor.name == "none":
            return image
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if preprocessor.resolution is None:
            size = (pixels.shape[1], pixels.shape[0])
        else:
            resolution = int(resolution)
            if resolution < 1:
                raise PreprocessorError(
                    f"Preprocessor {preprocessor.name}: resolution must be positive, got {resolution}")
            size = annotators.target_size(pixels.shape[1], pixels.shape[0], resolution)
        a = _value(preprocessor.threshold_a, threshold_a)
        b = _value(preprocessor.threshold_b, threshold_b)
        network = self._network(preprocessor, recipe.network) if recipe.network else None
        result = recipe.make(network, pixels, size, resolution, a, b)
        return PIL.Image.fromarray(np.ascontiguousarray(annotators.rgb(result)), "RGB")

    def module_detail(self, name: str) -> dict:
        """The extension's `/controlnet/module_list?alias_names=true` detail for one preprocessor."""
        preprocessor = self._get(name)
        sliders = [{"name": s.label, "value": s.value, "min": s.minimum, "max": s.maximum, "step": s.step}
                   for s in (preprocessor.resolution, preprocessor.threshold_a, preprocessor.threshold_b)
                   if s is not None]
        return {"model_free": False, "sliders": sliders}

    def control_types(self, model_titles: list[str]) -> dict:
        """The extension's GET /controlnet/control_types body (its `select_control_type` for every type)."""
        modules = self.names()
        models = ["None", *(title for title in model_titles if title != "None")]
        body = {}
        for control_type, default_option in CONTROL_TYPE_DEFAULTS.items():
            pattern = control_type.lower()
            if pattern == "all":
                body[control_type] = {"module_list": modules, "model_list": models,
                                      "default_option": "none", "default_model": "None"}
                continue

            def matches(text: str) -> bool:
                return name_matches_type(text, control_type)

            module_list = [m for m in modules if matches(m) or m.lower() == "none"]
            if pattern in ("canny", "lineart", "scribble/sketch", "mlsd"):
                module_list += [m for m in modules if "invert" in m.lower()]
            model_list = [m for m in models if m.lower() == "none" or matches(m)]
            default_model = "None"
            if len(model_list) > 1:
                # The extension prefers a ControlNet 1.1 model ("11" in the name).
                default_model = next((m for m in model_list if "11" in m.split("[")[0]), model_list[1])
            body[control_type] = {
                "module_list": module_list, "model_list": model_list,
                "default_option": default_option if default_option in module_list else module_list[0],
                "default_model": default_model,
            }
        return {"control_types": body}

    def unload(self) -> None:
        with self._lock:
            self._networks.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------ internals

    def _get(self, name: str) -> Preprocessor:
        preprocessor = self.find(name)
        if preprocessor is None:
            raise PreprocessorError(f"Unknown preprocessor {name!r}; valid names: {', '.join(self.names())}")
        return preprocessor

    def _network(self, preprocessor: Preprocessor, key: str):
        with self._lock:
            if key not in self._networks:
                network = annotators.NETWORKS[key]
                reader = _WeightReader(self.annotator_dir, preprocessor.name)
                for file in network.files:   # every missing file is reported before anything is built
                    reader.path(file)
                try:
                    built = network.build(reader)
                except PreprocessorError:
                    raise
                except Exception as error:  # noqa: BLE001 - any failure to build from a user's file is theirs to fix
                    detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
                    raise PreprocessorError(
                        f"Preprocessor {preprocessor.name}: {', '.join(network.files)} in {self.annotator_dir} "
                        f"are not the weights it expects ({detail})") from None
                self._networks[key] = built.to(self.device)
            return self._networks[key]
