"""Platform-neutral replies rendered as Zalo text. Zalo has no buttons, no edits, no files and
2,000-character messages, so this module turns an ``Outcome`` into plain messages (``Outgoing``): choices
become "gõ …" lines, a notice leads the text, charts become photo URLs or a note on where to get them.
It exists apart from the I/O so that the conversation and the outbox transport render the same way, and so
that rendering can be tested without a client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from bot.domain.replies import Attachment, Outcome, Reply, split_text
from bot.services.chat import ChannelTraits, fold

TEXT_LIMIT = 2000
TRAITS = ChannelTraits(name="zalo", text_limit=TEXT_LIMIT, has_buttons=False)


@dataclass
class Outgoing:
    """One Zalo message: text, or a photo by URL."""

    text: str | None = None
    photo: str | None = None


_WORDS = {
    "tiep": "Gõ TIẾP để xem tiếp.",
    "truoc": "Gõ TRƯỚC để xem trang trước.",
    "lambai": "Gõ LÀM BÀI để làm bài kiểm tra.",
    "hoc": "Gõ HỌC để đọc tóm tắt tài liệu.",
}


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} hoặc {items[-1]}"


def _label(choice) -> str:
    head, sep, rest = choice.label.partition(". ")
    return rest if sep and head == choice.typed else choice.label


def choice_lines(reply: Reply) -> list[str]:
    """What to type, since there are no buttons: letters and numbers, then words."""
    typed = [c for c in reply.all_choices() if c.typed]
    letters = [c.typed.upper() for c in typed if len(c.typed) == 1 and c.typed.isalpha()]
    numbered = [c for c in typed if c.typed.isdigit() and c.typed != "0"]
    lines = []
    if letters:
        lines.append(f"👉 Trả lời: gõ {_either(letters)}.")
    if numbered:
        if len(numbered) <= 3:
            lines += [f"👉 Gõ {c.typed}: {_label(c)}" for c in numbered]
        else:
            lines.append(f"👉 Gõ số thứ tự (1–{numbered[-1].typed}) để chọn.")
    for c in typed:
        if c.typed == "0":
            lines.append(f"👉 Gõ 0: {c.label}")
        elif not c.typed.isdigit() and not (len(c.typed) == 1 and c.typed.isalpha()):
            lines.append("👉 " + _WORDS.get(fold(c.typed), f"Gõ «{c.typed.upper()}»: {c.label}"))
    return lines


def reply_text(reply: Reply) -> str:
    lines = choice_lines(reply)
    if reply.link is not None:  # no buttons: the member's study page is a link in the text
        lines.append(f"👉 Trang học tập của đồng chí: {reply.link.url}")
    return f"{reply.text}\n\n" + "\n".join(lines) if lines else reply.text


def files_note(files: Iterable[Attachment | tuple[str, bytes]]) -> str:
    """Where to get what Zalo cannot carry (documents; photos without a public address)."""
    what = []
    for f in files:
        name = f.filename if isinstance(f, Attachment) else f[0]
        kind = f.kind if isinstance(f, Attachment) else "document"
        item = "biểu đồ" if kind == "photo" else ("tệp Excel" if name.endswith(".xlsx") else f"tệp {name}")
        if item not in what:
            what.append(item)
    return (f"📎 Zalo không gửi được {' và '.join(what)} của báo cáo. Đồng chí nhận qua Telegram "
            "(gõ /baocao) hoặc đề nghị quản trị viên xuất bằng lệnh «hoctap report».")


def render(outcome: Outcome, photo_url: Callable[[Attachment], str | None] | None = None,
           limit: int = TEXT_LIMIT) -> list[Outgoing]:
    """The messages an outcome becomes on Zalo, each within ``limit``.

    A notice is a toast on Telegram; here it leads the first reply, or is its own message. When
    the first reply stands for an edit of the message the member acted on (a recorded answer), it
    already carries the receipt and the toast is left out: one message per answer.
    """
    notice = outcome.notice
    if notice and outcome.replies and outcome.replies[0].edit:
        notice = None
    out: list[Outgoing] = []
    if notice and not outcome.replies:
        out += [Outgoing(text=p) for p in split_text(notice, limit)]
    packable = -1  # the index in ``out`` of a text a short reply without choices may join (every message costs)
    for i, reply in enumerate(outcome.replies):
        text = reply_text(reply)
        if i == 0 and notice:
            text = f"{notice}\n\n{text}"
        photos, missing = [], []
        for f in reply.files:
            url = photo_url(f) if f.kind == "photo" and photo_url is not None else None
            if url:
                photos.append(url)
            else:
                missing.append(f)
        if missing:
            text = f"{text}\n\n{files_note(missing)}"
        parts = split_text(text, limit)
        if out and packable == len(out) - 1 and len(parts) == 1 and len(out[-1].text) + 2 + len(text) <= limit:
            out[-1] = Outgoing(text=f"{out[-1].text}\n\n{text}")  # one message, not two
        else:
            out += [Outgoing(text=p) for p in parts]
        out += [Outgoing(photo=u) for u in photos]
        # the next reply may join this one's message unless this one offers choices (two menus in one message
        # would both say "Gõ 1") or ends in a photo
        packable = len(out) - 1 if not photos and not choice_lines(reply) and not reply.link else -1
    return out

