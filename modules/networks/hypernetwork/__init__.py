"""Hypernetworks (A1111 `modules/hypernetworks/hypernetwork.py`, `extra_networks_hypernet.py`): list the files,
read them safely, and apply them to a pipeline for one job.

Files are read with `files.load_object` (weights_only=True): a file that needs code is refused, never run.

The package: `files` (the list of files, prompt tags → requests), `loading` (one file's format read and checked
into its modules; the cache), `apply` (the attention processor, and the hypernetworks on a pipeline for one job).
"""
from modules.networks.hypernetwork.apply import (AppliedHypernetworks, HypernetworkAttnProcessor,  # noqa: F401
                                                 applied, attention_layers)
from modules.networks.hypernetwork.files import (EXTENSION, TAG_KIND, HypernetworkInfo,  # noqa: F401
                                                 HypernetworkRegistry, api_list, requests_from_tags)
from modules.networks.hypernetwork.loading import (ACTIVATIONS, DEFAULT_LAYER_STRUCTURE, MAX_LAYERS,  # noqa: F401
                                                   Hypernetwork, HypernetworkCache, HypernetworkError,
                                                   HypernetworkModule, load_hypernetwork)
