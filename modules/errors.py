"""A1111's `modules.errors`, for extensions: report an error without raising, into the web UI's log.

A1111 prints these to stderr with "***" prefixes; here they go to the log (stderr by default) under the logger
"modules.errors", the last few kept in `exception_records` as A1111's sysinfo shows them. Nothing here raises:
an extension that reports an error goes on, as in A1111.
"""
from __future__ import annotations

import logging
import sys
import traceback

log = logging.getLogger(__name__)

exception_records: list[dict] = []   # the last five errors reported (A1111's, for sysinfo)
already_displayed: dict = {}         # tasks display_once has shown
_KEPT = 5


def format_traceback(tb) -> list[list]:
    return [[f"{frame.filename}, line {frame.lineno}, {frame.name}", frame.line] for frame in traceback.extract_tb(tb)]


def format_exception(e: BaseException, tb) -> dict:
    return {"exception": str(e), "traceback": format_traceback(tb)}


def get_exceptions() -> list[dict]:
    return list(reversed(exception_records))


def record_exception() -> None:
    """Keep the exception being handled, if any (the last five)."""
    _, error, tb = sys.exc_info()
    if error is None:
        return
    if exception_records and exception_records[-1]["exception"] == str(error):
        return
    exception_records.append(format_exception(error, tb))
    del exception_records[:-_KEPT]


def report(message: str, *, exc_info: bool = False) -> None:
    """Log `message` as an error, with the traceback of the exception being handled when `exc_info`."""
    record_exception()
    log.error("%s", message, exc_info=exc_info and sys.exc_info()[0] is not None)


def print_error_explanation(message: str) -> None:
    """Log a longer explanation (A1111 frames it in "=" lines)."""
    record_exception()
    lines = message.strip().split("\n")
    rule = "=" * max((len(line) for line in lines), default=0)
    log.error("%s", "\n".join([rule, *lines, rule]))


def display(e: Exception, task, *, full_traceback: bool = False) -> None:
    """Log the exception `e` met while doing `task` (a string, or None), with its traceback."""
    record_exception()
    formatted = traceback.TracebackException.from_exception(e)
    if full_traceback:   # the frames leading to the try block too
        formatted.stack = traceback.StackSummary(traceback.extract_stack()[:-2] + formatted.stack)
    log.error("%s: %s\n%s", task or "error", type(e).__name__, "".join(formatted.format()).rstrip())


def display_once(e: Exception, task) -> None:
    """`display`, only the first time for this `task`."""
    record_exception()
    if task in already_displayed:
        return
    display(e, task)
    already_displayed[task] = 1


def run(code, task) -> None:
    """Call `code()`; an exception is displayed under `task`, not raised."""
    try:
        code()
    except Exception as e:   # noqa: BLE001 - A1111's contract: report and go on
        display(e, task)
