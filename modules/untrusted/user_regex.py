"""Regular expressions written by users, matched with a time limit.

Python's `re` backtracks without limit and holds the interpreter lock while it does: one pattern such as
`(a|aa)+$` against a long enough text freezes every thread of the server (the Checkpoint Merger's "Discard
weights" did, and SIGTERM went unheard). The `regex` package (already installed: transformers needs it) takes
the same syntax, gives up after a timeout and lets other threads run meanwhile.
"""
from __future__ import annotations

import time

import regex


class PatternTooSlow(ValueError):
    """Matching took longer than the pattern's time budget (catastrophic backtracking)."""


class UserPattern:
    """A user's pattern, `what` naming it in errors. All its matches together may take `budget` seconds, or each
    match that long with `per_call` (a pattern that serves every request)."""

    def __init__(self, text: str, what: str, budget: float = 2.0, *, per_call: bool = False):
        self.what = what
        self.budget = budget
        self.per_call = per_call
        self.spent = 0.0
        try:
            self.pattern = regex.compile(text)
        except (regex.error, OverflowError, RecursionError) as error:
            raise ValueError(f"{what}: invalid regular expression {text!r} ({error})") from None

    def _match(self, method, text: str):
        left = self.budget if self.per_call else self.budget - self.spent
        if left <= 0:
            raise self._too_slow()
        started = time.perf_counter()
        try:
            return method(text, timeout=left, concurrent=True)
        except TimeoutError:
            raise self._too_slow() from None
        finally:
            self.spent += time.perf_counter() - started

    def search(self, text: str) -> bool:
        return self._match(self.pattern.search, text) is not None

    def fullmatch(self, text: str) -> bool:
        return self._match(self.pattern.fullmatch, text) is not None

    def _too_slow(self) -> PatternTooSlow:
        return PatternTooSlow(f"{self.what}: the regular expression takes too long to match (over "
                              f"{self.budget:g} s; nested repetitions such as (a+)+ backtrack without end)")
