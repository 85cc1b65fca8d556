"""Platform-neutral replies as OA consultation messages: text of ≤ 2,000 characters with ≤ 5 buttons.

A choice becomes an ``oa.query.hide`` button whose payload is the same action as Telegram's callback
data (``a:12:3:1``); a tap comes back as a text event carrying it. The member's own study-page link
(``Reply.link``: /hoc, announcements, reminders) is an ``oa.open.url`` button after the choices. Typed answers work too: ChatService
remembers what each typed word means, as on the Zalo bot. No edits on Zalo: a recorded answer's
receipt leads the next question's text, and a notice leads the first message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.channels.zalo.rendering import files_note
from bot.domain.languages import LANGUAGE_TAG
from bot.domain.replies import Outcome, Reply, split_text
from bot.services.chat import ChannelTraits

TEXT_LIMIT = 2000
MAX_BUTTONS = 5
TITLE_LIMIT = 100
MORE_CHOICES = "Chọn tiếp:"
TRAITS = ChannelTraits(name="zalo_oa", text_limit=TEXT_LIMIT, has_buttons=False)
# what our buttons carry (``kind:n:n…``, and ``l:<language tag>`` from /ngonngu): never what a member types
ACTION = re.compile(rf"^(?:[a-z]:\d+(?::\d+)*|l:{LANGUAGE_TAG.pattern.strip('^$')})$")


@dataclass
class OAMessage:
    text: str
    buttons: list[dict] = field(default_factory=list)


def buttons_of(reply: Reply) -> list[dict]:
    """The choices as taps that come back to us; the member's study page as a button that opens it."""
    buttons: list[dict] = [{"title": c.label[:TITLE_LIMIT], "type": "oa.query.hide", "payload": c.action}
                           for c in reply.all_choices()]
    if reply.link is not None:
        buttons.append({"title": reply.link.label[:TITLE_LIMIT], "type": "oa.open.url",
                        "payload": {"url": reply.link.url}})
    return buttons


def reply_messages(reply: Reply, text: str | None = None, limit: int = TEXT_LIMIT) -> list[OAMessage]:
    """One reply: its text in parts, the buttons on the last part, more than five on follow-ups."""
    parts = [OAMessage(p) for p in split_text(text if text is not None else reply.text, limit)]
    buttons = buttons_of(reply)
    if parts and buttons:
        parts[-1].buttons = buttons[:MAX_BUTTONS]
        for i in range(MAX_BUTTONS, len(buttons), MAX_BUTTONS):
            parts.append(OAMessage(MORE_CHOICES, buttons[i:i + MAX_BUTTONS]))
    return parts


def render(outcome: Outcome, limit: int = TEXT_LIMIT) -> list[OAMessage]:
    notice = outcome.notice
    if notice and outcome.replies and outcome.replies[0].edit:
        notice = None  # the receipt is already in the text that stands for the edit
    out: list[OAMessage] = []
    if notice and not outcome.replies:
        out += [OAMessage(p) for p in split_text(notice, limit)]
    for i, reply in enumerate(outcome.replies):
        text = reply.text
        if i == 0 and notice:
            text = f"{notice}\n\n{text}"
        if reply.files:
            text = f"{text}\n\n{files_note(reply.files)}"
        out += reply_messages(reply, text, limit)
    return out


ZNS_CONTENT_LIMIT = 100  # characters of the template's one free-text parameter (UNCONFIRMED: set when approved)


def zns_content(text: str, deadline: str | None = None, limit: int = ZNS_CONTENT_LIMIT) -> str:
    """What a ZNS template's text parameter can carry of a message: its first line, shortened at a word
    boundary, and ``deadline`` (the round's, written out): the one fact a reminder must not lose."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if deadline and deadline in first:
        deadline = None  # already said where it will be kept
    if deadline and len(deadline) + 21 <= limit:  # room for the deadline and a readable start
        return f"{_shorten(first, limit - len(deadline) - 1)} {deadline}"
    return _shorten(first, limit)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]  # a space just past the room is a word boundary too
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut[:limit - 1]).rstrip(" ,;:—–-") + "…"
