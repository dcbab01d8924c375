"""A1111 prompt syntax (modules/prompts/splitting.py, attention.py, schedules.py) against A1111 v1.10.1's
documented and observed behaviour.

Expected values are A1111's (its doctests, and its functions run on the same inputs), written out here.
"""
from __future__ import annotations

import gc
import math
import time

import pytest

from modules.prompts import schedules
from modules.prompts.attention import parse_prompt_attention
from modules.prompts.schedules import get_schedules, prompt_variants_for_counting
from modules.prompts.splitting import NetworkTag, extract_networks, split_and, strip_comments


def schedule(prompt, steps=10, hires_steps=None, old=False):
    return get_schedules([prompt], steps, hires_steps, old)[0]


# --- parse_prompt_attention ------------------------------------------------------------------------------------

# A1111 prompt_parser.parse_prompt_attention doctests, verbatim.
A1111_ATTENTION_DOCTESTS = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0],
      ["house", 1.5730000000000004],
      [" ", 1.1],
      ["on", 1.0],
      [" a ", 1.1],
      ["hill", 0.55],
      [", sun, ", 1.1],
      ["sky", 1.4641000000000006],
      [".", 1.1]]),
]


@pytest.mark.parametrize("text, expected", A1111_ATTENTION_DOCTESTS)
def test_attention_a1111_doctests(text, expected):
    assert [list(piece) for piece in parse_prompt_attention(text)] == expected


@pytest.mark.parametrize("text, expected", [
    ("((a))", [("a", 1.2100000000000002)]),          # 1.1 * 1.1, to the last bit
    ("[a]", [("a", 0.9090909090909091)]),
    ("[[a]]", [("a", 0.8264462809917354)]),
    ("(a:-1)", [("a", -1.0)]),
    ("(a:0) b", [("a", 0.0), (" b", 1.0)]),
    ("(a: 1.5 )", [("a", 1.5)]),
    ("[a:b:0.5]", [("a:b:0.5", 0.9090909090909091)]),   # edits are resolved before emphasis
    ("(a:1e309)", [("a:1e309", 1.1)]),                # A1111's weight regex takes only [+-]?[.\d]+
    ("\\\\x", [("\\x", 1.0)]),
    ("a\\b", [("ab", 1.0)]),                          # a lone backslash is dropped
    ("a:1.5)", [("a:1.5)", 1.0)]),                    # closer without opener: literal
    ("(a] b)", [("a] b", 1.1)]),
    ("[a)", [("a)", 0.9090909090909091)]),
    ("", [("", 1.0)]),
])
def test_attention_weights(text, expected):
    assert parse_prompt_attention(text) == expected


def test_attention_weight_of_many_digits_is_inf_as_in_a1111():
    assert parse_prompt_attention("(a:" + "9" * 400 + ")") == [("a", math.inf)]


@pytest.mark.parametrize("text", ["(a:1.2.3)", "(a:.)", "(a:..)", "(a:1.)x(b:.1.)"])
def test_attention_unparsable_weight_does_not_raise(text):
    # A1111 raises ValueError here; we keep ":1.2.3" as text and close the bracket with ×1.1.
    pieces = parse_prompt_attention(text)
    assert "".join(t for t, _ in pieces).startswith("a")
    assert parse_prompt_attention("(a:1.2.3)") == [("a:1.2.3", 1.1)]


@pytest.mark.parametrize("text, expected", [
    ("a BREAK b", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
    ("BREAK a", [("", 1.0), ("BREAK", -1), ("a", 1.0)]),
    ("a BREAK", [("a", 1.0), ("BREAK", -1), ("", 1.0)]),
    ("BREAK", [("", 1.0), ("BREAK", -1), ("", 1.0)]),
    ("a\nBREAK\nb", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1), ("", 1.0), ("BREAK", -1), ("b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),   # inside brackets it is no longer a break
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("a BREAKfast", [("a BREAKfast", 1.0)]),
    ("a,BREAK,b", [("a,", 1.0), ("BREAK", -1), (",b", 1.0)]),
])
def test_attention_break(text, expected):
    assert parse_prompt_attention(text) == expected


# --- get_schedules ---------------------------------------------------------------------------------------------

# A1111 get_learned_conditioning_prompt_schedules doctests (g = ...([p], 10)[0]), verbatim.
A1111_SCHEDULE_DOCTESTS = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[1, "a"], [2, "(b:1.1)"], [3, "a"], [4, "(b:1.1)"], [5, "a"], [6, "(b:1.1)"], [7, "a"],
                     [8, "(b:1.1)"], [9, "a"], [10, "(b:1.1)"]]),
    ("[fe|]male", [[1, "female"], [2, "male"], [3, "female"], [4, "male"], [5, "female"], [6, "male"],
                   [7, "female"], [8, "male"], [9, "female"], [10, "male"]]),
    ("[fe|||]male", [[1, "female"], [2, "male"], [3, "male"], [4, "male"], [5, "female"], [6, "male"],
                     [7, "male"], [8, "male"], [9, "female"], [10, "male"]]),
]


@pytest.mark.parametrize("prompt, expected", A1111_SCHEDULE_DOCTESTS)
def test_schedules_a1111_doctests(prompt, expected):
    assert schedule(prompt) == [tuple(entry) for entry in expected]


def test_schedules_a1111_hires_doctests():
    # g = lambda p: get_learned_conditioning_prompt_schedules([p], 10, 10)[0]
    assert schedule("a [b:.5] c", 10, 10) == [(10, "a b c")]
    assert schedule("a [b:1.5] c", 10, 10) == [(5, "a  c"), (10, "a b c")]


def test_schedules_stale_a1111_doctest_is_literal():
    # A1111's docstring still claims [[5, 'a  c'], [10, 'a {b|d{ c']] ("not handling this right now"), but its
    # own grammar rejects a "|" outside an alternation, so A1111 really returns the prompt as it is.
    assert schedule("a [{b|d{:.5] c") == [(10, "a [{b|d{:.5] c")]


def test_schedules_a1111_comment_example():
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
              "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]")
    assert schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


@pytest.mark.parametrize("prompt, steps, expected", [
    ("[a:b:0.5]", 20, [(10, "a"), (20, "b")]),                  # fraction of the steps
    ("[a:b:10]", 20, [(10, "a"), (20, "b")]),                   # absolute step
    ("[a:b:30]", 20, [(20, "a")]),                               # past the end: never switches
    ("[a:b:0]", 20, [(20, "b")]),
    ("[[a:b:0.2]:c:0.7]", 20, [(4, "a"), (14, "b"), (20, "c")]),
    ("[from::0.5]", 20, [(10, "from"), (20, "")]),
    ("[to:0.5]", 20, [(10, ""), (20, "to")]),
    ("[fe|]male", 4, [(1, "female"), (2, "male"), (3, "female"), (4, "male")]),
    ("[a:b:c:d]", 20, [(20, "[a:b:c:d]")]),
    ("[|]", 3, [(1, ""), (2, ""), (3, "")]),
    ("[a:b:0.5]", 1, [(1, "b")]),
    ("[a:b:1]", 1, [(1, "a")]),
    ("[a|b]", 1, [(1, "a")]),
    ("a|b", 5, [(5, "a|b")]),                                    # "|" outside [] does not parse: literal
    ("a [b:c:1] \\", 5, [(5, "a [b:c:1] \\")]),                  # neither does a trailing backslash
    ("[cat:dog:0.5]((masterpiece))", 10, [(5, "cat((masterpiece))"), (10, "dog((masterpiece))")]),
])
def test_schedules(prompt, steps, expected):
    assert schedule(prompt, steps) == expected


def test_schedules_alternation_with_edit():
    result = schedule("a [b:c:0.25] d [e|f]", 8)
    assert result == [(1, "a b d e"), (2, "a b d f"), (3, "a c d e"), (4, "a c d f"), (5, "a c d e"),
                      (6, "a c d f"), (7, "a c d e"), (8, "a c d f")]


def test_schedules_hires_and_old_scheduling():
    # new scheduling in the hires pass: integers count from the start of the first pass
    assert schedule("a [b:c:15] d", 10, 10) == [(5, "a b d"), (10, "a c d")]
    assert schedule("a [b:c:5] d", 10, 10) == [(10, "a c d")]
    # old scheduling: < 1 is a fraction, anything else a step, no hires offset
    assert schedule("a [b:c:1.5] d", 10, 10, old=True) == [(1, "a b d"), (10, "a c d")]
    assert schedule("a [b:c:0.5] d", 10, 10, old=True) == [(5, "a b d"), (10, "a c d")]
    assert schedule("a [b:c:15] d", 10, 10, old=True) == [(10, "a b d")]


@pytest.mark.parametrize("prompt, expected", [
    ("[a:b:1e309]", [(10, "a")]),      # A1111: OverflowError; here: +inf is the last step
    ("[a:b:1.0e309]", [(10, "a")]),
    ("[a:b:-1e309]", [(10, "b")]),     # -inf: never
    ("[a:b:1e5]", [(10, "a")]),
])
def test_schedules_overflowing_numbers(prompt, expected):
    assert schedule(prompt) == expected


def test_schedules_batch_keeps_order_and_duplicates():
    assert get_schedules(["a", "[b:c:0.5]", "a"], 4) == [[(4, "a")], [(2, "b"), (4, "c")], [(4, "a")]]


def test_long_prompt_uses_bracket_groups():
    # 40 emphasis groups are far beyond what lark parses quickly as a whole; only the edit's group is parsed.
    prompt = "(masterpiece:1.2), " * 40 + "a [cat:dog:0.5] on a [red|blue] chair, ((detailed))"
    head = "(masterpiece:1.2), " * 40
    assert schedules._lark_cost(prompt) > schedules.WHOLE_PROMPT_BUDGET
    result = schedule(prompt, 4)
    assert result == [(1, head + "a cat on a red chair, ((detailed))"),
                      (2, head + "a cat on a blue chair, ((detailed))"),
                      (3, head + "a dog on a red chair, ((detailed))"),
                      (4, head + "a dog on a blue chair, ((detailed))")]
    # a "|" outside any alternation still makes the whole prompt literal
    assert schedule(prompt + " a|b", 4) == [(4, prompt + " a|b")]


# --- split_and -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, expected", [
    ("a AND b :0.7 AND c:-1", [("a", 1.0), (" b", 0.7), (" c", -1.0)]),
    ("a AND b:+.5", [("a", 1.0), (" b", 0.5)]),
    ("cat:1.2", [("cat", 1.2)]),
    ("cat: 2.", [("cat", 2.0)]),
    ("AND", [("", 1.0), ("", 1.0)]),
    ("a AND", [("a", 1.0), ("", 1.0)]),
    ("a ANDb and c", [("a ANDb and c", 1.0)]),
    ("a:1:2", [("a:1", 2.0)]),
    ("a: 1 x", [("a: 1 x", 1.0)]),
    ("a\nAND\nb:2", [("a", 1.0), ("\nb", 2.0)]),
    ("(x:1.2) AND [y:z:0.5]:0.3", [("(x:1.2)", 1.0), (" [y:z:0.5]", 0.3)]),
    ("", [("", 1.0)]),
])
def test_split_and(prompt, expected):
    assert split_and(prompt) == expected


# --- extract_networks ------------------------------------------------------------------------------------------

def test_extract_networks_several_tags():
    text, tags = extract_networks(
        "a <lora:name:0.8:unet=0.5> b <hypernet:h:1> <lyco:x:te=1:unet=0.2:dyn=4> <lora:plain>")
    assert text == "a  b   "
    assert tags == [
        NetworkTag("lora", "name", ("0.8",), {"unet": "0.5"}, ("name", "0.8", "unet=0.5")),
        NetworkTag("hypernet", "h", ("1",), {}, ("h", "1")),
        NetworkTag("lyco", "x", (), {"te": "1", "unet": "0.2", "dyn": "4"}, ("x", "te=1", "unet=0.2", "dyn=4")),
        NetworkTag("lora", "plain", (), {}, ("plain",)),
    ]


@pytest.mark.parametrize("prompt, text, items", [
    ("<lora:a=b=c>", "", [("a=b=c",)]),                  # two "=": positional, as in A1111
    ("<lora:>", "<lora:>", []),
    ("<lora:a", "<lora:a", []),
    ("x<lora:a<lora:b:1>y", "xy", [("a<lora", "b", "1")]),
    ("<lo ra:a>", "<lo ra:a>", []),
    ("<lora:a:b>c>", "c>", [("a", "b")]),
    ("no tags", "no tags", []),
])
def test_extract_networks_edge_cases(prompt, text, items):
    got_text, tags = extract_networks(prompt)
    assert got_text == text
    assert [t.items for t in tags] == items


def test_network_tag_named_first():
    (tag,) = extract_networks("<lora:te=0.5:name:0.7>")[1]
    assert (tag.name, tag.positional, tag.named) == ("name", ("0.7",), {"te": "0.5"})


# --- comments --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("a # c\nb", "a \nb"),
    ("# whole\nb", "\nb"),
    ("a\n#x\n#y\nb", "a\n\nb"),
    ("a #x", "a \n"),
    ("#", "\n"),
    ("x\n# c", "x\n"),
    ("a#b#c\nd", "a\nd"),
    ("no comment", "no comment"),
])
def test_strip_comments(text, expected):
    assert strip_comments(text) == expected


# --- token counter variants ------------------------------------------------------------------------------------

def test_prompt_variants_for_counting():
    prompt = "a [b:c:0.5] <lora:x:1> # comment\nAND d:0.5"
    # comment → "\n", tag removed, AND split (trailing whitespace of a part dropped), both edit variants
    assert prompt_variants_for_counting(prompt, 10) == ["a b", "a c", " d"]
    assert prompt_variants_for_counting("a AND b", 10, is_positive=False) == ["a AND b"]
    assert prompt_variants_for_counting("[x|y] AND[x|y]", 3) == ["x", "y"]   # distinct texts only
    assert prompt_variants_for_counting("a # [b:c:0.5]", 10, comments=False) == ["a # b", "a # c"]


# --- robustness ------------------------------------------------------------------------------------------------

N = 100_000
ROBUSTNESS_CORPUS = {
    "10k [": "[" * 10_000,
    "10k (": "(" * 10_000,
    "100k [": "[" * N,
    "100k ( then a": "(" * (N - 1) + "a",
    "nested (a": "(a" * 33_333 + ")" * 33_333,
    "nested [a": "[a" * 33_333 + "]" * 33_333,
    "nested edits": "[a:" * 20_000 + "b" + ":1]" * 20_000,
    "nested alternation": "[a|" * 20_000 + "b" + "]" * 20_000,
    "huge weight": "(a:1e309)",
    "bad weight": "(a:1.2.3) (b:.) (c:+.)",
    "huge edit step": "[a:b:1e309] [c:d:-1e999]",
    "NUL": "a\x00b[c:d:0.5]\x00(e:1.2)\x00",
    "emoji": "😀 [🐱|🐶] (🔥:1.2) BREAK 🎉 <lora:😀:1>",
    "BREAK ends": "BREAK a BREAK",
    "colons": ":" * N,
    "colon brackets": "[:(:" * 25_000,
    "a:b:c:d": "[a:b:c:d]",
    "empty alternation": "[|]",
    "bars": "|" * N,
    "backslashes": "\\" * N,
    "odd backslashes": "\\" * (N - 1),
    "spaces": " " * N,
    "spaces BREAK": " " * (N - 10) + "BREAK",
    "spaces weight": " " * (N - 10) + ":1",
    "AND spaces": "a AND" + " " * (N - 10),
    "open tags": "<a:" * 33_000,
    "open tags closed": "<a:" * 33_000 + ">",
    "many options": "[" + "a|" * 49_999 + "]",
    "many edits": "[a:b:0.5]" * 11_000,
    "many alternations": "[a|b] " * 16_000,
    "typical, long": ("(masterpiece:1.2), [cat:dog:0.5], " * 3000)[:N],
    "closers": "]" * N,
    "empty pairs": "[]" * 50_000,
    "specials": "[(:|)]" * 16_666,
    "comments": "#" * N,
    "comment lines": "#a\n" * 33_000,
    "ANDs": "AND " * 25_000,
    "BREAKs": "BREAK " * 16_666,
    "escapes": "\\(" * 50_000,
    "unicode spaces": "\u00a0\u2028\x1c\x85BREAK\u3000" * 10_000,
}


def _calls(text):
    return {
        "attention": lambda: parse_prompt_attention(text),
        "schedule": lambda: get_schedules([text], 20),
        "schedule steps=1 hires": lambda: get_schedules([text], 1, 1),
        "schedule old": lambda: get_schedules([text], 150, 20, True),
        "and": lambda: split_and(text),
        "networks": lambda: extract_networks(text),
        "comments": lambda: strip_comments(text),
        "counting": lambda: prompt_variants_for_counting(text, 20),
    }


@pytest.mark.parametrize("name", list(ROBUSTNESS_CORPUS))
def test_robustness_corpus(name):
    text = ROBUSTNESS_CORPUS[name]
    for call_name, call in _calls(text).items():
        schedules._parse_prompt.cache_clear()
        schedules._parse_region.cache_clear()
        # CPU time of this thread: the bound is about our work, not about other load on the machine, nor about a
        # garbage collection of the whole suite's heap that happens to start inside the call.
        gc.disable()
        try:
            start = time.thread_time()
            result = call()
            elapsed = time.thread_time() - start
        finally:
            gc.enable()
        assert elapsed < 1.0, f"{call_name} on {name!r} took {elapsed:.2f} s"
        assert result is not None


def test_worst_case_lark_inputs_stay_fast():
    # The shapes that cost lark the most, at the largest size each guard lets through.
    shapes = ["[word] ", "(w:1.2) ", "[a|b] ", "[]", "()", "[a:b:0.5] "]
    for unit in shapes:
        for prefix, budget in (("", schedules.WHOLE_PROMPT_BUDGET), ("(x) " * 60, schedules.REGIONS_BUDGET)):
            k = 1
            while schedules._lark_cost("[" + unit * (k + 1) + ":b:1]") <= budget:
                k += 1
            prompt = prefix + "[" + unit * k + ":b:1]"
            schedules._parse_prompt.cache_clear()
            schedules._parse_region.cache_clear()
            start = time.thread_time()
            result = get_schedules([prompt], 20)[0]
            elapsed = time.thread_time() - start
            # A guard that let an exponential case through would take minutes; 3 s leaves room for a busy
            # machine (CPU time still grows under contention: shared caches, frequency).
            assert elapsed < 3.0, f"{prompt[:40]!r}… took {elapsed:.2f} s"
            assert len(result) >= 2   # within the guards the edit is still honoured


def test_guard_beyond_budget_is_literal():
    prompt = "[" + "[word] " * 200 + ":b:1]"
    assert schedule(prompt) == [(10, prompt)]


def test_huge_step_counts_are_bounded():
    start = time.thread_time()
    assert get_schedules(["[a|b]"], 10**9) == [[(10**9, "[a|b]")]]
    assert get_schedules(["[a:b:0.5]"], 10**9) == [[(5 * 10**8, "a"), (10**9, "b")]]
    assert time.thread_time() - start < 1.0


def test_deep_nesting_attention_matches_sequential_products():
    # numpy slice products must equal A1111's element-by-element Python products, bit for bit.
    pieces = parse_prompt_attention("(a" * 50 + "[b" * 30 + ")" * 10)
    weights = [1.0] * 80
    for close in range(10):      # ")" closes the innermost round bracket: pieces 49-close..79
        for i in range(49 - close, 80):
            weights[i] *= 1.1
    for start in range(40):      # unclosed round brackets, outermost first
        for i in range(start, 80):
            weights[i] *= 1.1
    for start in range(50, 80):  # then unclosed square brackets
        for i in range(start, 80):
            weights[i] *= 1 / 1.1
    expected = [(("a" if i < 50 else "b"), w) for i, w in enumerate(weights)]
    merged = []
    for text, w in expected:
        if merged and merged[-1][1] == w:
            merged[-1] = (merged[-1][0] + text, merged[-1][1])
        else:
            merged.append((text, w))
    assert pieces == merged
