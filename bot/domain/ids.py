"""Ids and numbers that come from outside (button data, typed text, the command line), parsed strictly.

Python's ``int`` accepts far more than an id: signs, spaces, ``_``, non-ASCII digits (``٣``) and
numbers beyond what the database can compare (SQLite: 64 bits, PostgreSQL ``INTEGER``: 32 bits), where
a forged id would crash the handler instead of being refused. Every such id goes through ``parse_id``.
"""

from __future__ import annotations

MAX_ID = 2**31 - 1  # PostgreSQL INTEGER, the narrowest column an id or a page number is compared with


def parse_id(text: str) -> int | None:
    """``"42"`` → 42; None for anything but ASCII digits from 0 to ``MAX_ID``."""
    if not isinstance(text, str) or not text or len(text) > len(str(MAX_ID)):
        return None
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_ID else None
