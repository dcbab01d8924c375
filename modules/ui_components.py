"""A1111's `modules.ui_components` for extensions: a thin forward to `modules/ui/a1111_components.py`."""
from modules.ui.a1111_components import (DropdownEditable, DropdownMulti, FormColorPicker, FormColumn,  # noqa: F401
                                         FormComponent, FormGroup, FormHTML, FormRow, InputAccordion,
                                         ResizeHandleRow, ToolButton)
