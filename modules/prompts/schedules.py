"""A1111's prompt editing and alternation: which text a prompt stands for at each step.

* ``get_schedules`` — ``prompt_parser.get_learned_conditioning_prompt_schedules``: prompt editing
  ``[from:to:when]`` and alternation ``[a|b]`` turned into ``(end_at_step, text)`` pairs, with A1111's lark
  grammar (within budgets that keep hostile prompts cheap: see ``WHOLE_PROMPT_BUDGET``).
* ``prompt_variants_for_counting`` — the texts ``ui.update_token_counter`` measures.

The results match A1111's (with the lark it ships replaced by the installed lark 1.3), float for float;
this was checked by differential testing against A1111's own functions on tens of thousands of generated
prompts. Where A1111 raises or takes unbounded time on hostile input, this module stays total and bounded
instead; each such place says so below ("Guard: …"). Nothing here imports torch, gradio or fastapi.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import lark

from modules.prompts.splitting import extract_networks, split_and, strip_comments

__all__ = ["get_schedules", "prompt_variants_for_counting"]


# ---------------------------------------------------------------------------------------------------------------
# Prompt editing and alternation (A1111 prompt_parser.get_learned_conditioning_prompt_schedules)

# A1111's grammar, verbatim. `start` also accepts stray brackets and colons, so almost any text parses; it fails
# (and the prompt is then used literally) on a "|" outside an alternation or a "\" before a newline or at the end.
_SCHEDULE_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@lru_cache(maxsize=1)
def _schedule_parser() -> lark.Lark:
    # Same settings as A1111: Earley, dynamic lexer, ambiguities resolved by lark, placeholders for "[…]".
    return lark.Lark(_SCHEDULE_GRAMMAR, parser="earley", maybe_placeholders=True)


# The parsed form a schedule is computed from: a tuple of parts, each a literal string, a _Scheduled or an
# _Alternate. Only these two change with the step; everything else (emphasis included) is kept verbatim.
Parts = tuple  # tuple[str | _Scheduled | _Alternate, ...]


@dataclass(frozen=True)
class _Scheduled:
    before: Parts | None   # None: "[to:when]" — nothing before `when`
    after: Parts
    number: str            # the NUMBER token as written: "10", "0.5", ".5", "1e3"


@dataclass(frozen=True)
class _Alternate:
    options: tuple[Parts, ...]   # "[fe|]" → (("fe",), ()) — an empty option is the empty text


class _Unparsable(Exception):
    """The prompt does not parse with A1111's grammar: A1111 then uses it literally, and so do we."""


class _TooComplex(Exception):
    """Guard: the bracket structure is beyond what the Earley parser handles quickly; used literally."""


# Guard on lark's work. Its Earley parser is slow on A1111's grammar, which is highly ambiguous (every bracket
# and colon may also be a literal character): time grows about with the square of the bracket characters
# ("[]():|") in the text and linearly with its length. Measured on a 2-core machine (lark 1.3): 64 bracket
# characters 0.1-0.35 s, 96 up to 0.9 s, 160 (40 "(word:1.2)" groups) 0.6 s, ~530 15 s; 100,000 plain characters
# 0.4 s. Cost units ≈ brackets² + characters / 20, so one unit is ~80 µs.
#
# 1. No "[" in the prompt: no lark at all (the result is provably the prompt itself).
# 2. Cost ≤ WHOLE_PROMPT_BUDGET (≤ ~0.2 s): the whole prompt goes to lark, exactly as in A1111.
# 3. Otherwise only the bracket groups that can hold an edit go to lark (_split_regions), at most
#    REGIONS_BUDGET units together (≤ ~0.4 s); a typical long prompt has one or two small such groups.
# 4. Beyond that the prompt is used literally — what A1111 does with a prompt it cannot parse.
WHOLE_PROMPT_BUDGET = 40 ** 2
REGIONS_BUDGET = 48 ** 2
MAX_SCHEDULE_CHARS = 20_000_000   # guard on output size: len(prompt) × number of schedule entries

_SPECIALS = frozenset("[]():|")


def _lark_cost(text: str) -> int:
    specials = sum(text.count(ch) for ch in _SPECIALS)
    return specials * specials + len(text) // 20


def _split_regions(prompt: str) -> list[tuple[int, int]]:
    """The parts of `prompt` lark must see when the whole prompt is too big for it: ``[(start, end), …]``,
    disjoint, in order.

    Every construct of the grammar (emphasized, scheduled, alternate) is a bracket pair whose inside is itself
    well nested — inside a construct a bracket can only be part of a nested construct, never literal (literal
    brackets exist only at the top level). So a construct lies within one maximal well-nested pair, and
    outside those pairs the text is top-level text that no step changes. Only pairs that contain a "[" and a
    ":" or "|" can hold an edit; only those are parsed.

    Outside the pairs, two things make the whole prompt unparsable, as in A1111: a "|" (it belongs only in an
    alternation), and a "\\" that starts no escape (the grammar accepts it only as "\\." with '.' any
    character but a newline, pairing backslashes from the left) — the latter fails anywhere.

    This is not always what lark decides for the whole prompt: lark resolves the grammar's ambiguities by
    the order in which its Earley parser happened to build alternatives, and with stray top-level brackets
    right next to an edit it sometimes prefers the literal reading (``"[a:1]]]"`` and ``"[a:1]:("`` stay
    literal in A1111, ``"[a:1]]:]"`` is an edit). To follow it in most such cases, each group is parsed
    together with the stray top-level brackets and colons touching it. Differential testing against
    whole-prompt lark: identical on 1,000+ generated prompts without stray brackets; 3 differences in 1,400
    prompts dense with stray brackets (that is the only kind of input where they differ).
    """
    n = len(prompt)
    pairs: list[tuple[int, int]] = []
    bars: list[int] = []
    stack: list[tuple[str, int]] = []
    special = bytearray(n)      # 1 where an unescaped "[]():|" is
    i = 0
    while i < n:
        ch = prompt[i]
        if ch == "\\":
            if i + 1 >= n or prompt[i + 1] == "\n":
                raise _Unparsable
            i += 2
            continue
        if ch in _SPECIALS:
            special[i] = 1
        if ch in "([":
            stack.append((ch, i))
        elif ch in ")]":
            opener = "(" if ch == ")" else "["
            if stack and stack[-1][0] == opener:
                pairs.append((stack.pop()[1], i + 1))
            else:
                # A mismatched closer cannot end any construct, and every opener still open would have it
                # (or an unmatched opener) inside: none of them can close validly any more.
                stack.clear()
        elif ch == "|":
            bars.append(i)
        i += 1

    # The maximal pairs (pairs nest or are disjoint; sorted by start, one inside the previous is skipped).
    pairs.sort()
    maximal: list[tuple[int, int]] = []
    for start, end in pairs:
        if not maximal or start >= maximal[-1][1]:
            maximal.append((start, end))

    # A "|" outside every pair can never be inside an alternation.
    r = 0
    for bar in bars:
        while r < len(maximal) and maximal[r][1] <= bar:
            r += 1
        if r == len(maximal) or maximal[r][0] > bar:
            raise _Unparsable

    for start, end in maximal:        # what is left marked is a stray top-level bracket, colon or bar
        special[start:end] = bytes(end - start)

    regions: list[tuple[int, int]] = []
    for start, end in maximal:
        inside = prompt[start:end]
        # An edit needs "[" and ":"; an alternation "[" and "|"; a "|" anywhere else fails (lark says so).
        if not ("|" in inside or ("[" in inside and ":" in inside)):
            continue
        while start > 0 and special[start - 1]:
            start -= 1
        while end < n and special[end]:
            end += 1
        if regions and start <= regions[-1][1]:
            start = regions.pop()[0]
        regions.append((start, end))
    return regions


@lru_cache(maxsize=1024)
def _parse_region(text: str) -> Parts | None:
    """Parse one bracket group with A1111's grammar into Parts, or None if the grammar rejects it (cached,
    failures too: the same groups recur across a batch, AND parts and the token counter's keystrokes)."""
    try:
        tree = _schedule_parser().parse(text)
    except lark.exceptions.LarkError:
        return None
    return _to_parts(tree)


def _to_parts(node) -> Parts:
    """Lark tree → Parts. Recursion depth is bounded by MAX_REGION_SPECIALS."""
    if isinstance(node, lark.Token):
        return (str(node),)
    if node.data == "scheduled":
        before, after, _space, number, _space2 = node.children
        return (_Scheduled(None if before is None else _to_parts(before), _to_parts(after), str(number)),)
    if node.data == "alternate":
        return (_Alternate(tuple(() if child is None else _to_parts(child) for child in node.children)),)
    # start, prompt, emphasized, plain: their text in order (tokens of "!" rules are kept by lark)
    out: list = []
    for child in node.children:
        if child is not None:
            out.extend(_to_parts(child))
    return _merge_strings(out)


def _merge_strings(parts) -> Parts:
    out: list = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        elif not (isinstance(part, str) and part == ""):
            out.append(part)
    return tuple(out)


@lru_cache(maxsize=64)
def _parse_prompt(prompt: str) -> Parts:
    """The whole prompt as Parts; raises _Unparsable or _TooComplex."""
    if "[" not in prompt:
        # Fast path: without "[" there is no edit and no alternation. If the grammar rejects the text (a "|",
        # a trailing "\\"), A1111 uses it literally — the same text either way.
        return (prompt,)
    if _lark_cost(prompt) <= WHOLE_PROMPT_BUDGET:
        parsed = _parse_region(prompt)
        if parsed is None:
            raise _Unparsable
        return parsed
    return _parse_by_regions(prompt)


def _parse_by_regions(prompt: str) -> Parts:
    regions = _split_regions(prompt)
    if sum(_lark_cost(prompt[s:e]) for s, e in regions) > REGIONS_BUDGET:
        raise _TooComplex
    out: list = []
    done = 0
    for start, end in regions:
        out.append(prompt[done:start])
        parsed = _parse_region(prompt[start:end])
        if parsed is None:
            raise _Unparsable
        out.extend(parsed)
        done = end
    out.append(prompt[done:])
    return _merge_strings(out)


def _walk(parts: Parts):
    """Every _Scheduled and _Alternate, nested ones included (A1111's visitor sees all of them)."""
    stack = [parts]
    while stack:
        for part in stack.pop():
            if isinstance(part, _Scheduled):
                yield part
                if part.before is not None:
                    stack.append(part.before)
                stack.append(part.after)
            elif isinstance(part, _Alternate):
                yield part
                stack.extend(part.options)


def _text_at(parts: Parts, step: int, when: dict) -> str:
    out: list[str] = []

    def emit(items: Parts) -> None:
        for part in items:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, _Scheduled):
                if step <= when[part.number]:
                    if part.before is not None:
                        emit(part.before)
                else:
                    emit(part.after)
            else:
                emit(part.options[(step - 1) % len(part.options)])

    emit(parts)
    return "".join(out)


def get_schedules(
    prompts: list[str],
    steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[list[tuple[int, str]]]:
    """For each prompt, ``[(end_at_step, text), …]``: the text to use up to and including each step.

    >>> get_schedules(["a [b:c:0.5]"], 20)
    [[(10, 'a b'), (20, 'a c')]]

    ``[from:to:when]``, ``[to:when]``, ``[from::when]``: ``when`` with a "." is a fraction of the steps, without
    one an absolute step. ``[a|b|c]`` cycles one option per step (every step becomes an entry). Edits nest.

    Hires fix (``hires_steps`` given, new scheduling): the schedule is for the second pass of ``hires_steps``
    steps; an integer ``when`` counts from the start of the first pass (``when - steps``), a fraction is
    ``(when - 1) × hires_steps`` — so 0.5 is over before the second pass and 1.5 is half-way through it.
    ``use_old_scheduling`` (infotext "Old prompt editing timelines"): ``when < 1`` is a fraction, anything else
    a step, no hires offset.

    A prompt that A1111's grammar rejects is used as it is: ``[(steps, prompt)]``.

    Guards (where A1111 raises or runs for minutes): ``when`` overflowing to infinity ("1e999") counts as the
    last step (``-1e999`` as never); a prompt whose bracket structure exceeds the Earley limits above, or
    whose schedule would exceed MAX_SCHEDULE_CHARS of text, is used literally.
    """
    if isinstance(prompts, str):
        raise TypeError("get_schedules takes a list of prompts")
    cache: dict[str, list[tuple[int, str]]] = {}
    return [
        cache[p] if p in cache else cache.setdefault(p, _schedule(p, steps, hires_steps, use_old_scheduling))
        for p in prompts
    ]


def _schedule(prompt: str, base_steps: int, hires_steps: int | None, old: bool) -> list[tuple[int, str]]:
    if hires_steps is None or old:
        int_offset, float_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, float_offset, steps = base_steps, 1.0, hires_steps

    try:
        parts = _parse_prompt(prompt)
    except (_Unparsable, _TooComplex, RecursionError):
        return [(steps, prompt)]

    # Where each edit switches: A1111's CollectSteps, with the overflow guard.
    never = min(steps, 0) - 1        # below every step that is ever asked for
    when: dict[str, int] = {}
    points = {steps}
    alternates = False
    for node in _walk(parts):
        if isinstance(node, _Alternate):
            alternates = True
            continue
        if node.number in when:
            continue
        value = float(node.number)
        if old:
            value = value * steps if value < 1 else value
        elif "." in node.number:
            value = (value - float_offset) * steps
        else:
            value = value - int_offset
        # A1111: min(steps, int(value)); int() of ±inf or nan raises there. min() first is equal for finite
        # values, maps +inf and nan to `steps`; -inf can never be reached.
        value = min(steps, value)
        at = never if value == -math.inf else int(value)
        when[node.number] = at
        if at >= 1:
            points.add(at)
    if alternates:
        # Guard: an alternation makes every step an entry; refuse before building a huge set (steps=10**9).
        if max(steps, 1) * (len(prompt) + 16) > MAX_SCHEDULE_CHARS:
            return [(steps, prompt)]
        points.update(range(1, steps + 1))
    if len(points) * (len(prompt) + 16) > MAX_SCHEDULE_CHARS:
        return [(steps, prompt)]
    return [(step, _text_at(parts, step, when)) for step in sorted(points)]


# ---------------------------------------------------------------------------------------------------------------
# Token counter (A1111 ui.update_token_counter)

def prompt_variants_for_counting(prompt: str, steps: int, *, is_positive: bool = True,
                                 comments: bool = True) -> list[str]:
    """Every distinct text the UI token counter measures; A1111 shows the largest count among them.

    As in A1111: comments stripped (its comments script hooks ``before_token_counter``), network tags removed,
    the positive prompt split on AND (the negative prompt is not), and every prompt-editing / alternation
    variant over `steps` steps.
    """
    text = strip_comments(prompt) if comments else prompt
    text, _tags = extract_networks(text)
    parts = [part for part, _weight in split_and(text)] if is_positive else [text]
    variants: dict[str, None] = {}
    for schedule in get_schedules(list(dict.fromkeys(parts)), steps):
        for _step, variant in schedule:
            variants.setdefault(variant, None)
    return list(variants)
