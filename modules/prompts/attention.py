"""A1111's emphasis syntax: a prompt's text → (text, weight) pieces (``prompt_parser.parse_prompt_attention``).

``(x)``, ``[x]``, ``(x:1.3)``, escapes and ``BREAK`` (emitted as ``("BREAK", -1)``, which the chunker in
``chunks.py`` turns into a new 75-token chunk, as ``sd_hijack_clip.tokenize_line`` does).

The results match A1111's, float for float; this was checked by differential testing against A1111's own
functions on tens of thousands of generated prompts. Where A1111 raises or takes unbounded time on hostile
input, this module stays total and bounded instead; each such place says so below ("Guard: …"). Nothing
here imports torch, gradio or fastapi.
"""
from __future__ import annotations

import re

import numpy as np

__all__ = ["parse_prompt_attention"]


# ---------------------------------------------------------------------------------------------------------------
# Emphasis (A1111 prompt_parser.parse_prompt_attention)

# A1111's tokenizer, unchanged. Alternatives in order: escaped brackets and backslash, a lone backslash, the
# two openers, ":weight)" closing a round bracket, the two closers, a run of ordinary text, a lone ":".
RE_ATTENTION = re.compile(r"""
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

    for match in RE_ATTENTION.finditer(text):
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
