"""BLIP captions as A1111's Interrogate CLIP starts them: Salesforce's BLIP decoder prompted with "a picture of ",
beam search with the interrogate_clip_num_beams / min_length / max_length settings, the prompt cut off the result.

The model is transformers' `BlipForConditionalGeneration`, read from `models/BLIP/` in either layout A1111 users have:
- Salesforce's original file A1111 downloads there, `model_base_caption_capfilt_large.pth`: its keys renamed as
  transformers' BLIP conversion script renames them, the architecture from the bundled `blip_base_caption.json`, and
  BLIP's tokenizer (bert-base-uncased, which A1111's BLIP code fetched into the Hugging Face cache) found offline in
  that cache or in `models/BLIP/bert-base-uncased/`;
- a Hugging Face-layout folder `models/BLIP/<name>/` (config.json, weights, tokenizer files).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from PIL import Image

from modules.jobs import JobError, NotFound
from modules.models import files
from modules.postprocess.interrogate.exact_weights import load_exact
from modules.untrusted import user_files

log = logging.getLogger(__name__)

ORIGINAL_FILE = "model_base_caption_capfilt_large.pth"
TOKENIZER_FOLDER = "bert-base-uncased"
PROMPT = "a picture of "
# BLIP's (and OpenAI CLIP's) normalisation
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
BUNDLED_CONFIG = Path(__file__).with_name("blip_base_caption.json")
# transformers' convert_blip_original_pytorch_to_hf.py, in order: Salesforce's ViT names → transformers'
_RENAMES = ((r"visual_encoder*", "vision_model.encoder"), (r"blocks", "layers"), (r"attn", "self_attn"),
            (r"norm1", "layer_norm1"), (r"norm2", "layer_norm2"), (r"encoder.norm", "post_layernorm"),
            (r"encoder.patch_embed.proj", "embeddings.patch_embedding"),
            (r"encoder.pos_embed", "embeddings.position_embedding"),
            (r"encoder.cls_token", "embeddings.class_embedding"), (r"self_attn.proj", "self_attn.projection"))

_TIED = {"text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
         "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias"}


def hf_key(key: str) -> str:
    """A Salesforce BLIP key under transformers' name (the text decoder's names are the same in both)."""
    for pattern, replacement in _RENAMES:
        if pattern.split("*")[0] in key:
            key = re.sub(pattern, replacement, key)
    return key


def find_model(folder: Path) -> Path:
    """A1111's file if it is there, else the first Hugging Face-layout folder (one with a config.json)."""
    original = folder / ORIGINAL_FILE
    if user_files.is_regular(original):
        return original
    layouts = sorted(path.parent for path in folder.glob("*/config.json") if user_files.is_regular(path))
    if layouts:
        return layouts[0]
    raise NotFound(f"BLIP caption model not found: put A1111's {ORIGINAL_FILE} in {folder}, or a Hugging Face-layout "
                   f"BLIP captioning folder (config.json, model.safetensors, tokenizer files) in {folder}/<name>/")


class BlipCaptioner:
    """One loaded BLIP model and its tokenizer; `caption(image, settings)` is deterministic (beam search)."""

    def __init__(self, model, tokenizer, device: torch.device, dtype: torch.dtype):
        self.model, self.tokenizer, self.device, self.dtype = model, tokenizer, device, dtype

    @classmethod
    def load(cls, location: Path, device: torch.device, dtype: torch.dtype,
             original_config: Path = BUNDLED_CONFIG) -> "BlipCaptioner":
        """From a Hugging Face-layout folder, or Salesforce's file with `original_config`'s architecture."""
        from transformers import BlipForConditionalGeneration

        if location.is_dir():
            try:
                model = BlipForConditionalGeneration.from_pretrained(location, local_files_only=True,
                                                                     use_safetensors=_has_safetensors(location))
            except (OSError, ValueError) as error:   # no weights file, or not a BLIP folder
                raise JobError(f"BLIP folder {location}: {str(error).splitlines()[0]}") from None
            tokenizer = _tokenizer(location)
        else:
            model = _from_original(location, original_config)
            tokenizer = _tokenizer(_original_tokenizer_folder(location.parent))
        model.eval().to(device, dtype)
        return cls(model, tokenizer, device, dtype)

    def to(self, device: torch.device) -> "BlipCaptioner":
        self.model.to(device)
        self.device = device
        return self

    def pixels(self, image: Image.Image) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        size = self.model.config.vision_config.image_size
        picture = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        tensor = TF.normalize(TF.to_tensor(picture), MEAN, STD)
        return tensor.unsqueeze(0).to(self.device, self.dtype)

    @torch.no_grad()
    def caption(self, image: Image.Image, settings) -> str:
        prompt = self.tokenizer(PROMPT, return_tensors="pt").input_ids.to(self.device)
        # A1111's BLIP call: beam search, no sampling; lengths count the prompt's tokens, as BLIP's do
        output = self.model.generate(pixel_values=self.pixels(image), input_ids=prompt, do_sample=False,
                                     num_beams=int(settings.get("interrogate_clip_num_beams", 1)),
                                     min_length=int(settings.get("interrogate_clip_min_length", 24)),
                                     max_length=int(settings.get("interrogate_clip_max_length", 48)),
                                     repetition_penalty=1.0)
        text = self.tokenizer.decode(output[0], skip_special_tokens=True).strip()
        # BLIP's decoder strips the prompt by length; the uncased tokenizer gives it back as "a picture of"
        return text[len(PROMPT.strip()):].strip() if text.startswith(PROMPT.strip()) else text


def _has_safetensors(folder: Path) -> bool:
    return any(folder.glob("*.safetensors"))


def _from_original(path: Path, config_path: Path):
    from transformers import BlipConfig, BlipForConditionalGeneration
    from transformers.initialization import no_init_weights

    try:
        data = files.load_object(path)
    except files.ModelFileError as error:
        raise JobError(str(error)) from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise JobError(f"{path.name}: not a BLIP checkpoint (no 'model' state dict)")
    config = BlipConfig.from_json_file(config_path)
    with no_init_weights():   # every parameter is overwritten by the file's
        model = BlipForConditionalGeneration(config)
    renamed = {hf_key(key): value for key, value in state.items() if isinstance(value, torch.Tensor)}
    for tied, source in _TIED.items():   # the LM head shares these with other tensors; files may hold one copy
        if tied not in renamed and source in renamed:
            renamed[tied] = renamed[source]
    load_exact(model, renamed, f"{path.name}: not Salesforce's BLIP base captioning checkpoint")
    model.tie_weights()
    return model


def _original_tokenizer_folder(folder: Path) -> Path:
    """BLIP's bert-base-uncased vocabulary, offline: beside the file, else in the Hugging Face cache."""
    beside = folder / TOKENIZER_FOLDER
    if user_files.is_regular(beside / "vocab.txt"):
        return beside
    from huggingface_hub import try_to_load_from_cache

    for repo in ("google-bert/bert-base-uncased", "bert-base-uncased"):
        cached = try_to_load_from_cache(repo, "vocab.txt")
        if isinstance(cached, str):
            return Path(cached).parent
    raise NotFound(f"BLIP's tokenizer not found: put bert-base-uncased's vocab.txt (and tokenizer_config.json) in "
                   f"{beside}/ — A1111 kept it in the Hugging Face cache (models--bert-base-uncased)")


def _tokenizer(folder: Path):
    from transformers import BertTokenizer

    if not user_files.is_regular(folder / "vocab.txt"):
        raise NotFound(f"BLIP's tokenizer not found: {folder / 'vocab.txt'} is missing")
    tokenizer = BertTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.bos_token != "[DEC]":
        # BLIP's init_tokenizer: bert-base-uncased plus [DEC] (the decoder's BOS, id 30522) and [ENC], special
        # tokens, so the decoded caption leaves them out
        tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer
