"""Extra Networks cards: what the UI's Textual Inversion / Hypernetworks / Checkpoints / Lora tabs show.

A1111 (`modules/ui_extra_networks*.py`, `extensions-builtin/Lora/ui_extra_networks_lora.py`) behaviour, as
plain data: one `Card` per item of a registry, with its preview image (`<stem>.png`, `<stem>.preview.png`,
also .jpg/.jpeg/.webp/.gif, next to the file), its description (`<stem>.txt`, `<stem>.description.txt`, or
the user metadata "description"), sort keys, search text, and the text a click puts into the prompt.

User metadata is A1111's `<stem>.json` beside the file ("description", "activation text", "preferred
weight", "negative text", "notes", and "vae" for checkpoints).

Cards come only from the registries: a name the browser sends back is looked up among the listed cards,
never turned into a path. Everything that goes into HTML is escaped here.

The package: `files` (preview, description and user metadata beside a model file), `listing` (the cards of a
tab, search, sort, a click on a card), `render` (thumbnails and HTML).
"""
from modules.networks.cards.files import (KNOWN_KEYS, MAX_DESCRIPTION_FILE, MAX_TEXT, MAX_WEIGHT,  # noqa: F401
                                          MIN_WEIGHT, PREVIEW_EXTENSIONS, TEXT_KEYS, VAE_KEY, WEIGHT_KEY,
                                          find_description, find_preview, metadata_path, read_user_metadata,
                                          validate_user_metadata, without_extension, write_user_metadata)
from modules.networks.cards.listing import (CHECKPOINTS, DEFAULT_WEIGHT, HYPERNETWORKS, KINDS, LORA,  # noqa: F401
                                            SORT_MODES, TEXTUAL_INVERSION, Card, available_kinds, filter_cards,
                                            find_card, format_weight, list_cards, preferred_weight, refresh,
                                            sort_cards, toggle_card)
from modules.networks.cards.render import (MAX_PREVIEW_BYTES, MAX_PREVIEW_PIXELS, THUMBNAIL_SIZE,  # noqa: F401
                                           ThumbnailCache, card_html, cards_html, make_thumbnail)
