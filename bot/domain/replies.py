"""Replies as data: text plus choices, which each channel renders its own way.

Telegram turns choices into inline buttons carrying ``action``; Zalo lists them in the text and maps
what the member types back to the same ``action``. Actions are short ASCII strings (Telegram allows
64 bytes of ``callback_data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Choice:
    label: str
    action: str
    typed: str | None = None  # what a member types to choose it where there are no buttons


@dataclass(frozen=True)
class Attachment:
    """A file sent with a reply: ``document`` (e.g. the XLSX report) or ``photo`` (the chart)."""

    filename: str
    data: bytes
    kind: str = "document"


@dataclass(frozen=True)
class StudyLink:
    """A member's own signed link to the study pages; channels show it their way (a Mini App
    button and a link button on Telegram, the address in the text on Zalo)."""

    url: str
    mini_app_url: str | None = None  # the same way in, opened inside Telegram (checked by initData)
    label: str = "📖 Mở trang học tập"


@dataclass
class Reply:
    text: str
    choices: list[list[Choice]] = field(default_factory=list)  # rows of choices
    edit: bool = False  # replace the message the member acted on, where the channel can edit
    ask_contact: bool = False  # offer "share my phone number" where the channel can
    notice: str | None = None  # short acknowledgement of a button press (toast)
    files: list[Attachment] = field(default_factory=list)
    link: StudyLink | None = None  # the member's study page, where the product serves one

    def all_choices(self) -> list[Choice]:
        return [c for row in self.choices for c in row]


@dataclass
class Outcome:
    """What a member's input produced: replies to send and an optional toast for the press."""

    replies: list[Reply] = field(default_factory=list)
    notice: str | None = None
    question: tuple[int, int] | None = None  # (attempt id, position) of the quiz question shown, if any
    redelivered: bool = False  # the update was handled before: the channel must not act on it again
    keeps_offer: bool = False  # a hint to stray text ("ok"): what the member was offered before still holds
    # that hint, to text given while no question is asked: a channel that pays per message may ration it (during a
    # quiz, "B ạ" must always hear that it was not taken as an answer)
    stray: bool = False
    # the result shown again for a tap on a quiz handed in moments ago: a second tap of the same impatient member,
    # whose first tap is sending the review's further parts, gets only the result's first part
    result_again: bool = False


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int) -> list[str]:
    """Split on paragraphs, then lines, then words, then characters; each part within ``limit``.

    Never cuts inside a character (a surrogate pair counts as two units but is kept whole).
    """
    text = text.strip()
    if utf16_len(text) <= limit:
        return [text] if text else []
    for sep in ("\n\n", "\n", " "):
        pieces = text.split(sep)
        if len(pieces) > 1:
            return _pack(pieces, sep, limit)
    return _hard_split(text, limit)


def _pack(pieces: list[str], sep: str, limit: int) -> list[str]:
    parts: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}{sep}{piece}" if current else piece
        if utf16_len(candidate) <= limit:
            current = candidate
            continue
        if current:
            parts.append(current.strip())
        if utf16_len(piece) > limit:
            sub = split_text(piece, limit)
            parts.extend(sub[:-1])
            current = sub[-1] if sub else ""
        else:
            current = piece
    if current.strip():
        parts.append(current.strip())
    return [p for p in parts if p]


def _hard_split(text: str, limit: int) -> list[str]:
    parts, current, size = [], [], 0
    for ch in text:
        width = utf16_len(ch)
        if size + width > limit:
            parts.append("".join(current))
            current, size = [], 0
        current.append(ch)
        size += width
    if current:
        parts.append("".join(current))
    return parts
