"""Local time in and out: users type and read Asia/Ho_Chi_Minh times as dd/mm/yyyy; storage is UTC."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

PLAUSIBLE_YEARS = range(2000, 2101)  # a date typed outside these is a slip of the keyboard (0001, 9999)
_INPUT_FORMATS = ("%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d", "%d/%m/%Y")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_local(text: str, tz: ZoneInfo, *, end_of_day: bool = False) -> datetime:
    """``2026-12-01 07:00`` or ``01/12/2026 07:00`` in ``tz`` → aware UTC. ValueError if neither.

    A date without a time means the start of that day, or its last minute with ``end_of_day``
    (a deadline "15/12/2026" includes the 15th).
    """
    text = " ".join(text.split())
    for fmt in _INPUT_FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if end_of_day and "%H" not in fmt:
            naive = naive.replace(hour=23, minute=59)
        try:
            return naive.replace(tzinfo=tz).astimezone(timezone.utc)
        except OverflowError:  # 01/01/0001 in a zone east of UTC has no UTC time
            break
    raise ValueError(f"{text!r} is not a date and time like '2026-12-01 07:00' or '01/12/2026 07:00'")


def fmt_datetime(dt: datetime, tz: ZoneInfo) -> str:
    return dt.astimezone(tz).strftime("%d/%m/%Y %H:%M")
