"""Errors in A1111's API shape: a 4xx names the field and the rule."""
from __future__ import annotations

from fastapi import HTTPException


def validation_error(loc: list, message: str, kind: str = "value_error") -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", *loc], "msg": message, "type": kind}])
