"""Pydantic 1 idioms in extensions' models, on this web UI's pydantic 2.

A1111 1.10 ran pydantic 1, and extensions written for it define their API models the pydantic-1 way. These idioms
break on pydantic 2 (agent-scheduler uses the first three, the ControlNet extension the last):

- `class Config(ParentModel.__config__): ...` — pydantic 2 models have no `__config__`: every model gets one here,
  a class holding its `model_config` (what pydantic 1's held), so the idiom subclasses it.
- `class Config: schema_extra = ...` (and pydantic 1's other config names, `orm_mode`, `allow_mutation`, ...) —
  pydantic 2 warns and ignores them. In a model defined in extension code the class is translated into pydantic
  2's `model_config` before pydantic reads it (renamed keys renamed, keys pydantic 2 does not know dropped, as
  pydantic 1 ignored unknown ones), silently.
- `name: Optional[X]` or `name: Optional[X] = Field(title=...)` without a default — optional with default None in
  pydantic 1, required in pydantic 2. In a model defined in extension code such a field (and one typed `Any`)
  gets the default None. (`Field(...)` cannot be told from `Field()` on pydantic 2, so an Optional field with an
  explicit `...` becomes optional too.)
- `@root_validator` (bare, or without `pre=True`) — pydantic 2 refuses it unless `skip_on_failure=True`; called
  from extension code it gets that (pydantic 1 also ran it after a field had failed, but the model failed either
  way: only the list of errors differs).

"Defined in extension code" means the model's module file is under an `extensions` folder (as
`missing_names.calling_extension` recognises extension files): the web UI's own models are never changed.
"""
from __future__ import annotations

import functools
import logging
import sys
import types
import typing
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict
from pydantic.deprecated import class_validators
from pydantic.fields import FieldInfo

from modules.addons.missing_names import _EXTENSION_FILE   # how extension files are recognised

log = logging.getLogger(__name__)

# Pydantic 1's config names that pydantic 2 renamed (pydantic 2 only warns about them).
_RENAMED = {
    "allow_population_by_field_name": "populate_by_name",
    "anystr_lower": "str_to_lower",
    "anystr_strip_whitespace": "str_strip_whitespace",
    "anystr_upper": "str_to_upper",
    "keep_untouched": "ignored_types",
    "max_anystr_length": "str_max_length",
    "min_anystr_length": "str_min_length",
    "orm_mode": "from_attributes",
    "schema_extra": "json_schema_extra",
    "validate_all": "validate_default",
}
_V2_KEYS = frozenset(ConfigDict.__annotations__)
_VIEW = "__pydantic_v2_config_view__"   # marks the classes `__config__` returns


class _ConfigOfModel:
    """`Model.__config__`: a class whose attributes are the model's `model_config`, so that pydantic 1's
    `class Config(Parent.__config__)` works (pydantic 2 inherits the parent's config by itself)."""

    def __get__(self, instance, owner):
        model = owner if instance is None else type(instance)
        return type("Config", (), {**dict(model.model_config), _VIEW: True})


def _defined_in_extension(namespace: dict) -> bool:
    module = sys.modules.get(namespace.get("__module__", ""))
    return bool(_EXTENSION_FILE.search(getattr(module, "__file__", None) or ""))


def _config_dict(config_class: type) -> dict:
    """A pydantic 1 `class Config` as pydantic 2's config dict; what came from a parent's `__config__` is left
    out (pydantic 2 inherits it)."""
    names = {name for klass in config_class.__mro__ if klass is not object and _VIEW not in vars(klass)
             for name in vars(klass) if not name.startswith("__")}
    config = {}
    for name in names:
        value = getattr(config_class, name)
        if name == "allow_mutation":
            name, value = "frozen", not value
        name = _RENAMED.get(name, name)
        if name in _V2_KEYS:
            config[name] = value
        else:
            log.debug("pydantic 1 config key %r of %s has no pydantic 2 equivalent: ignored", name, config_class)
    return config


def _accepts_none(annotation) -> bool:
    if annotation is Any:
        return True
    if typing.get_origin(annotation) is Annotated:
        return _accepts_none(typing.get_args(annotation)[0])
    return (typing.get_origin(annotation) in (typing.Union, types.UnionType)
            and type(None) in typing.get_args(annotation))


def _evaluated(annotation, namespace: dict):
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules.get(namespace.get("__module__", ""))
    try:
        return eval(annotation, dict(vars(module)) if module else {}, dict(namespace))  # noqa: S307 - its own code
    except Exception:   # noqa: BLE001 - an annotation we cannot read is left to pydantic
        return None


def _default_none_for_optional(namespace: dict) -> None:
    """Pydantic 1's rule: a field that accepts None and has no default has the default None."""
    annotations = namespace.get("__annotations__") or {}
    for name, raw in list(annotations.items()):
        annotation = _evaluated(raw, namespace)
        if name.startswith("_") or typing.get_origin(annotation) is typing.ClassVar or not _accepts_none(annotation):
            continue
        if name not in namespace:
            namespace[name] = None
        elif isinstance(namespace[name], FieldInfo) and namespace[name].is_required():
            # The field's own settings (title, alias, ...) travel in Annotated, the default is the plain None.
            annotations[name] = Annotated[annotation, namespace[name]]
            namespace[name] = None


def _translating(for_model):
    def for_model_v1(cls, bases, namespace, kwargs):
        if _defined_in_extension(namespace):
            _default_none_for_optional(namespace)
            config_class = namespace.get("Config")
            if isinstance(config_class, type) and "model_config" not in namespace:
                translated = {key: value for key, value in namespace.items() if key != "Config"}
                translated["model_config"] = _config_dict(config_class)
                return for_model.__func__(cls, bases, translated, kwargs)
        return for_model.__func__(cls, bases, namespace, kwargs)
    for_model_v1.__pydantic_v1_idioms__ = True
    return classmethod(for_model_v1)


def _root_validator_v1(original):
    @functools.wraps(original)
    def root_validator(*args, **kwargs):
        if _EXTENSION_FILE.search(sys._getframe(1).f_code.co_filename) and not kwargs.get("pre"):
            kwargs.setdefault("skip_on_failure", True)
            if args:   # the bare decorator: pydantic 2 only takes it with arguments
                return original(**kwargs)(*args)
        return original(*args, **kwargs)
    root_validator.__pydantic_v1_idioms__ = True
    return root_validator


def install() -> None:
    """Teach pydantic 2 the idioms above (once; the web UI's own models are unaffected)."""
    if "__config__" not in vars(BaseModel):
        BaseModel.__config__ = _ConfigOfModel()
    try:   # where pydantic 2 reads a class body's config: a private name, so a later pydantic may lack it
        from pydantic._internal._config import ConfigWrapper
        ConfigWrapper.for_model  # noqa: B018
    except (ImportError, AttributeError) as error:
        log.warning("extensions' pydantic 1 models are not translated on this pydantic (%s)", error)
        return
    if not hasattr(ConfigWrapper.for_model, "__pydantic_v1_idioms__"):
        ConfigWrapper.for_model = _translating(ConfigWrapper.for_model)
    if not hasattr(class_validators.root_validator, "__pydantic_v1_idioms__"):
        # `from pydantic import root_validator` and pydantic 1's `pydantic.class_validators` both lead here
        class_validators.root_validator = pydantic.root_validator = _root_validator_v1(class_validators.root_validator)
