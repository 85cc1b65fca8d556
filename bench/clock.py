"""The clock each benchmark runs on, so that no figure depends on the hour it is run at.

The outbox holds everything in quiet hours (21:00–07:00): a broadcast run at night with the
machine's clock sent nothing. Benchmarks that schedule use ``pinned_clock()`` (a weekday
morning, ticking in real time); those that only answer members say that quiet hours are off.
``--wall-clock`` moves the machine's own clock (time-machine) to show that the output does not
change: ``python -m bench.broadcast --members 500 --wall-clock "2026-12-01 23:30"``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, time as clock_time, timedelta, timezone
from zoneinfo import ZoneInfo

from bot.outbox.queue import QuietHours

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
BENCH_START = datetime(2026, 12, 1, 9, 0, tzinfo=TZ)  # a Tuesday, 09:00: outside quiet hours
QUIET_HOURS_OFF = QuietHours(clock_time(0), clock_time(0), TZ)  # an empty period: never quiet
QUIET_OFF = ("clock: the machine's (the round spans it: opened a minute before, closes a day after); "
             "quiet hours: off")


def pinned_clock() -> Callable[[], datetime]:
    """UTC now as if the benchmark had started at ``BENCH_START``, advancing in real time."""
    started = time.monotonic()
    start = BENCH_START.astimezone(timezone.utc)
    return lambda: start + timedelta(seconds=time.monotonic() - started)


def describe_pinned(quiet: str | None = "21:00–07:00") -> str:
    """The line a benchmark prints about its clock (``quiet=None``: it does not involve quiet hours)."""
    hours = (f"quiet hours {quiet} as configured by default, so nothing waits for them" if quiet
             else "quiet hours play no part")
    return f"clock: pinned to {BENCH_START:%H:%M %d/%m/%Y} ({TZ.key}), ticking; {hours}"


def add_wall_clock_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wall-clock", metavar="'YYYY-MM-DD HH:MM'",
                        help="run as if the machine's clock read this local time (needs time-machine), "
                             "to check that nothing depends on it")


@contextmanager
def wall_clock(text: str | None) -> Iterator[None]:
    """Move the machine's clock (time.time, datetime.now) to ``text`` local time, ticking."""
    if not text:
        yield
        return
    import time_machine

    at = datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=TZ)
    print(f"wall clock moved to {at:%H:%M %d/%m/%Y} ({TZ.key})")
    with time_machine.travel(at, tick=True):
        yield
