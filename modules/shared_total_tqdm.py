"""A1111's `shared.total_tqdm`: the "Total progress" over every image of a job, which scripts that run several
generations (Ultimate SD upscale, X/Y/Z-like loops) set and advance. It counts (`done` of `total`) and, with the
`multiple_tqdm` setting on, shows it as a console bar as A1111's does. It starts again with each job (A1111
clears it after each)."""
from __future__ import annotations

import sys

from modules.addons import running


class TotalTQDM:
    def __init__(self):
        self._bar = None
        self._job = None   # the job the counts are for
        self.done = 0
        self.total = 0

    def _follow_job(self) -> None:
        try:
            current = running.services().queue.current
        except RuntimeError:   # before the web UI has started
            current = None
        if current is not self._job:
            self.clear()
            self.total = 0
            self._job = current

    @staticmethod
    def _console() -> bool:
        try:
            return bool(running.services().options.get("multiple_tqdm", True))
        except RuntimeError:   # before the web UI has started
            return False

    def _open_bar(self) -> None:
        if self._bar is None and self._console():
            import tqdm

            self._bar = tqdm.tqdm(desc="Total progress", total=self.total, initial=self.done, position=1,
                                  file=sys.stderr)

    def reset(self) -> None:
        self.clear()
        self._open_bar()

    def update(self) -> None:
        self._follow_job()
        self._open_bar()
        self.done += 1
        if self._bar is not None:
            self._bar.update()

    def updateTotal(self, new_total) -> None:   # noqa: N802 - A1111's name
        self._follow_job()
        self.total = int(new_total)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def clear(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.done = 0
