"""A1111's `modules.ui_common` for extensions: a thin forward to `modules/ui/a1111_common.py`."""
from modules.ui.a1111_common import (OutputPanel, create_output_panel, create_refresh_button,  # noqa: F401
                                     folder_symbol, plaintext_to_html, refresh_symbol, save_files,
                                     update_generation_info)


def __getattr__(name: str):
    from modules.addons.missing_names import missing_name

    raise missing_name("modules.ui_common", name)
