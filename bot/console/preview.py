"""What a member will receive of a checked document, on Telegram and on Zalo, before it is loaded."""

from __future__ import annotations

from bot.content.validate import DocumentSpec
from bot.domain.replies import split_text

LIMITS = {"telegram": 4096, "zalo": 2000}  # the channels' text limits (bot/channels/*/rendering)


def preview(doc: DocumentSpec) -> list[tuple[str, str, str]]:
    """Rows (what, on Telegram, on Zalo) for the document page of the console."""
    head = f"📖 {doc.code}: {doc.title}" + (f"\nℹ️ {doc.note}" if doc.note else "") + "\n\n"
    pages = {ch: len(split_text(head + doc.summary, limit)) for ch, limit in LIMITS.items()}
    asked = min(doc.questions_per_attempt or len(doc.questions), len(doc.questions))
    return [
        ("Trang tóm tắt để đọc", f"{pages['telegram']} tin nhắn", f"{pages['zalo']} tin nhắn"),
        ("Ý chính", f"{len(doc.key_points)} ý, 1 tin nhắn", f"{len(doc.key_points)} ý, 1 tin nhắn"),
        ("Câu hỏi mỗi lần làm bài", f"{asked} tin nhắn, chọn bằng nút bấm",
         f"{asked} tin nhắn, gõ chữ cái A, B, C…"),
        ("Ngân hàng câu hỏi", f"{len(doc.questions)} câu", f"{len(doc.questions)} câu"),
        ("Điểm đạt, số lần làm", f"{doc.pass_score}%, tối đa {doc.max_attempts} lần", ""),
    ]
