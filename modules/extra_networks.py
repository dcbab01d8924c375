"""The add-ons a generation uses besides its checkpoint — styles, embeddings, LoRAs, hypernetworks, VAEs — and how a job's
prompt is turned into what to encode and what to apply (A1111 `extra_networks.py`, `styles.py`); and A1111's
`modules.extra_networks` names for extensions (`parse_prompt(s)`, `ExtraNetworkParams`, the registry, `activate`).

The generation applies `<lora:…>`, `<lyco:…>` and `<hypernet:…>` itself (`prepare_prompt`); an `ExtraNetwork` an
extension registers is called by `activate`/`deactivate` when an extension calls them, not by the generation.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from modules import errors
from modules.networks import hypernetwork, lora
from modules.networks.textual_inversion import EmbeddingDatabase
from modules.networks.vae import VaeCache, VaeRegistry
from modules.prompts import splitting
from modules.prompts.styles import StyleDatabase
from modules.untrusted import json_file

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------- A1111's `modules.extra_networks` for extensions

class ExtraNetworkParams:
    """One tag's arguments, as A1111's: `<kind:a:b=1>` → items ["a", "b=1"], positional ["a"], named {"b": "1"}."""

    def __init__(self, items=None):
        self.items = items or []
        self.positional = []
        self.named = {}
        for item in self.items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other):
        return self.items == other.items

    def __repr__(self):
        return f"ExtraNetworkParams(items={self.items!r})"


class ExtraNetwork:
    """A1111's base class of a `<name:…>` handler an extension registers."""

    def __init__(self, name: str):
        self.name = name

    def activate(self, p, params_list):
        raise NotImplementedError

    def deactivate(self, p):
        raise NotImplementedError


extra_network_registry: dict[str, ExtraNetwork] = {}
extra_network_aliases: dict[str, ExtraNetwork] = {}


def initialize() -> None:
    extra_network_registry.clear()
    extra_network_aliases.clear()


def register_extra_network(extra_network: ExtraNetwork) -> None:
    extra_network_registry[extra_network.name] = extra_network


def register_extra_network_alias(extra_network: ExtraNetwork, alias: str) -> None:
    extra_network_aliases[alias] = extra_network


def parse_prompt(prompt: str) -> tuple[str, defaultdict]:
    """A1111's: the prompt without its `<kind:args>` tags (nothing put in their place) and {kind: [params, ...]}."""
    text, tags = splitting.extract_networks(prompt)
    found = defaultdict(list)
    for tag in tags:
        found[tag.kind].append(ExtraNetworkParams(items=list(tag.items)))
    return text, found


def parse_prompts(prompts: list[str]) -> tuple[list[str], defaultdict | None]:
    """A1111's: each prompt without its tags, and the tags of the first prompt."""
    texts, first = [], None
    for prompt in prompts:
        text, found = parse_prompt(prompt)
        first = found if first is None else first
        texts.append(text)
    return texts, first


def lookup_extra_networks(extra_network_data: dict) -> dict:
    """{registered ExtraNetwork: [params, ...]} for the kinds in `extra_network_data` that have one."""
    found = {}
    for name, params in list(extra_network_data.items()):
        network = extra_network_registry.get(name) or extra_network_aliases.get(name)
        if network is None:
            log.info("Skipping unknown extra network: %s", name)
            continue
        found.setdefault(network, []).extend(params)
    return found


def activate(p, extra_network_data: dict) -> None:
    """A1111's: each registered network named in the data is activated with its params, every other one with []."""
    activated = []
    for network, params in lookup_extra_networks(extra_network_data).items():
        try:
            network.activate(p, params)
            activated.append(network)
        except Exception as e:   # noqa: BLE001 - one network failing does not stop the others (A1111)
            errors.display(e, f"activating extra network {network.name} with arguments {params}")
    for name, network in extra_network_registry.items():
        if network not in activated:
            try:
                network.activate(p, [])
            except Exception as e:   # noqa: BLE001
                errors.display(e, f"activating extra network {name}")


def deactivate(p, extra_network_data: dict) -> None:
    """A1111's: every registered network is deactivated, those named in the data first."""
    named = lookup_extra_networks(extra_network_data)
    for network in [*named, *(n for n in extra_network_registry.values() if n not in named)]:
        try:
            network.deactivate(p)
        except Exception as e:   # noqa: BLE001
            errors.display(e, f"deactivating extra network {network.name}")


def get_user_metadata(filename: str | None, lister=None) -> dict:
    """The user's notes on a network file: the JSON object in `<file without extension>.json`, {} if none."""
    if filename is None:
        return {}
    return json_file.read_json_object(Path(filename).with_suffix(".json"))
