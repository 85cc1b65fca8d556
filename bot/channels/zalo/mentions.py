"""Mentions of the bot in Zalo groups. Members pick the bot from the app's mention list, which writes
the name the app shows (``@Bot Học Tập``), not the ``account_name`` that getMe returns (``hoctap_bot``);
people also type either by hand, in any case, with or without diacritics. It exists so that the group
handler strips every one of them from the text, the same way, and reads what the member said.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable

from bot.services.chat import fold


def bot_names(*candidates: str | None) -> list[str]:
    """The names a mention may use, without repeats (compared folded), longest first."""
    names: dict[str, str] = {}
    for name in candidates:
        name = (name or "").strip().lstrip("@").strip()
        if name and fold(name):
            names.setdefault(fold(name), name)
    return sorted(names.values(), key=lambda n: -len(fold(n)))


def _mention_end(text: str, at: int, key: str) -> int | None:
    """Where the mention ``@`` + a name folding to ``key`` that starts at ``text[at]`` ends, or None."""
    got, j = "", at + 1
    while j < len(text) and len(got) < len(key):
        got += fold(text[j])
        if not key.startswith(got):
            return None
        j += 1
    return j if got == key else None


def _spans(text: str, names: Iterable[str]) -> list[tuple[int, int]]:
    keys = sorted({fold(n) for n in names if fold(n)}, key=len, reverse=True)
    spans, i = [], text.find("@")
    while i != -1:
        end = next((e for e in (_mention_end(text, i, k) for k in keys) if e is not None), None)
        if end is not None:
            spans.append((i, end))
        i = text.find("@", end if end is not None else i + 1)
    return spans


def strip_mention(text: str, names: Iterable[str] | str | None) -> str:
    """``text`` without the mentions of the bot, spaces collapsed: what the member said."""
    names = [names] if isinstance(names, str) else list(names or [])
    text = unicodedata.normalize("NFC", text)
    for start, end in reversed(_spans(text, names)):
        text = text[:start] + " " + text[end:]
    return " ".join(text.split())
