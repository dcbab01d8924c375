"""A1111's learning-rate schedules: "0.005" (one rate throughout) or "0.001:100, 0.00001:1000, 1e-5:10000" (a rate
until each step), parsed as A1111's LearnScheduleIterator does, and the scheduler that moves an optimizer along it."""
from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)

_SYNTAX = ('It should be a number or, for example, like "0.001:100, 0.00001:1000, 1e-5:10000" to have lr of 0.001 '
           'until step 100, 0.00001 until 1000, and 1e-5 until 10000.')


class ScheduleError(ValueError):
    """A learning-rate schedule that cannot be read; the message names the text and explains the syntax."""

    def __init__(self, text: str, problem: str):
        super().__init__(f"Invalid learning rate schedule {text!r}: {problem}. {_SYNTAX}")


def parse_schedule(text: str, max_steps: int, current_step: int = 0) -> list[tuple[float, int]]:
    """The (rate, until step) pairs still ahead of `current_step`, as A1111 reads them: pairs are "rate:step", step -1
    meaning until `max_steps`; a bare rate lasts until `max_steps` and ends the list; pairs whose step is not past
    `current_step` are skipped (a resumed training); steps are clipped to `max_steps` and the list stops after the first
    step beyond it."""
    rates: list[tuple[float, int]] = []
    pairs = [pair for pair in str(text).split(",") if pair.strip()]
    for pair in pairs:
        parts = pair.split(":")
        if len(parts) > 2:  # A1111 silently reads "0.1:2:3" as 0.1 until the end; it is surely a typo
            raise ScheduleError(text, f"{pair.strip()!r} has more than one ':'")
        # Every rate is checked, even in pairs a resumed training skips, so a schedule is valid or not whatever the
        # step; A1111 reads only the rates it keeps, and takes a negative, zero or infinite rate as given.
        rate = _rate(text, parts[0])
        if len(parts) == 1:
            rates.append((rate, max_steps))
            break
        step = _step(text, parts[1])
        if step > current_step:
            rates.append((rate, min(step, max_steps)))
            if step > max_steps:
                break
        elif step == -1:
            rates.append((rate, max_steps))
            break
    if not rates:
        raise ScheduleError(text, f"no rate is left after step {current_step}" if pairs else "it is empty")
    return rates


def _rate(text: str, part: str) -> float:
    try:
        rate = float(part)
    except ValueError:
        raise ScheduleError(text, f"{part.strip()!r} is not a number") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ScheduleError(text, f"the rate {part.strip()} must be a positive number")
    return rate


def _step(text: str, part: str) -> int:
    try:
        return int(part)
    except ValueError:
        raise ScheduleError(text, f"the step {part.strip()!r} is not a whole number") from None


class LearnRateScheduler:
    """A1111's LearnRateScheduler: the current rate and the step it lasts until; `apply` gives the optimizer the next
    rate once that step is reached. The optimizer starts with `learn_rate` (the trainer builds it so)."""

    def __init__(self, text: str, max_steps: int, current_step: int = 0, what: str = "Training at rate of"):
        self._schedule = iter(parse_schedule(text, max_steps, current_step))
        self.learn_rate, self.end_step = next(self._schedule)
        self.finished = False
        self.what = what   # the log line's words: a clip-value schedule says so, not "Training at rate of"
        logger.info("%s %s until step %s", self.what, self.learn_rate, self.end_step)

    def step(self, step_number: int) -> bool:
        """Move to the next rate when `step_number` reached the current one's end; True when the rate changed.
        After the last rate `finished` is set (the trainer stops there)."""
        if step_number < self.end_step:
            return False
        try:
            self.learn_rate, self.end_step = next(self._schedule)
        except StopIteration:
            self.finished = True
            return False
        return True

    def apply(self, optimizer, step_number: int) -> None:
        """`step`, and when the rate changed, set it on every parameter group of `optimizer`."""
        if not self.step(step_number):
            return
        logger.info("%s %s until step %s", self.what, self.learn_rate, self.end_step)
        for group in optimizer.param_groups:
            group["lr"] = self.learn_rate
