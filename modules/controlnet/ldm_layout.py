"""A diffusers ControlNetModel's weights under lllyasviel's original (LDM) names, the single-file layout that
ControlNet releases use (`control_model.input_blocks.*`, `zero_convs.*`, `input_hint_block.*`,
`middle_block_out.*`; SDXL adds `label_emb.*`).

It is the exact inverse of diffusers' `convert_controlnet_checkpoint` (which `models.to_diffusers` runs), derived
from the module tree, so it follows any number of levels, layers per level and attention per level. Transformer
internals already share LDM's names (proj_in, transformer_blocks.N.attn1.to_q, ff.net.0.proj, ...).
"""
from __future__ import annotations

import torch

# a resnet's inner layers: diffusers' name → LDM's
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def input_block_names(down_blocks) -> tuple[dict[str, str], set[str]]:
    """diffusers down-block prefixes → LDM `input_blocks.N.` ones (a UNet's, or a ControlNet's copy of them), and
    the resnet prefixes among them (their inner names differ too)."""
    names, resnet_prefixes = {}, set()
    index = 1   # input_blocks.0 is conv_in
    for i, block in enumerate(down_blocks):
        for j in range(len(block.resnets)):
            names[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{index}.0."
            resnet_prefixes.add(f"down_blocks.{i}.resnets.{j}.")
            if getattr(block, "attentions", None):
                names[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{index}.1."
            index += 1
        if block.downsamplers:   # a downsampler is its own input block
            names[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{index}.0.op."
            index += 1
    return names, resnet_prefixes


def controlnet_to_ldm(controlnet) -> dict[str, torch.Tensor]:
    """The ControlNet's state dict under LDM names, without the `control_model.` prefix a file puts before them.
    A weight with no LDM name is a KeyError: nothing is silently dropped."""
    embedding = controlnet.controlnet_cond_embedding
    names = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
             "conv_in.": "input_blocks.0.0.", "controlnet_mid_block.": "middle_block_out.0.",
             # the hint encoder is one nn.Sequential of convs with a SiLU after each: convs sit at even indices
             "controlnet_cond_embedding.conv_in.": "input_hint_block.0.",
             "controlnet_cond_embedding.conv_out.": f"input_hint_block.{2 * (len(embedding.blocks) + 1)}."}
    for i in range(len(embedding.blocks)):
        names[f"controlnet_cond_embedding.blocks.{i}."] = f"input_hint_block.{2 * (i + 1)}."
    blocks, resnet_prefixes = input_block_names(controlnet.down_blocks)
    names.update(blocks)
    for i in range(len(controlnet.controlnet_down_blocks)):   # one zero conv per input block
        names[f"controlnet_down_blocks.{i}."] = f"zero_convs.{i}.0."
    for j in range(len(controlnet.mid_block.resnets)):   # middle_block = resnet, transformer, resnet
        names[f"mid_block.resnets.{j}."] = f"middle_block.{2 * j}."
        resnet_prefixes.add(f"mid_block.resnets.{j}.")
    names["mid_block.attentions.0."] = "middle_block.1."

    prefixes = sorted(names, key=len, reverse=True)   # the longest matching prefix wins
    renamed = {}
    for key, value in controlnet.state_dict().items():
        prefix = next((candidate for candidate in prefixes if key.startswith(candidate)), None)
        if prefix is None:
            raise KeyError(f"no LDM name for the ControlNet weight {key!r}")
        suffix = key[len(prefix):]
        if prefix in resnet_prefixes:
            layer, _, rest = suffix.partition(".")
            suffix = f"{_RESNET[layer]}.{rest}"
        renamed[names[prefix] + suffix] = value
    return renamed
