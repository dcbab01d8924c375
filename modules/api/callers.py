"""Who calls a route: the --api-auth login and the client's address, to tell one caller's jobs from another's."""
from __future__ import annotations

import base64

from fastapi import Request

from modules.jobs import Submitter


def api_user(http: Request) -> str:
    """The --api-auth login of the call ("" without one; auth itself was checked before any route runs)."""
    scheme, _, encoded = http.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(encoded).decode("utf-8", "replace").partition(":")[0]
        except ValueError:
            pass
    return ""


def submitter(http: Request) -> Submitter:
    """Who is calling, to tell their jobs from others': the client's address and, with --api-auth, the user."""
    return Submitter(address=http.client.host if http.client else "", user=api_user(http))
