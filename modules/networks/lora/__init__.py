"""LoRA networks: list the files, match them to the loaded model, apply them for one job, remove them after.

How A1111 does it (`extensions-builtin/Lora`) and what is kept here:

* Files (`.safetensors`, `.pt`, `.ckpt`) anywhere under `models/Lora` (and extra folders, e.g. the old
  `models/LyCORIS`); a LoRA is named by its file stem, its alias is the metadata `ss_output_name`. When two
  files share a stem the one scanned later wins (A1111 walks folders in sorted order and overwrites), with a
  log line. An alias used by two files only matches by name (A1111's "forbidden aliases").
* Names from prompts, the API or infotext are only matched against the scanned list: a name never becomes a path.
* Hash: A1111's "addnet" hash (sha256 of a safetensors file after its header; of the whole file for pickles),
  or the metadata `sshs_model_hash`; 12 hex digits in infotext "Lora hashes".
* `<lora:name:te[:unet]>`, named `te=` / `unet=`; missing weights are 1.0; `<lyco:...>` is an alias.

What is different: the maths is diffusers' and peft's. Each LoRA is loaded as a peft adapter
(`pipeline.load_lora_weights`, which converts kohya/A1111 keys), weighted with `set_adapters`, merged into the
weights and taken off again; when the job ends the original weights are copied back, leaving the model exactly as
it was. Before anything is loaded each file is checked against the model's real layer shapes (`fits`), so a LoRA
for another model family, or a LyCORIS type diffusers cannot load, is reported as a warning instead of failing or
doing nothing silently.

The package: `files` (the list, hashes, prompt tags → requests), `layers` (what a file holds and which model
layers it means), `apply` (one job's LoRAs on, and off again; the file cache).
"""
from modules.networks.lora.apply import AppliedLoras, LoraCache, applied  # noqa: F401
from modules.networks.lora.files import (LORA_EXTENSIONS, TAG_KINDS, LoraHasher, LoraInfo,  # noqa: F401
                                         LoraRegistry, addnet_hash, api_list, infotext_hashes, one_per_file,
                                         requests_from_tags)
from modules.networks.lora.layers import fits, lora_family, match, pipeline_family, unsupported_type  # noqa: F401
