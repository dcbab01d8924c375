"""The project's version, and how it is written into infotext."""
VERSION = "0.1.0"

# A1111 reads "Version" to decide which old behaviours to emulate when pasting (infotext_versions.py).
# We implement v1.10.1's semantics, so we say so first and name ourselves after it.
INFOTEXT_VERSION = f"v1.10.1-diffusers-webui-{VERSION}"
