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
    if len(national) == 10 and not national.startswith("2"):  # ten digits after the 0: landlines (02x) only
        return None
    return "+84" + national


def display_phone(phone: str | None) -> str:
    """A stored number as Vietnamese people write and dial it: ``+84903878832`` → ``0903 878 832``; a
    landline after its area code, ``024 3825 1234`` (Hà Nội, TP.HCM) or ``0271 388 8999``; else as stored."""
    if not phone or not phone.startswith("+84") or not phone[1:].isdigit():
        return phone or ""
    national = "0" + phone[3:]
    if len(national) == 10:
        return f"{national[:4]} {national[4:7]} {national[7:]}"
    if len(national) == 11 and national[:3] in ("024", "028"):
        return f"{national[:3]} {national[3:7]} {national[7:]}"
    if len(national) == 11:
        return f"{national[:4]} {national[4:7]} {national[7:]}"
    return national
