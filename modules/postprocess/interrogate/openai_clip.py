"""OpenAI's CLIP file, as A1111's Interrogate CLIP loads it (`clip.load("ViT-L/14")`: `ViT-L-14.pt`), turned into a
transformers `CLIPModel` so the ranking runs on one model type whichever layout the user has.

The file is a TorchScript archive, read weights-only by `models.torchscript_weights`. Its sizes come from the
tensors as OpenAI's `build_model` finds them (widths, layer counts, heads = width // 64, patch and image size,
context length, vocabulary, projection), and its keys are renamed as transformers' CLIP conversion script renames
them (`in_proj` split into q/k/v, the projections transposed). The tokenizer is SD's CLIP tokenizer (the same BPE).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from modules.jobs import JobError
from modules.models import files, torchscript_weights
from modules.models.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE
from modules.postprocess.interrogate.exact_weights import load_exact

PREFERRED_FILE = "ViT-L-14.pt"     # A1111's clip_model_name "ViT-L/14", as the clip package names its download
HEAD_WIDTH = 64                    # OpenAI's CLIP: heads = width // 64 in both towers
# OpenAI's names → transformers', per tower (layer prefixes) and per layer (transformers' conversion script)
_TOWERS = (("visual.transformer.resblocks.", "vision_model.encoder.layers."),
           ("transformer.resblocks.", "text_model.encoder.layers."))
_LAYER_PARTS = (("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."),
                ("mlp.c_proj.", "mlp.fc2."), ("attn.out_proj.", "self_attn.out_proj."))
_SINGLE = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
           "positional_embedding": "text_model.embeddings.position_embedding.weight",
           "ln_final.weight": "text_model.final_layer_norm.weight",
           "ln_final.bias": "text_model.final_layer_norm.bias",
           "visual.class_embedding": "vision_model.embeddings.class_embedding",
           "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
           "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
           "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
           "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
           "visual.ln_post.weight": "vision_model.post_layernorm.weight",
           "visual.ln_post.bias": "vision_model.post_layernorm.bias",
           "logit_scale": "logit_scale"}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_IN_PROJ = re.compile(r"(.*)attn\.in_proj_(weight|bias)$")


def load_model(path: Path):
    """The `CLIPModel` of OpenAI's file; JobError naming the file when it is unsafe or not an OpenAI ViT CLIP."""
    try:
        state = torchscript_weights.read_state_dict(path)
    except files.ModelFileError as error:
        raise JobError(str(error)) from None
    return to_transformers(state, path.name)


def to_transformers(state: dict[str, torch.Tensor], name: str):
    from transformers import CLIPModel
    from transformers.initialization import no_init_weights

    config = config_of(state, name)
    with no_init_weights():   # every parameter is overwritten by the file's
        model = CLIPModel(config)
    load_exact(model, transformers_state(state), f"{name}: not an OpenAI CLIP model")
    return model.eval()


def config_of(state: dict[str, torch.Tensor], name: str):
    """The `CLIPConfig` OpenAI's build_model would find in these tensors."""
    from transformers import CLIPConfig

    if "visual.proj" not in state or "visual.conv1.weight" not in state:
        raise JobError(f"{name}: not an OpenAI ViT CLIP model (the ResNet ones, RN50…, are not supported: use "
                       f"{PREFERRED_FILE})")
    try:
        patch = state["visual.conv1.weight"].shape[-1]
        vision_width, text_width = state["visual.conv1.weight"].shape[0], state["ln_final.weight"].shape[0]
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vocab_size = state["token_embedding.weight"].shape[0]
        context_length = state["positional_embedding"].shape[0]
        projection_dim = state["text_projection"].shape[1]
        vision_mlp = state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        text_mlp = state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    except KeyError as error:
        raise JobError(f"{name}: not an OpenAI CLIP model (no {error.args[0]})") from None
    if vocab_size != VOCAB_SIZE:
        raise JobError(f"{name}: a vocabulary of {vocab_size} tokens, not CLIP's {VOCAB_SIZE}")
    return CLIPConfig(
        projection_dim=projection_dim,
        text_config=dict(vocab_size=vocab_size, hidden_size=text_width, intermediate_size=text_mlp,
                         num_hidden_layers=_layers(state, "transformer.resblocks."),
                         num_attention_heads=max(1, text_width // HEAD_WIDTH), max_position_embeddings=context_length,
                         hidden_act="quick_gelu", bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID),
        vision_config=dict(hidden_size=vision_width, intermediate_size=vision_mlp, patch_size=patch,
                           num_hidden_layers=_layers(state, "visual.transformer.resblocks."),
                           num_attention_heads=max(1, vision_width // HEAD_WIDTH), image_size=patch * grid,
                           hidden_act="quick_gelu"))


def _layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})


def transformers_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI's tensors under transformers' CLIPModel names (keys it has no place for, such as the text mask
    buffer or the input_resolution/context_length/vocab_size entries of OpenAI's files, are left out)."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _SINGLE:
            renamed[_SINGLE[key]] = value
        elif key in _TRANSPOSED:
            renamed[_TRANSPOSED[key]] = value.T.contiguous()
        elif (layer := _layer_key(key)) is not None:
            match = _IN_PROJ.match(layer)
            if match:
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    renamed[f"{match.group(1)}self_attn.{part}.{match.group(2)}"] = chunk.contiguous()
            else:
                renamed[layer] = value
    return renamed


def _layer_key(key: str) -> str | None:
    for openai, hf in _TOWERS:
        if key.startswith(openai):
            rest = key[len(openai):]
            for old, new in _LAYER_PARTS:
                rest = rest.replace(old, new)
            return hf + rest
    return None
