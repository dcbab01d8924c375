"""A1111's `modules.infotext_utils` for extensions: a thin forward to `modules/ui/a1111_infotext.py` (parsing, the
registry of "Send to" buttons) and `modules/ui/a1111_paste_buttons.py` (wiring them)."""
from modules.ui.a1111_infotext import (ParamBinding, PasteField, add_paste_fields, bind_buttons,  # noqa: F401
                                       create_buttons, create_override_settings_dict, get_override_settings,
                                       image_from_url_text, parse_generation_parameters, paste_fields, quote,
                                       register_paste_params_button, registered_param_bindings, reset, unquote)
from modules.ui.a1111_paste_buttons import connect_paste_params_buttons  # noqa: F401


def __getattr__(name: str):
    from modules.addons.missing_names import missing_name

    raise missing_name("modules.infotext_utils", name)
