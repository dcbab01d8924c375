"""A1111's old name of `modules.infotext_utils` (extensions still import it): the same module."""
import sys

from modules import infotext_utils

sys.modules[__name__] = infotext_utils
