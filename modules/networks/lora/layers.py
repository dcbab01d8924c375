"""A LoRA file's layers: what kind of network it is, which family it was made for, and which layers of a loaded
model its keys mean (kohya, SGM and diffusers/peft names), checked against the layers' real shapes."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from modules.models import families
from modules.models.families import Family

_UNSAFE_KEY = re.compile(r"__\w*__")

# (a key pattern, the LyCORIS type it marks). diffusers' kohya converter handles lora_down/lora_up/alpha
# (plain LoRA, and LoCon: the same on convolutions); these others it cannot load.
_UNSUPPORTED_TYPES = (
    (re.compile(r"\.hada_w1_a$|\.hada_t1$"), "LoHa"),
    (re.compile(r"\.lokr_w1(_a)?$|\.lokr_w2(_a)?$"), "LoKr"),
    (re.compile(r"\.a1\.weight$|\.b1\.weight$"), "GLoRA"),
    (re.compile(r"\.oft_blocks$|\.oft_diag$|\.oft_R\.weight$"), "OFT"),
    (re.compile(r"\.boft_\w+$"), "BOFT"),
    (re.compile(r"\.on_input$"), "IA3"),
    (re.compile(r"\.diff(_b)?$"), "full (diff)"),
    (re.compile(r"\.w_norm$|\.b_norm$"), "norm"),
    (re.compile(r"\.lora_mid\.weight$"), "LoCon with CP decomposition (lora_mid)"),
)

# kohya / LyCORIS module-name prefixes, and diffusers/peft-format component prefixes.
_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_DIFFUSERS_LORA_PART = re.compile(
    r"^(unet|text_encoder|text_encoder_2)\.(.+?)"
    r"(\.lora_A\.weight|\.lora_B\.weight|[._]lora\.down\.weight|[._]lora\.up\.weight|"
    r"\.lora_linear_layer\.down\.weight|\.lora_linear_layer\.up\.weight|\.alpha)$")
_ATTN_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)$")


def unsupported_type(state_dict: dict) -> str | None:
    """The LyCORIS type of a file diffusers cannot load (LoHa, LoKr, GLoRA, OFT, IA3, full/diff, ...), or None."""
    for key in state_dict:
        for pattern, kind in _UNSUPPORTED_TYPES:
            if pattern.search(key):
                return kind
    return None


def _split_key(key: str) -> tuple[str, str] | None:
    """(module name in kohya form, part) for a LoRA key; None for keys of no known layout.

    kohya: 'lora_unet_down_blocks_0_..._to_q.lora_down.weight' → ('lora_unet_down_blocks_0_..._to_q', 'down').
    diffusers/peft: 'unet.down_blocks.0....to_q.lora_A.weight' → ('lora_unet_down_blocks_0_..._to_q', 'down');
    text encoders become 'lora_te@_...' and 'lora_te2_...' ('@' is resolved against the model later).
    """
    if key.startswith(_KOHYA_PREFIXES):
        module, _, part = key.partition(".")
        kinds = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}
        return module, kinds.get(part, part)
    match = _DIFFUSERS_LORA_PART.match(key)
    if match is None:
        return None
    component, path, part = match.groups()
    processor = _ATTN_PROCESSOR.search(path)
    if processor is not None:   # the old attention-processor layout: attn1.processor.to_q_lora.down.weight
        path = path[: processor.start()] + "." + processor.group(1) + (".0" if processor.group(1) == "to_out" else "")
    path = path.removeprefix("text_model.")
    prefix = {"unet": "lora_unet_", "text_encoder": "lora_te@_text_model_", "text_encoder_2": "lora_te2_text_model_"}
    part = "alpha" if part == ".alpha" else ("down" if ("lora_A" in part or ".down." in part) else "up")
    return prefix[component] + path.replace(".", "_"), part


def _lora_layers(state_dict: dict) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """{module: {"down": tensor, "up": tensor, ...}} and the keys of no known layout."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state_dict.items():
        split = _split_key(key)
        if split is None:
            unknown.append(key)
            continue
        layers.setdefault(split[0], {})[split[1]] = value
    return layers, unknown


def _width(tensor: torch.Tensor | None, dim: int) -> int | None:
    return int(tensor.shape[dim]) if tensor is not None and tensor.ndim > dim else None


def lora_family(state_dict: dict, metadata: dict[str, str] | None = None) -> Family | None:
    """The family a LoRA was made for (SD 1.x, SD 2.x or SDXL), from its keys (and widths, and metadata).

    Key layout decides first, so tiny test LoRAs are recognised like real ones: `lora_te1_`/`lora_te2_` (or a
    second text encoder, or a UNet transformer depth above 1) is SDXL. Then real widths: cross-attention
    `attn2.to_k` input 768 → SD 1.x, 1024 → SD 2.x, 2048 → SDXL; text-encoder input 768 → SD 1.x, 1024 → SD 2.x.
    Then kohya's metadata. An SD-style LoRA with unknown widths counts as SD 1.x.
    """
    layers, _unknown = _lora_layers(state_dict)
    names = list(layers)
    if not names:
        return None
    if any(name.startswith(("lora_te1_", "lora_te2_")) for name in names):
        return families.SDXL
    if any(re.search(r"transformer_blocks_[1-9]", name) for name in names if name.startswith("lora_unet_")):
        return families.SDXL
    for name, parts in layers.items():
        if name.startswith("lora_unet_") and re.search(r"attn2_to_k$", name):
            found = families.by_real_context_width(_width(parts.get("down"), 1))
            if found is not None:
                return found
    for name, parts in layers.items():   # a single text encoder's width is the context width of its family
        if name.startswith(("lora_te_", "lora_te@_")) and name.endswith("q_proj"):
            found = families.by_real_context_width(_width(parts.get("down"), 1))
            if found is not None and not found.xl:
                return found
    metadata = metadata or {}
    version = str(metadata.get("ss_base_model_version", ""))
    if version.startswith("sdxl"):   # kohya's metadata names
        return families.SDXL
    if version.startswith("sd_v2") or str(metadata.get("ss_v2", "")) == "True":
        return families.SD2
    return families.SD1


# --------------------------------------------------------------------------- matching against the model

def pipeline_family(pipeline) -> Family:
    """The family of a loaded diffusers pipeline (when the caller does not say)."""
    if getattr(pipeline, "text_encoder_2", None) is not None:
        return families.SDXL if getattr(pipeline, "text_encoder", None) is not None else families.SDXL_REFINER
    config = pipeline.unet.config
    if config.cross_attention_dim == 1024 or (config.cross_attention_dim != 768 and config.use_linear_projection):
        return families.SD2
    return families.SD1


def sgm_unet_names(unet) -> dict[str, str]:
    """diffusers UNet module name → its SGM/LDM name (kohya writes SDXL LoRAs with these), for block modules."""
    names = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_out": "out.2"}
    resnet = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
              "conv_shortcut": "skip_connection"}
    prefixes: dict[str, str] = {}
    resnet_prefixes = set()
    index = 1
    for i, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            prefixes[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{index}.0"
            resnet_prefixes.add(f"down_blocks.{i}.resnets.{j}")
            if getattr(block, "attentions", None):
                prefixes[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{index}.1"
            index += 1
        if getattr(block, "downsamplers", None):
            prefixes[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1
    if unet.mid_block is not None:
        for j in range(len(unet.mid_block.resnets)):
            prefixes[f"mid_block.resnets.{j}"] = f"middle_block.{2 * j}"
            resnet_prefixes.add(f"mid_block.resnets.{j}")
        if getattr(unet.mid_block, "attentions", None):
            prefixes["mid_block.attentions.0"] = "middle_block.1"
    index = 0
    for i, block in enumerate(unet.up_blocks):
        has_attention = bool(getattr(block, "attentions", None))
        for j in range(len(block.resnets)):
            prefixes[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{index}.0"
            resnet_prefixes.add(f"up_blocks.{i}.resnets.{j}")
            if has_attention:
                prefixes[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{index}.1"
            index += 1
        if getattr(block, "upsamplers", None):
            prefixes[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{index - 1}.{2 if has_attention else 1}.conv"

    longest_first = sorted(prefixes, key=len, reverse=True)

    def sgm(name: str) -> str | None:
        if name in names:
            return names[name]
        for prefix in longest_first:
            if name == prefix or name.startswith(prefix + "."):
                rest = name[len(prefix) + 1:]
                if prefix in resnet_prefixes and rest in resnet:
                    rest = resnet[rest]
                return prefixes[prefix] + ("." + rest if rest else "")
        return None

    return {name: sgm(name) for name, _ in _layers(unet)}


def _layers(model) -> list[tuple[str, torch.nn.Module]]:
    """Linear and Conv2d layers by name; a layer already wrapped by peft counts as its base layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out, wrapped = [], []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in wrapped):
            continue
        if isinstance(module, BaseTunerLayer):
            wrapped.append(name)
            out.append((name, module.get_base_layer()))
        elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            out.append((name, module))
    return out


@dataclass
class _Target:
    component: str                  # "unet" | "text_encoder" | "text_encoder_2"
    canonical: str                  # the kohya name diffusers' converter maps to this layer
    layer: torch.nn.Module


def _targets(pipeline, family: Family) -> dict[str, _Target]:
    """Every kohya module name (SD1-style and SGM-style for the UNet) → the model layer it means."""
    table: dict[str, _Target] = {}
    unet = pipeline.unet
    sgm = sgm_unet_names(unet)
    for name, layer in _layers(unet):
        plain = "lora_unet_" + name.replace(".", "_")
        sgm_name = "lora_unet_" + sgm[name].replace(".", "_") if sgm.get(name) else None
        # diffusers' converter maps every diffusers-style name except add_embedding, which it knows as label_emb.
        canonical = sgm_name if name.startswith("add_embedding.") and sgm_name else plain
        target = _Target("unet", canonical, layer)
        table[plain] = target
        if sgm_name:
            table.setdefault(sgm_name, target)
    if family.xl:
        encoders = (("text_encoder", ("lora_te1_",)), ("text_encoder_2", ("lora_te2_",)))
    else:   # A1111 also accepts lora_te1_ keys on SD 1.x ("some SD1 LoRAs also have correct compvis keys")
        encoders = (("text_encoder", ("lora_te_", "lora_te1_")),)
    for component, kohya_prefixes in encoders:
        encoder = getattr(pipeline, component, None)
        if encoder is None:
            continue
        for name, layer in _layers(encoder):
            name = name.removeprefix("text_model.")
            suffix = "text_model_" + name.replace(".", "_")
            for prefix in kohya_prefixes:
                table[prefix + suffix] = _Target(component, kohya_prefixes[0] + suffix, layer)
            if component == "text_encoder":   # diffusers-format keys (`text_encoder.`), see _split_key
                table["lora_te@_" + suffix] = _Target(component, kohya_prefixes[0] + suffix, layer)
    return table


def _shape_fits(parts: dict[str, torch.Tensor], layer: torch.nn.Module) -> bool:
    down, up = parts.get("down"), parts.get("up")
    if down is None or up is None or down.shape[0] != up.shape[1]:
        return False
    if isinstance(layer, torch.nn.Conv2d):
        return (down.ndim == 4 and up.ndim == 4 and down.shape[1] == layer.in_channels
                and tuple(down.shape[2:]) == tuple(layer.kernel_size) and up.shape[0] == layer.out_channels)
    return down.ndim == 2 and up.ndim == 2 and down.shape[1] == layer.in_features and up.shape[0] == layer.out_features


@dataclass
class Match:
    total: int                                  # LoRA layers in the file
    matched: dict[str, _Target]                 # LoRA module name → model layer, shapes checked
    missing: list[str]                          # names with no layer in the model
    wrong_shape: list[str]                      # names whose layer exists but has other widths
    unknown_keys: list[str]                     # keys of no known LoRA layout


def match(state_dict: dict, pipeline, family: Family | None = None) -> Match:
    family = family or pipeline_family(pipeline)
    layers, unknown = _lora_layers(state_dict)
    table = _targets(pipeline, family)
    matched, missing, wrong = {}, [], []
    for name, parts in layers.items():
        target = table.get(name)
        if target is None:
            missing.append(name)
        elif _shape_fits(parts, target.layer):
            matched[name] = target
        else:
            wrong.append(name)
    return Match(len(layers), matched, missing, wrong, unknown)


def refusal(found: Match, state_dict: dict, family: Family, metadata: dict | None = None) -> str | None:
    """Why a LoRA is not applied to a model of `family`, or None (applied, perhaps in part)."""
    if found.total == 0:
        return "the file holds no LoRA weights (no lora_unet_/lora_te_ keys)"
    if len(found.matched) == found.total:
        return None
    made_for = lora_family(state_dict, metadata)
    counts = f"{len(found.matched)}/{found.total} keys match"
    model = family.label
    if made_for is not None and made_for.xl != family.xl:   # an SDXL LoRA fits the refiner's side of SDXL too
        return f"made for {made_for.label}, but the checkpoint is {model}: {counts}"
    if not found.matched or found.wrong_shape:
        example = (found.wrong_shape or found.missing)[0]
        why = "has other widths" if found.wrong_shape else "has no counterpart"
        return f"does not fit the {model} checkpoint: {counts} (e.g. {example} {why})"
    return None     # same family, some layers absent from this model: applied in part, with a warning


def fits(state_dict: dict, pipeline, family: Family | None = None) -> str | None:
    """None when the LoRA's layers and shapes fit the model, else the reason it does not.

    e.g. "made for SDXL, but the checkpoint is SD 1.x: 0/120 keys match". A LoRA of the model's own family
    whose layers all fit except some the model lacks (a layer count difference, say) fits: those are skipped.
    """
    family = family or pipeline_family(pipeline)
    return refusal(match(state_dict, pipeline, family), state_dict, family)
