"""Replies longer than one Telegram message arrive whole, in parts, with the buttons at the end."""

from bot.channels.telegram import fit
from bot.domain.replies import Choice, Reply


def test_a_reply_over_4096_characters_is_split_and_keeps_its_buttons_last():
    lines = [f"• {i}. Chi bộ số {i}: 3/10 — 30% (mục tiêu 98%)" for i in range(1, 150)]
    reply = Reply("\n".join(lines), [[Choice("1. Chi bộ số 1", "s:1:2")]])
    parts = fit([reply])
    assert len(parts) >= 2 and all(len(p.text) <= 4096 for p in parts)
    assert "\n".join(p.text for p in parts) == reply.text
    assert [p.choices for p in parts[:-1]] == [[]] * (len(parts) - 1)
    assert parts[-1].choices == reply.choices
