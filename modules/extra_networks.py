"""The add-ons a generation uses besides its checkpoint — styles, embeddings, LoRAs, hypernetworks, VAEs — and how a job's
prompt is turned into what to encode and what to apply (A1111 `extra_networks.py`, `styles.py`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modules.networks import hypernetwork, lora
from modules.networks.textual_inversion import EmbeddingDatabase
from modules.networks.vae import VaeCache, VaeRegistry
from modules.prompts import splitting
from modules.prompts.styles import StyleDatabase

LORA_KINDS = ("lora", "lyco")
HYPERNET_KIND = hypernetwork.TAG_KIND   # "hypernet"


@dataclass
class ExtraNetworks:
    """Found once, refreshed on request, shared by every job."""

    styles: StyleDatabase
    embeddings: EmbeddingDatabase
    loras: lora.LoraRegistry
    lora_cache: lora.LoraCache
    vaes: VaeRegistry
    vae_cache: VaeCache
    hypernetworks: hypernetwork.HypernetworkRegistry
    hypernetwork_cache: hypernetwork.HypernetworkCache

    def refresh(self) -> None:
        self.styles.reload()
        self.embeddings.refresh()
        self.loras.refresh()
        self.vaes.refresh()
        self.hypernetworks.refresh()


def create(paths, hashes, *, styles_files: list[str], vae_path: str | None, hashing: bool) -> ExtraNetworks:
    style_paths = [Path(p) for p in styles_files] or [paths.data / "styles.csv"]
    return ExtraNetworks(
        styles=StyleDatabase(style_paths),
        embeddings=EmbeddingDatabase(paths.embeddings),
        loras=lora.LoraRegistry(paths.lora, paths.models / "LyCORIS", hashes=hashes),
        lora_cache=lora.LoraCache(),
        vaes=VaeRegistry(paths.vae, paths.checkpoints, hashes, hashing=hashing, forced_path=vae_path),
        vae_cache=VaeCache(),
        hypernetworks=hypernetwork.HypernetworkRegistry(paths.hypernetworks),
        hypernetwork_cache=hypernetwork.HypernetworkCache(),
    )


@dataclass
class PreparedPrompt:
    prompt: str                  # as written to the infotext: styles applied, tags kept (A1111 keeps them)
    negative: str
    text: str                    # what is encoded: comments and network tags removed
    negative_text: str
    loras: list = field(default_factory=list)      # (LoraInfo, te weight, unet weight)
    hypernetworks: list = field(default_factory=list)   # (HypernetworkInfo, multiplier)
    warnings: list[str] = field(default_factory=list)


def prepare_prompt(prompt: str, negative: str, style_names: list[str], networks: ExtraNetworks) -> PreparedPrompt:
    prompt, negative = networks.styles.apply(prompt, negative, style_names)
    text, tags = splitting.extract_networks(splitting.strip_comments(prompt))
    negative_text, negative_tags = splitting.extract_networks(splitting.strip_comments(negative))
    loras, warnings = lora.requests_from_tags([t for t in tags if t.kind in LORA_KINDS], networks.loras)
    hypernetworks, more = hypernetwork.requests_from_tags([t for t in tags if t.kind == HYPERNET_KIND],
                                                          networks.hypernetworks)
    warnings += more
    for tag in tags + negative_tags:
        if tag.kind not in (*LORA_KINDS, HYPERNET_KIND) or tag in negative_tags:
            where = "negative prompt" if tag in negative_tags else "prompt"
            warnings.append(f"<{tag.kind}:{tag.name}> in the {where} is not supported and was ignored")
    return PreparedPrompt(prompt=prompt, negative=negative, text=text, negative_text=negative_text, loras=loras,
                          hypernetworks=hypernetworks, warnings=warnings)
