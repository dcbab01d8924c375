"""Interrogation: a caption for an image, as A1111's img2img Interrogate buttons and POST /sdapi/v1/interrogate give —
"clip" (a BLIP caption, then CLIP's ranking of A1111's category lists) and "deepdanbooru" (DeepBooru's tags) —
from the weights files A1111 users already have, read weights-only and never downloaded."""
