"""A1111's `modules.ui_extra_networks` for extensions: a thin forward to `modules/ui/a1111_extra_networks.py`."""
from modules.ui.a1111_extra_networks import (ExtraNetworksPage, allowed_dirs,  # noqa: F401
                                             allowed_preview_extensions, extra_pages, quote_js, register_page)


def __getattr__(name: str):
    from modules.addons.missing_names import missing_name

    raise missing_name("modules.ui_extra_networks", name)
