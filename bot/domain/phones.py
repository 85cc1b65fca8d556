"""Vietnamese phone numbers in one form (+84xxxxxxxxx), however they were written."""

from __future__ import annotations

import re

_JUNK = re.compile(r"[\s.\-()]")


def normalize_phone(raw: str) -> str | None:
    """``0912 345 678``, ``+84912345678`` and ``84912345678`` → ``+84912345678``; None if not a number."""
    digits = _JUNK.sub("", raw or "")
    if digits.startswith("+"):
        digits = digits[1:]
        if not digits.startswith("84"):
            return None
    if not digits.isdigit():
        return None
    if digits.startswith("84") and len(digits) in (11, 12):
        national = digits[2:]
    elif digits.startswith("0") and len(digits) in (10, 11):
        national = digits[1:]
    elif len(digits) == 9:  # a spreadsheet stored the number as a number and ate the leading 0
        national = digits
    else:
        return None
    if national.startswith("0"):
        return None
    return "+84" + national
