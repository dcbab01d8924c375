"""Taking an A1111 prompt apart before its text is parsed: comments, extra-network tags, AND parts.

* ``strip_comments``   — ``modules/processing_scripts/comments.py``: ``# …`` to the end of the line.
* ``extract_networks`` — ``modules/extra_networks.py:parse_prompt``: ``<kind:arg:arg:key=value>`` tags.
* ``split_and``        — ``prompt_parser.get_multicond_prompt_list``: ``a AND b :0.7`` (composable diffusion).

What is left of each part is parsed by ``attention.py`` (emphasis, BREAK) and ``schedules.py`` (prompt editing,
alternation).

The results match A1111's, float for float; this was checked by differential testing against A1111's own
functions on tens of thousands of generated prompts. Where A1111 raises or takes unbounded time on hostile
input, this module stays total and bounded instead; each such place says so below ("Guard: …"). Nothing
here imports torch, gradio or fastapi.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["NetworkTag", "extract_networks", "split_and", "strip_comments"]


# ---------------------------------------------------------------------------------------------------------------
# Comments (A1111 processing_scripts/comments.py, setting "enable_prompt_comments", on by default)

# A1111 applies these two substitutions in this order. The first removes whole-line comments together with
# their line break (and puts one "\n" back); the second removes a comment that follows text on a line. The
# quirks are A1111's and kept: "#c\nx" becomes "\nx", and two comment lines in a row lose only one line break
# in the first pass because the first match consumed the "\n" the second one would start with.
_RE_LINE_COMMENT = re.compile("(^|\n)#[^\n]*(\n|$)")
_RE_TRAILING_COMMENT = re.compile("#[^\n]*(\n|$)")


def strip_comments(text: str) -> str:
    """Remove ``# comments`` the way A1111 does (both regexes are linear: no backtracking can fail)."""
    text = _RE_LINE_COMMENT.sub("\n", text)
    return _RE_TRAILING_COMMENT.sub("\n", text)


# ---------------------------------------------------------------------------------------------------------------
# Extra-network tags (A1111 extra_networks.py)

_RE_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class NetworkTag:
    """One ``<kind:args>`` tag. ``<lora:name:0.8:unet=0.5>`` → kind "lora", name "name", positional ("0.8",),
    named {"unet": "0.5"}, items ("name", "0.8", "unet=0.5").

    A1111's ``ExtraNetworkParams`` splits the ``:``-separated items into named ones (exactly one ``=``) and
    positional ones; consumers (the LoRA network) take ``positional[0]`` as the name. Here ``name`` is that
    first positional item and ``positional`` holds the ones after it. ``items`` keeps the raw list, which
    A1111's hypernetwork handler indexes directly.
    """

    kind: str
    name: str
    positional: tuple[str, ...] = ()
    named: dict[str, str] = field(default_factory=dict, hash=False)
    items: tuple[str, ...] = ()

    @classmethod
    def from_match(cls, kind: str, args: str) -> NetworkTag:
        items = args.split(":")
        positional: list[str] = []
        named: dict[str, str] = {}
        for item in items:
            # A1111: item.split('=', 2) and exactly two parts → named; "a=b=c" (three parts) stays positional.
            parts = item.split("=", 2)
            if len(parts) == 2:
                named[parts[0]] = parts[1]
            else:
                positional.append(item)
        name = positional[0] if positional else ""
        return cls(kind=kind, name=name, positional=tuple(positional[1:]), named=named, items=tuple(items))


def extract_networks(prompt: str) -> tuple[str, list[NetworkTag]]:
    """Remove every ``<kind:args>`` tag from the prompt (A1111 ``re.sub`` with ``<(\\w+):([^>]+)>``, nothing put
    in its place) and return the remaining text and the tags in prompt order.

    Guard: the regex backtracks over the rest of the text for every ``<word:`` that has no ``>`` after it, which
    is quadratic on e.g. ``"<a:" * 30000``. No match can end after the last ``>``, so only the text up to it is
    searched; there every ``[^>]+`` attempt reaches a ``>`` and succeeds, which keeps the work linear. The
    result is identical to searching the whole string.
    """
    tags: list[NetworkTag] = []
    last_close = prompt.rfind(">")
    if last_close < 0:
        return prompt, tags
    head, tail = prompt[: last_close + 1], prompt[last_close + 1:]

    def found(match: re.Match) -> str:
        tags.append(NetworkTag.from_match(match.group(1), match.group(2)))
        return ""

    return _RE_EXTRA_NETWORK.sub(found, head) + tail, tags


# ---------------------------------------------------------------------------------------------------------------
# AND (A1111 prompt_parser.get_multicond_prompt_list, for one prompt)

_RE_AND = re.compile(r"\bAND\b")
# The number A1111's re_weight accepts after the last ":" of a part.
_RE_AND_WEIGHT = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")


def _split_weight(part: str) -> tuple[str, float]:
    r"""One AND part → (text, weight), as A1111's
    ``re_weight = ^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$`` would split it.

    Guard: that regex is quadratic on long runs of whitespace (the lazy group retries ``\s*$`` from every
    position), so its meaning is computed directly: the lazy group stops at the earliest position from which
    the rest is either only whitespace, or whitespace, ":", whitespace, a number, whitespace. Only the last
    ":" can start such a tail (the tail has no other ":"), and the earliest start is the beginning of the
    whitespace before it. ``str.isspace``/``rstrip`` use the same Unicode whitespace as ``\s``.
    """
    body = part.rstrip()
    colon = body.rfind(":")
    if colon >= 0:
        number = body[colon + 1:].lstrip()
        if _RE_AND_WEIGHT.fullmatch(number):
            try:
                return body[:colon].rstrip(), float(number)
            except ValueError:  # cannot happen for what the regex accepts; stay total anyway
                pass
    return body, 1.0


def split_and(prompt: str) -> list[tuple[str, float]]:
    """``"a AND b :0.7 AND c:-1"`` → ``[("a", 1.0), (" b", 0.7), (" c", -1.0)]``.

    Splits on the whole word ``AND`` (uppercase); each part's trailing ``:number`` is its weight (negative
    allowed, default 1.0) and trailing whitespace is dropped, leading whitespace kept — all as A1111 does.
    A1111 also de-duplicates equal texts across a batch; for one prompt the caller sees every part.
    """
    return [_split_weight(part) for part in _RE_AND.split(prompt)]
