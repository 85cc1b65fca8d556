"""``/ngonngu``: the language a member reads documents in (a translation where one exists)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain.languages import VI, language_name
from bot.domain.replies import Choice, Reply
from bot.storage.models import Document, Member


def available(session: Session) -> list[str]:
    """Vietnamese, then every language some loaded document is translated into."""
    tags = {tag for t in session.scalars(select(Document.translations)) if t for tag in t}
    return [VI, *sorted(tags - {VI})]


def choose(session: Session, member: Member, typed: str) -> Reply:
    """Without a tag: the current language and the choices; with one: switch to it."""
    tags = available(session)
    tag = typed.strip().casefold()
    if tag and tag in tags:
        member.language = tag
        note = "" if tag == VI else (" Khi tài liệu chưa có bản dịch, đồng chí đọc bản tiếng Việt; câu hỏi "
                                     "kiểm tra vẫn bằng tiếng Việt.")
        return Reply(f"Đã chọn ngôn ngữ đọc tài liệu: {language_name(tag)} ({tag}).{note} Gõ /hoc để đọc tài liệu.")
    lines = []
    if tag:
        shown = typed.strip() if len(typed.strip()) <= 20 else typed.strip()[:20] + "…"  # a tag is short: not an echo
        lines += [f"Chưa có tài liệu nào được dịch sang '{shown}'.", ""]
    lines.append(f"Ngôn ngữ đọc tài liệu của đồng chí: {language_name(member.language)} ({member.language}).")
    if len(tags) == 1:
        lines.append("Hiện các tài liệu chỉ có bản tiếng Việt.")
        return Reply("\n".join(lines))
    lines.append("Các ngôn ngữ có bản dịch: " + ", ".join(f"{language_name(t)} ({t})" for t in tags) + ".")
    lines.append("Chọn bên dưới, hoặc gõ /ngonngu và mã ngôn ngữ, ví dụ /ngonngu " + tags[-1] + ".")
    choices = [[Choice(language_name(t), f"l:{t}", typed=t)] for t in tags]
    return Reply("\n".join(lines), choices)
