"""A1111's `modules.timer`, for extensions: `Timer` records how long named steps take (`record("load")`,
`with timer.subcategory("scripts"):`), and `startup_timer` is the one extensions add their start-up steps to.

The web UI does not print a start-up report from it; `startup_timer.summary()` gives the steps recorded so far.
"""
from __future__ import annotations

import logging
import time

from modules.addons.missing_names import missing_name

log = logging.getLogger(__name__)


class TimerSubcategory:
    """`with timer.subcategory(name):` — the steps recorded inside are filed under "name/"."""

    def __init__(self, timer: "Timer", category: str):
        self.timer = timer
        self.category = category
        self.start = None
        self.original_base_category = timer.base_category

    def __enter__(self):
        self.start = time.time()
        self.timer.base_category = self.original_base_category + self.category + "/"
        self.timer.subcategory_level += 1
        if self.timer.print_log:
            log.info("%s%s:", "  " * self.timer.subcategory_level, self.category)

    def __exit__(self, exc_type, exc_val, exc_tb):
        elapsed = time.time() - self.start
        self.timer.base_category = self.original_base_category
        self.timer.add_time_to_record(self.original_base_category + self.category, elapsed)
        self.timer.subcategory_level -= 1
        self.timer.record(self.category, disable_log=True)


class Timer:
    def __init__(self, print_log: bool = False):
        self.start = time.time()
        self.records: dict[str, float] = {}
        self.total = 0.0
        self.base_category = ""
        self.print_log = print_log
        self.subcategory_level = 0

    def elapsed(self) -> float:
        """Seconds since the last call (or the start)."""
        end = time.time()
        result, self.start = end - self.start, end
        return result

    def add_time_to_record(self, category: str, amount: float) -> None:
        self.records[category] = self.records.get(category, 0) + amount

    def record(self, category: str, extra_time: float = 0, disable_log: bool = False) -> None:
        """File the time since the last record under `category`."""
        seconds = self.elapsed() + extra_time
        self.add_time_to_record(self.base_category + category, seconds)
        self.total += seconds
        if self.print_log and not disable_log:
            log.info("%s%s: done in %.3fs", "  " * self.subcategory_level, category, seconds)

    def subcategory(self, name: str) -> TimerSubcategory:
        self.elapsed()
        return TimerSubcategory(self, name)

    def summary(self) -> str:
        """"12.3s (load: 10.1s, scripts: 2.0s)": the total and the top-level steps of 0.1 s or more."""
        result = f"{self.total:.1f}s"
        additions = [(category, seconds) for category, seconds in self.records.items()
                     if seconds >= 0.1 and "/" not in category]
        if additions:
            result += " (" + ", ".join(f"{category}: {seconds:.1f}s" for category, seconds in additions) + ")"
        return result

    def dump(self) -> dict:
        return {"total": self.total, "records": self.records}

    def reset(self) -> None:
        self.__init__(self.print_log)


startup_timer = Timer()


def __getattr__(name: str):
    raise missing_name("modules.timer", name)
