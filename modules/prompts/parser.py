"""A1111's prompt language, parsed the way A1111 v1.10.1 parses it.

What lives here, and where A1111 keeps the same behaviour:

* ``strip_comments``            — ``modules/processing_scripts/comments.py``: ``# …`` to the end of the line.
* ``extract_networks``          — ``modules/extra_networks.py:parse_prompt``: ``<kind:arg:arg:key=value>`` tags.
* ``split_and``                 — ``prompt_parser.get_multicond_prompt_list``: ``a AND b :0.7`` (composable diffusion).
* ``get_schedules``             — ``prompt_parser.get_learned_conditioning_prompt_schedules``: prompt editing
  ``[from:to:when]`` and alternation ``[a|b]`` turned into ``(end_at_step, text)`` pairs, with A1111's lark grammar.
* ``parse_prompt_attention``    — ``prompt_parser.parse_prompt_attention``: ``(x)``, ``[x]``, ``(x:1.3)``, escapes and
  ``BREAK`` (emitted as ``("BREAK", -1)``, which the chunker in ``conditioning.py`` turns into a new 75-token chunk,
  as ``sd_hijack_clip.tokenize_line`` does).
* ``prompt_variants_for_counting`` — the texts ``ui.update_token_counter`` measures.

The results match A1111's (with the lark it ships replaced by the installed lark 1.3), float for float;
this was checked by differential testing against A1111's own functions on tens of thousands of generated
prompts. Where A1111 raises or takes unbounded time on hostile input, this module stays total and bounded
instead; each such place says so below ("Guard: …"). Nothing here imports torch, gradio or fastapi.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

import lark
import numpy as np

__all__ = [
    "NetworkTag",
    "extract_networks",
    "get_schedules",
    "parse_prompt_attention",
    "prompt_variants_for_counting",
    "split_and",
    "strip_comments",
]


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


# ---------------------------------------------------------------------------------------------------------------
# Emphasis (A1111 prompt_parser.parse_prompt_attention)

# A1111's tokenizer, unchanged. Alternatives in order: escaped brackets and backslash, a lone backslash, the
# two openers, ":weight)" closing a round bracket, the two closers, a run of ordinary text, a lone ":".
_RE_ATTENTION = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.VERBOSE)

_RE_BREAK_WORD = re.compile(r"\bBREAK\b")
_SMALLEST_NORMAL = float(np.finfo(np.float64).tiny)
_NORMAL_FLOOR = 1e-290   # below this bound on the weights, subnormals may appear: they are flushed to zero
_ROUND_MULTIPLIER = 1.1
_SQUARE_MULTIPLIER = 1 / 1.1


def _split_on_break(text: str) -> list[str]:
    r"""``re.split(r"\s*\bBREAK\b\s*", text)``, in linear time.

    Guard: that regex is quadratic on long whitespace runs without a BREAK after them (``\s*`` is retried
    from each position). The same separators are found by locating each ``\bBREAK\b`` and widening it over
    the whitespace on both sides; on the left it may not reach back into the previous separator, which is
    exactly where the regex's leftmost match would start.
    """
    if "BREAK" not in text:
        return [text]
    parts: list[str] = []
    done = 0
    for match in _RE_BREAK_WORD.finditer(text):
        start, end = match.start(), match.end()
        while start > done and text[start - 1].isspace():
            start -= 1
        while end < len(text) and text[end].isspace():
            end += 1
        parts.append(text[done:start])
        done = end
    parts.append(text[done:])
    return parts


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    r"""Split a prompt into (text, weight) pieces, A1111's emphasis syntax:

    ``(x)`` ×1.1, ``[x]`` ÷1.1 (nesting multiplies), ``(x:1.3)`` ×1.3, ``\( \) \[ \] \\`` literal characters,
    brackets left open run to the end of the prompt, a ``)`` or ``]`` without an opener is literal text, and
    the word ``BREAK`` becomes ``("BREAK", -1)``. Neighbouring pieces of equal weight are merged; an empty
    prompt gives ``[("", 1.0)]``.

    >>> parse_prompt_attention('an (important) word')
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]

    Weights are products of the multipliers applied in the order A1111 applies them (innermost bracket
    first, unclosed round brackets outermost-first, then unclosed square ones), so floats agree to the last
    bit: ``((a))`` is 1.1 * 1.1 = 1.2100000000000002.

    Guards, where A1111 raises or is slow:
    * a weight its regex accepts but ``float`` does not (``(a:1.2.3)``, ``(a:.)``) raises ValueError in
      A1111; here that ``:1.2.3`` is plain text and the ``)`` an ordinary ×1.1 close → ``[("a:1.2.3", 1.1)]``.
      A very long digit string is a valid float: ``(a:999…9)`` gives weight ``inf``, as in A1111.
    * A1111 multiplies a Python list element by element for every bracket, quadratic in nested brackets
      (``"(a" * 30000``). The same products in the same order are computed as numpy float64 slice
      multiplications (IEEE-identical to Python floats), and the final merge is linear.
    * Below the smallest normal float (2.2e-308: about 7,400 nested ``[`` … ``]``) a weight becomes 0.0 where
      A1111 keeps a subnormal one; arithmetic on subnormals is some hundred times slower on common CPUs, and
      three thousand such brackets took seconds. No weight that small survives the cast to the model's dtype.
    """
    pieces: list[str] = []
    initial: list[float] = []
    # (first piece, end piece, multiplier): "multiply pieces[first:end]"; `end` is the number of pieces at
    # the moment the bracket closes, so pieces added later are not affected — A1111's multiply_range.
    operations: list[tuple[int, int, float]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_split_on_break(chunk)):
            if i > 0:
                pieces.append("BREAK")
                initial.append(-1.0)
            pieces.append(part)
            initial.append(1.0)

    for match in _RE_ATTENTION.finditer(text):
        token = match.group(0)
        weight = match.group(1)
        if token.startswith("\\"):
            pieces.append(token[1:])   # a lone "\" adds an empty piece, as in A1111
            initial.append(1.0)
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            try:
                multiplier = float(weight)
            except ValueError:
                # Guard (A1111 raises): keep ":…" as text, then close the bracket normally.
                add_text(token[:-1])
                operations.append((round_open.pop(), len(pieces), _ROUND_MULTIPLIER))
            else:
                operations.append((round_open.pop(), len(pieces), multiplier))
        elif token == ")" and round_open:
            operations.append((round_open.pop(), len(pieces), _ROUND_MULTIPLIER))
        elif token == "]" and square_open:
            operations.append((square_open.pop(), len(pieces), _SQUARE_MULTIPLIER))
        else:
            add_text(token)

    # Brackets never closed apply to the end: round ones first (outermost first), then square ones.
    operations += [(start, len(pieces), _ROUND_MULTIPLIER) for start in round_open]
    operations += [(start, len(pieces), _SQUARE_MULTIPLIER) for start in square_open]

    if not pieces:
        return [("", 1.0)]

    weights = np.array(initial, dtype=np.float64)
    smallest = 1.0   # no weight's magnitude is below this: every initial weight is ±1
    with np.errstate(all="ignore"):   # overflow to inf, inf * 0 = nan: as with Python floats, no warnings
        for start, end, multiplier in operations:
            if start < end:
                part = weights[start:end]
                part *= multiplier
                smallest *= min(1.0, abs(multiplier)) if multiplier == multiplier else 1.0
                if smallest < _NORMAL_FLOOR:
                    part[np.abs(part) < _SMALLEST_NORMAL] = 0.0
    values = weights.tolist()

    # Merge runs of equal weight: the run keeps its first piece's weight (A1111 compares each following piece
    # with the merged one, so nan never merges and 0.0 merges with -0.0).
    result: list[tuple[str, float]] = []
    run_start = 0
    for i in range(1, len(pieces) + 1):
        if i == len(pieces) or values[i] != values[run_start]:
            result.append(("".join(pieces[run_start:i]), values[run_start]))
            run_start = i
    return result


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
