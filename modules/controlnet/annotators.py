"""The annotator maths behind each ControlNet preprocessor: OpenCV for the weight-free ones, controlnet_aux
(and transformers) networks for the others.

Every map is an RGB uint8 array whose size follows controlnet_aux's `resize_image`: the short side scaled to
the resolution, both sides rounded to a multiple of 64.

Networks are built from their classes and given weights read by the caller's `Reader` (our weights-only
loader), never through the libraries' own `from_pretrained`: those call `torch.load` themselves and fall back
to a hub download when a folder is missing. controlnet_aux is imported on first use of a network: its
package import takes seconds, so the weight-free maps below use OpenCV directly instead of its detectors.
"""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import cv2
import numpy as np
import torch


class Reader(Protocol):
    def __call__(self, file: str, key: str | None = None) -> dict[str, torch.Tensor]:
        """The tensors of `file` (under the annotator folder), from its `key` entry when the file nests them."""

    def path(self, file: str) -> Path:
        """Where `file` is under the annotator folder (raising the caller's error when it is missing)."""


# ---------------------------------------------------------------- sizes


def target_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) of the map: controlnet_aux's rounding (short side → resolution, multiples of 64)."""
    scale = float(resolution) / min(width, height)
    return max(64, int(np.round(width * scale / 64.0)) * 64), max(64, int(np.round(height * scale / 64.0)) * 64)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` at `size` (width, height), with the interpolation controlnet_aux picks for up- or downscaling."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    upscaling = size[0] * size[1] > image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4 if upscaling else cv2.INTER_AREA)


def rgb(image: np.ndarray) -> np.ndarray:
    """A grey (H, W) or (H, W, 1) map as RGB."""
    if image.ndim == 2:
        image = image[:, :, None]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


# ---------------------------------------------------------------- weight-free maps (input already at map size)


def invert(image: np.ndarray) -> np.ndarray:
    return 255 - image


def canny(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return rgb(cv2.Canny(image, low, high))


def threshold(image: np.ndarray, level: float) -> np.ndarray:
    """White where every channel is above `level` (the extension's test, not a grey conversion)."""
    return rgb(np.where(image.min(axis=2) > level, 255, 0).astype(np.uint8))


def blur_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), float(sigma))


def tile_resample(image: np.ndarray, rate: float) -> np.ndarray:
    """Down-sampled by `rate` (the extension's tile_resample): the tile model re-adds the lost detail."""
    if rate < 1.1:
        return image
    height, width = image.shape[:2]
    return cv2.resize(image, (int(width / rate), int(height / rate)), interpolation=cv2.INTER_AREA)


def scribble_xdog(image: np.ndarray, level: float) -> np.ndarray:
    """The extension's XDoG scribble: a difference of Gaussians, thresholded."""
    pixels = image.astype(np.float32)
    dog = (255 - np.min(cv2.GaussianBlur(pixels, (0, 0), 5.0) - cv2.GaussianBlur(pixels, (0, 0), 0.5), axis=2))
    dog = dog.clip(0, 255).astype(np.uint8)
    return rgb(np.where(2 * (255 - dog.astype(np.int32)) > level, 255, 0).astype(np.uint8))


def lineart_standard(image: np.ndarray) -> np.ndarray:
    """controlnet_aux's LineartStandardDetector (dark lines on a light background → white lines on black)."""
    pixels = image.astype(np.float32)
    intensity = np.min(cv2.GaussianBlur(pixels, (0, 0), 6.0) - pixels, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong)) if strong.size else 0.0)
    return rgb((intensity * 127).clip(0, 255).astype(np.uint8))


def content_shuffle(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """controlnet_aux's ContentShuffleDetector with its own seeded generator, so a request always gives the
    same map (the original draws from numpy's global random state)."""
    generator = np.random.default_rng(seed)
    height, width = image.shape[:2]

    def noise_disk(scale: int = 256) -> np.ndarray:
        noise = generator.uniform(0, 1, size=(height // scale + 2, width // scale + 2))
        noise = cv2.resize(noise, (width + 2 * scale, height + 2 * scale), interpolation=cv2.INTER_CUBIC)
        noise = noise[scale:scale + height, scale:scale + width]
        noise -= noise.min()
        return noise / max(noise.max(), 1e-5)

    flow = np.stack([noise_disk() * (width - 1), noise_disk() * (height - 1)], axis=2).astype(np.float32)
    return cv2.remap(image, flow, None, cv2.INTER_LINEAR)


# ---------------------------------------------------------------- networks


@dataclass(frozen=True)
class Network:
    """An annotator network: the files it needs under the annotator folder and how to build it from them."""
    files: tuple[str, ...]
    build: Callable[[Reader], Any]   # → a detector object with `.to(device)`


def _ready(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True) -> torch.nn.Module:
    module.load_state_dict(state_dict, strict=strict)
    return module.float().eval()


def _strip(state_dict: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): value for key, value in state_dict.items()}


def _hed(read: Reader):
    from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

    return HEDdetector(_ready(ControlNetHED_Apache2(), read("ControlNetHED.pth")))


def _pidinet(read: Reader):
    from controlnet_aux.pidi import PidiNetDetector
    from controlnet_aux.pidi.model import pidinet

    return PidiNetDetector(_ready(pidinet(), _strip(read("table5_pidinet.pth"))))


def _mlsd(read: Reader):
    from controlnet_aux.mlsd import MLSDdetector
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

    return MLSDdetector(_ready(MobileV2_MLSD_Large(), read("mlsd_large_512_fp32.pth")))


def _lineart(file: str, read: Reader):
    from controlnet_aux.lineart import Generator, LineartDetector

    # The detector holds a fine and a coarse network; each preprocessor needs only its own file,
    # so both slots get the same one.
    net = _ready(Generator(3, 1, 3), read(file))
    return LineartDetector(net, net)


def _lineart_anime(read: Reader):
    from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator

    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    net = UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)
    return LineartAnimeDetector(_ready(net, _strip(read("netG.pth"))))


def _normal_bae(read: Reader):
    from controlnet_aux.normalbae import NormalBaeDetector
    from controlnet_aux.normalbae.nets.NNET import NNET

    args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet",
                                 sampling_ratio=0.4, importance_ratio=0.7)
    return NormalBaeDetector(_ready(NNET(args), _strip(read("scannet.pt", "model"))))


def _midas(read: Reader):
    from controlnet_aux.midas import MidasDetector
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    net = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    return MidasDetector(_ready(net, read("dpt_hybrid-midas-501f0c75.pt")))


def _zoe(read: Reader):
    from controlnet_aux.zoe import ZoeDetector
    from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
    from controlnet_aux.zoe.zoedepth.utils.config import get_config

    net = ZoeDepth.build_from_config(get_config("zoedepth", "infer"))   # offline: no pretrained resource
    # ZoeDepth's own load_state_dict maps key names between timm versions (it is what from_pretrained uses).
    net.load_state_dict(read("ZoeD_M12_N.pt", "model"))
    return ZoeDetector(net.float().eval())


def _leres(read: Reader):
    from controlnet_aux.leres import LeresDetector
    from controlnet_aux.leres.leres.multi_depth_model_woauxi import RelDepthModel

    net = _ready(RelDepthModel(backbone="resnext101"), _strip(read("res101.pth", "depth_model")))
    return LeresDetector(net, None)   # the pix2pix "boost" network is only for depth_leres++ (not offered)


def _openpose(read: Reader, hand: bool = False, face: bool = False):
    from controlnet_aux.open_pose import OpenposeDetector
    from controlnet_aux.open_pose import face as face_module
    from controlnet_aux.open_pose.body import Body, bodypose_model
    from controlnet_aux.open_pose.hand import Hand, handpose_model
    from controlnet_aux.open_pose.util import transfer

    # Body / Hand / Face torch.load a path in __init__; they are built around our loaded networks instead.
    body = Body.__new__(Body)
    body.model = bodypose_model()
    _ready(body.model, transfer(body.model, read("body_pose_model.pth")))
    hands = faces = None
    if hand:
        hands = Hand.__new__(Hand)
        hands.model = handpose_model()
        _ready(hands.model, transfer(hands.model, read("hand_pose_model.pth")))
    if face:
        faces = face_module.Face.__new__(face_module.Face)
        faces.inference_size = face_module.params["inference_img_size"]
        faces.sigma = face_module.params["gaussian_sigma"]
        faces.threshold = face_module.params["heatmap_peak_thresh"]
        faces.model = _ready(face_module.FaceNet(), read("facenet.pth"))
    return _Openpose(OpenposeDetector(body, hands, faces))


class _Openpose:
    """OpenposeDetector whose `.to` skips the hand / face networks it was built without."""

    def __init__(self, detector):
        self.detector = detector

    def to(self, device: torch.device):
        for part in (self.detector.body_estimation, self.detector.hand_estimation, self.detector.face_estimation):
            if part is not None:
                part.to(device)
        return self

    def __call__(self, *args, **kwargs):
        return self.detector(*args, **kwargs)


class _TransformersModel:
    """A transformers model read from a folder under the annotator folder (config.json + model.safetensors)."""

    def __init__(self, model):
        self.model = model

    def to(self, device: torch.device):
        self.model.to(device)
        return self


def _transformers_model(folder: str, class_name: str, read: Reader):
    import transformers

    read.path(f"{folder}/model.safetensors")
    model = getattr(transformers, class_name).from_pretrained(
        read.path(f"{folder}/config.json").parent, local_files_only=True, torch_dtype=torch.float32)
    return _TransformersModel(model.eval())


UPERNET_FOLDER = "upernet-convnext-small"
DEPTH_ANYTHING_FOLDER = "depth-anything-small-hf"

NETWORKS: dict[str, Network] = {
    "hed": Network(("ControlNetHED.pth",), _hed),
    "pidinet": Network(("table5_pidinet.pth",), _pidinet),
    "mlsd": Network(("mlsd_large_512_fp32.pth",), _mlsd),
    "lineart": Network(("sk_model.pth",), functools.partial(_lineart, "sk_model.pth")),
    "lineart_coarse": Network(("sk_model2.pth",), functools.partial(_lineart, "sk_model2.pth")),
    "lineart_anime": Network(("netG.pth",), _lineart_anime),
    "normal_bae": Network(("scannet.pt",), _normal_bae),
    "midas": Network(("dpt_hybrid-midas-501f0c75.pt",), _midas),
    "zoe": Network(("ZoeD_M12_N.pt",), _zoe),
    "leres": Network(("res101.pth",), _leres),
    "openpose": Network(("body_pose_model.pth",), _openpose),
    "openpose_hand": Network(("body_pose_model.pth", "hand_pose_model.pth"),
                             functools.partial(_openpose, hand=True)),
    "openpose_face": Network(("body_pose_model.pth", "facenet.pth"), functools.partial(_openpose, face=True)),
    "openpose_full": Network(("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                             functools.partial(_openpose, hand=True, face=True)),
    "upernet": Network((f"{UPERNET_FOLDER}/config.json", f"{UPERNET_FOLDER}/model.safetensors"),
                       functools.partial(_transformers_model, UPERNET_FOLDER, "UperNetForSemanticSegmentation")),
    "depth_anything": Network((f"{DEPTH_ANYTHING_FOLDER}/config.json", f"{DEPTH_ANYTHING_FOLDER}/model.safetensors"),
                              functools.partial(_transformers_model, DEPTH_ANYTHING_FOLDER,
                                                "DepthAnythingForDepthEstimation")),
}


# ---------------------------------------------------------------- running networks


def run_detector(detector, image: np.ndarray, resolution: int, **options) -> np.ndarray:
    """A controlnet_aux detector's map, detected and drawn at `resolution`."""
    result = detector(image, detect_resolution=resolution, image_resolution=resolution, output_type="np", **options)
    return rgb(np.asarray(result, dtype=np.uint8))


_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _pixels(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """ImageNet-normalised NCHW float input, as the transformers image processors of these models make it."""
    pixels = torch.from_numpy(image).float().div(255).permute(2, 0, 1)[None]
    return ((pixels - _IMAGENET_MEAN) / _IMAGENET_STD).to(device)


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def segment_ade20k(network: _TransformersModel, image: np.ndarray) -> np.ndarray:
    """UperNet's ADE20K classes drawn in the ADE20K palette the segmentation ControlNets were trained on."""
    from controlnet_aux.util import ade_palette

    logits = network.model(pixel_values=_pixels(image, _device(network.model))).logits
    classes = logits.argmax(dim=1)[0].cpu().numpy()
    palette = np.array(ade_palette(), dtype=np.uint8)
    return palette[classes % len(palette)]


@torch.inference_mode()
def depth_anything(network: _TransformersModel, image: np.ndarray) -> np.ndarray:
    """Depth Anything's relative depth (near = bright), normalised to 0–255."""
    height, width = image.shape[:2]
    # The ViT-14 backbone needs sides that are multiples of 14.
    side14 = (max(14, round(width / 14) * 14), max(14, round(height / 14) * 14))
    pixels = _pixels(cv2.resize(image, side14, interpolation=cv2.INTER_CUBIC), _device(network.model))
    depth = network.model(pixel_values=pixels).predicted_depth[0].float().cpu().numpy()
    depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_CUBIC)
    depth -= depth.min()
    depth /= max(float(depth.max()), 1e-6)
    return rgb((depth * 255.0).clip(0, 255).astype(np.uint8))
