"""Where user data, models and outputs live, derived from the command-line flags."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# models/ sub-folders created on first run, with the README each gets.
MODEL_FOLDERS = {
    "Stable-diffusion": "Stable Diffusion checkpoints (.safetensors, .ckpt): SD 1.x, SD 2.x and SDXL, "
    "including inpainting models. Sub-folders are scanned too.\n"
    "A `<name>.yaml` next to a checkpoint with `parameterization: \"v\"` marks it as v-prediction.\n",
    "VAE": "VAE files (.safetensors, .pt, .ckpt) to use instead of the one inside a checkpoint.\n",
    "Lora": "LoRA and LyCORIS files (.safetensors), used with <lora:name:weight> in the prompt.\n",
    "ControlNet": "ControlNet models for guided generation: the original files (control_v11p_sd15_canny.pth, "
    "SD 2.1 and SDXL ones; .safetensors, .pth), single-file diffusers ControlNets, or diffusers folders "
    "(config.json + weights). Each is offered with checkpoints of its family (SD 1.x, SD 2.x, SDXL).\n",
    "hypernetworks": "Hypernetworks (.pt), used with <hypernet:name:weight> in the prompt.\n",
    "VAE-taesd": "Tiny VAE decoders for fast, full-size live previews (setting show_progress_type: TAESD): "
    "taesd_decoder.pth (SD 1.x/2.x) and taesdxl_decoder.pth (SDXL), from madebyollin/taesd; .safetensors works "
    "too. Without them previews use a cheap latent approximation.\n",
    "ESRGAN": "Upscaler models (.pth, .safetensors) for hires fix and Extras: ESRGAN and any other architecture "
    "spandrel loads (Real-ESRGAN, SwinIR, DAT, HAT, ...).\n",
    "RealESRGAN": "Real-ESRGAN upscaler models (.pth, .safetensors), e.g. RealESRGAN_x4plus.pth.\n",
    "DAT": "DAT upscaler models (.pth, .safetensors).\n",
    "HAT": "HAT upscaler models (.pth, .safetensors).\n",
    "SwinIR": "SwinIR upscaler models (.pth, .safetensors).\n",
    "ScuNET": "ScuNET models (.pth, .safetensors).\n",
    "GFPGAN": "GFPGAN face restoration: GFPGANv1.4.pth, and the face detector both restorers use: "
    "detection_Resnet50_Final.pth.\n",
    "Codeformer": "CodeFormer face restoration: codeformer-v0.1.0.pth (it also needs "
    "models/GFPGAN/detection_Resnet50_Final.pth, the face detector).\n",
    "annotators": "Weights for ControlNet preprocessors, under the names lllyasviel/Annotators uses: "
    "ControlNetHED.pth, table5_pidinet.pth, dpt_hybrid-midas-501f0c75.pt, res101.pth, ZoeD_M12_N.pt, "
    "mlsd_large_512_fp32.pth, sk_model.pth, sk_model2.pth, netG.pth, scannet.pt, body_pose_model.pth, "
    "hand_pose_model.pth, facenet.pth; folders depth-anything-small-hf/ and upernet-convnext-small/ "
    "(config.json + model.safetensors). The README's ControlNet section says which preprocessor needs "
    "which. Canny, invert, xdog, shuffle, tile and the other simple ones need none.\n",
}


@dataclass(frozen=True)
class Paths:
    data: Path
    models: Path
    checkpoints: Path
    vae: Path
    lora: Path
    embeddings: Path
    hypernetworks: Path
    controlnet: Path
    annotators: Path
    outputs: Path
    extensions: Path                 # the user's extensions (A1111's extensions/)
    config_file: Path                # settings (--ui-settings-file)
    ui_config_file: Path             # default values of UI controls (--ui-config-file)
    extensions_builtin: Path = PROJECT_ROOT / "extensions-builtin"   # the project's own extensions
    builtin_scripts: Path = PROJECT_ROOT / "scripts"                 # X/Y/Z plot, prompt matrix, ... (A1111's scripts/)
    # prompt templates for training ([name], [filewords]); A1111's folder name, in the web UI's folder
    training_templates: Path = PROJECT_ROOT / "textual_inversion_templates"

    @property
    def cache_file(self) -> Path:
        return self.data / "cache.json"

    @property
    def params_file(self) -> Path:
        return self.data / "params.txt"

    def outdir(self, name: str) -> Path:
        """An output folder such as 'txt2img-images' or 'txt2img-grids'."""
        return self.outputs / name

    def ensure(self) -> None:
        """Create the folders users expect, each model folder with a README saying what goes there."""
        for folder in (self.models, self.checkpoints, self.vae, self.lora, self.embeddings,
                       self.hypernetworks, self.controlnet, self.annotators, self.outputs, self.extensions):
            folder.mkdir(parents=True, exist_ok=True)
        for name, text in MODEL_FOLDERS.items():
            folder = self.models / name
            folder.mkdir(parents=True, exist_ok=True)
            readme = folder / "README.md"
            if not readme.exists():
                readme.write_text(f"# models/{name}\n\n{text}", encoding="utf-8")
        readme = self.embeddings / "README.md"
        if not readme.exists():
            readme.write_text("# embeddings\n\nTextual-inversion embeddings (.pt, .safetensors); "
                              "use a file's name in a prompt.\n", encoding="utf-8")


def from_args(args) -> Paths:
    data = Path(args.data_dir).resolve() if args.data_dir else PROJECT_ROOT
    models = Path(args.models_dir).resolve() if args.models_dir else data / "models"

    def pick(flag: str | None, default: Path) -> Path:
        return Path(flag).resolve() if flag else default

    return Paths(
        data=data,
        models=models,
        checkpoints=pick(args.ckpt_dir, models / "Stable-diffusion"),
        vae=pick(args.vae_dir, models / "VAE"),
        lora=pick(args.lora_dir, models / "Lora"),
        embeddings=pick(args.embeddings_dir, data / "embeddings"),
        hypernetworks=pick(args.hypernetwork_dir, models / "hypernetworks"),
        controlnet=pick(args.controlnet_dir, models / "ControlNet"),
        annotators=pick(args.controlnet_annotator_models_path, models / "annotators"),
        outputs=data / "outputs",
        extensions=data / "extensions",
        config_file=pick(args.ui_settings_file, data / "config.json"),
        ui_config_file=pick(args.ui_config_file, data / "ui-config.json"),
        training_templates=pick(getattr(args, "textual_inversion_templates_dir", None),
                                PROJECT_ROOT / "textual_inversion_templates"),
    )


# ---------------------------------------------------------------- A1111's `modules.paths` for extensions

_running: Paths | None = None   # the server's folders, once it has started (shared.bind)

# A1111's names → the folder they stand for here
_A1111_NAMES = {"data_path": "data", "models_path": "models", "extensions_dir": "extensions",
                "extensions_builtin_dir": "extensions_builtin"}
script_path = str(PROJECT_ROOT)   # A1111: its own folder (where scripts/, extensions-builtin/ are)


def bind_for_extensions(paths: Paths) -> None:
    global _running
    _running = paths


def __getattr__(name: str):
    # A1111's module attributes that follow the running server's folders (PEP 562), as strings like A1111's.
    if name in _A1111_NAMES:
        if _running is None:
            raise AttributeError(f"modules.paths.{name} is read before the web UI has started")
        return str(getattr(_running, _A1111_NAMES[name]))
    raise AttributeError(f"module 'modules.paths' has no attribute {name!r}")
