"""State dict → model family (SD1 / SD2 / SDXL / SDXL refiner, inpainting or not) and prediction type.

The family is decided by which keys exist (text-encoder layout, `label_emb`, UNet input channels);
widths only confirm the decision, so tiny test models and real ones are recognised the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from modules.models import families
from modules.models.families import UNET, Family
from modules.untrusted import user_files

PREDICTION_TYPES = ("epsilon", "v_prediction")

# ComfyUI's SD2 v-prediction test: trained v models have a wide spread in this bias, eps models a narrow one.
V_PREDICTION_BIAS_STD = 0.09


class UnsupportedModelError(Exception):
    """The file is not a checkpoint of a supported family; the message says what it looks like."""


@dataclass(frozen=True)
class ModelSpec:
    family: Family
    inpainting: bool
    prediction_type: str        # "epsilon" | "v_prediction"
    prediction_source: str      # how it was decided: override, yaml, v_pred key, heuristic, default
    zero_terminal_snr: bool = False

    @property
    def v_prediction(self) -> bool:
        return self.prediction_type == "v_prediction"

    @property
    def config_variant(self) -> str:
        """Which bundled config folder holds this model's constants."""
        return self.family.config_variant(inpainting=self.inpainting, v_prediction=self.v_prediction)

    @property
    def label(self) -> str:
        text = self.family.label
        if self.inpainting:
            text += " inpainting"
        if self.prediction_type == "v_prediction":
            text += " (v-prediction)"
        return text


def detect(state_dict: dict[str, torch.Tensor], *, sidecar_yaml: Path | None = None,
           override: str | None = None) -> ModelSpec:
    keys = state_dict.keys()
    first_conv = state_dict.get(UNET + "input_blocks.0.0.weight")
    if first_conv is None:
        if any(key.startswith("control_model.") for key in keys):
            raise UnsupportedModelError("this is a ControlNet model; it belongs in models/ControlNet")
        if any(key.startswith(("lora_unet_", "lora_te_")) for key in keys):
            raise UnsupportedModelError("this is a LoRA; it belongs in models/Lora")
        raise UnsupportedModelError("no Stable Diffusion UNet found (no model.diffusion_model.* weights)")

    in_channels = first_conv.shape[1]
    if in_channels not in (4, 9):
        kind = {8: "instruct-pix2pix", 5: "depth-conditioned"}.get(in_channels, f"{in_channels}-channel")
        raise UnsupportedModelError(f"{kind} UNets are not supported yet")

    family = _family(keys)
    _confirm_widths(state_dict, family)
    prediction_type, source = _prediction_type(state_dict, family, sidecar_yaml, override)
    return ModelSpec(
        family=family,
        inpainting=in_channels == 9,
        prediction_type=prediction_type,
        prediction_source=source,
        zero_terminal_snr="ztsnr" in keys,
    )


def _family(keys) -> Family:
    family = families.of_keys(keys)
    if family is None:
        raise UnsupportedModelError("no known text encoder found (CLIP / OpenCLIP keys are missing)")
    if family.xl and family.generates and UNET + "label_emb.0.0.weight" not in keys:
        raise UnsupportedModelError(f"{family.label} text encoders without the SDXL UNet's label_emb")
    return family


def _confirm_widths(state_dict, family: Family) -> None:
    """The UNet's cross-attention width must equal what the family's text encoders produce together."""
    context = next((t.shape[1] for k, t in state_dict.items()
                    if k.startswith(UNET) and k.endswith("attn2.to_k.weight")), None)
    if context is None:
        raise UnsupportedModelError("the UNet has no cross-attention layers")
    width = sum(state_dict[encoder.token_embedding].shape[1] for encoder in family.encoders)
    if context != width:
        raise UnsupportedModelError(
            f"looks like {family.label}, but its UNet expects {context}-wide text features "
            f"while its text encoder gives {width}")


def _prediction_type(state_dict, family, sidecar_yaml, override) -> tuple[str, str]:
    if override in PREDICTION_TYPES:
        return override, "override"
    from_yaml = read_sidecar_parameterization(sidecar_yaml)
    if from_yaml:
        return from_yaml, "yaml"
    if "v_pred" in state_dict:
        return "v_prediction", "v_pred key"
    if family.v_config:   # a family with both kinds (SD 2.x): read it from the weights
        bias = _last_output_norm_bias(state_dict)
        if bias is not None:
            is_v = float(bias.float().std()) > V_PREDICTION_BIAS_STD
            return ("v_prediction" if is_v else "epsilon"), "heuristic"
    return "epsilon", "default"


def _last_output_norm_bias(state_dict) -> torch.Tensor | None:
    """`output_blocks.<last>.1.transformer_blocks.0.norm1.bias` (output_blocks.11 in real SD2 files)."""
    last = max((int(k.split(".")[3]) for k in state_dict
                if k.startswith(UNET + "output_blocks.") and ".1.transformer_blocks.0.norm1.bias" in k),
               default=None)
    if last is None:
        return None
    return state_dict.get(f"{UNET}output_blocks.{last}.1.transformer_blocks.0.norm1.bias")


def read_sidecar_parameterization(path: Path | None) -> str | None:
    """`parameterization: "v"` in an A1111-style `<checkpoint>.yaml` → v_prediction; a yaml without it → epsilon."""
    if path is None or not path.is_file():
        return None
    try:
        config = yaml.safe_load(user_files.read_text(path, limit=1_000_000))
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError):
        return None
    params = ((config or {}).get("model") or {}).get("params") or {} if isinstance(config, dict) else {}
    return "v_prediction" if isinstance(params, dict) and params.get("parameterization") == "v" else "epsilon"
