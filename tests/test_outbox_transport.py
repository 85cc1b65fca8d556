"""The outbox's Telegram transport: Bot API answers become the sender's kinds, as the spec words them."""

from __future__ import annotations

import asyncio

import pytest
from telegram import Bot

from bot.channels.telegram import TelegramTransport
from bot.domain.replies import Choice, Reply
from bot.outbox.sender import SendError


def attempt(emulator, chat_id: int, reply: Reply | None = None, base_url: str | None = None):
    """What one delivery did: None when sent, else (kind, reason, retry_after)."""
    async def go():
        bot = Bot(emulator.token, base_url=base_url or emulator.base_url)  # only its address and token are used
        async with TelegramTransport(bot) as transport:
            try:
                await transport.deliver(str(chat_id), reply or Reply("Xin chào đồng chí"), None)
            except SendError as exc:
                return exc.kind, exc.reason, exc.retry_after
            return None

    return asyncio.run(go())


def test_bot_api_refusals_become_wait_give_up_or_try_later_and_never_show_the_token(emulator):
    user = emulator.user(501)
    user.send_text("/start")
    emulator.inject_error("sendMessage", 429, retry_after=7)
    assert attempt(emulator, 501) == ("retry_after", "flood control", 7.0)
    emulator.block(501)
    assert attempt(emulator, 501) == ("permanent", "Forbidden: bot was blocked by the user", None)
    emulator.unblock(501)
    assert attempt(emulator, 99_999)[:2] == ("permanent", "Chat not found")  # "Bad Request: chat not found"
    emulator.inject_error("sendMessage", 500, description="Internal Server Error")
    assert attempt(emulator, 501)[0] == "transient"
    emulator.inject_error("sendMessage", 502, description="Bad Gateway")
    assert attempt(emulator, 501)[0] == "transient"
    emulator.inject_error("sendMessage", 401, description="Unauthorized")
    assert attempt(emulator, 501)[:2] == ("transient", "InvalidToken: Unauthorized")  # the operator's to fix
    unreachable = attempt(emulator, 501, base_url="http://127.0.0.1:9/bot")  # nothing listens on port 9
    assert unreachable[0] == "transient" and emulator.token not in unreachable[1]
    assert attempt(emulator, 501) is None
    assert [m["text"] for m in user.messages if m.get("text") == "Xin chào đồng chí"] == ["Xin chào đồng chí"]


def test_a_sent_message_has_its_text_and_buttons_as_the_member_sees_them(emulator):
    user = emulator.user(502)
    user.send_text("/start")
    reply = Reply("📢 Đợt học tập mới: «Nghị quyết» — hạn 15/12/2026", [[Choice("📖 Học ngay", "doc:1")]])
    assert attempt(emulator, 502, reply) is None
    message = user.last()
    assert message["text"] == reply.text
    assert message["reply_markup"] == {"inline_keyboard": [[{"text": "📖 Học ngay", "callback_data": "doc:1"}]]}


def test_a_message_longer_than_telegram_takes_arrives_in_parts_with_the_buttons_on_the_last(emulator):
    """A weekly digest of many open rounds can pass 4,096 characters: Telegram refuses such a text."""
    user = emulator.user(504)
    user.send_text("/start")
    lines = [f"• Đợt {i}: Nghị quyết số {i}-NQ/TU — 40/50 đảng viên đã học (80,0%)" for i in range(120)]
    reply = Reply("\n".join(lines), [[Choice("📊 Xem chi tiết", "s:1:1")]])
    assert len(reply.text) > 6000
    assert attempt(emulator, 504, reply) is None
    parts = user.messages
    assert len(parts) == 2 and all(len(p["text"]) <= 4096 for p in parts)
    assert "\n".join(p["text"] for p in parts).split("\n") == lines  # cut between lines, nothing lost
    assert "reply_markup" not in parts[0] and parts[1]["reply_markup"]["inline_keyboard"][0][0]["text"] == "📊 Xem chi tiết"


def test_after_a_failure_between_parts_the_next_try_sends_only_the_parts_left(emulator):
    from bot.outbox.sender import SKIP_PARTS

    user = emulator.user(505)
    user.send_text("/start")
    lines = [f"• Đợt {i}: Nghị quyết số {i}-NQ/TU — 40/50 đảng viên đã học (80,0%)" for i in range(120)]
    reply = Reply("\n".join(lines))
    emulator.inject_error("sendMessage", 502, description="Bad Gateway", after=1)

    async def deliver(skip: int):
        SKIP_PARTS.set(skip)
        async with TelegramTransport(Bot(emulator.token, base_url=emulator.base_url)) as transport:
            try:
                await transport.deliver("505", reply, None)
            except SendError as exc:
                return exc.kind, exc.parts_done
        return None

    assert asyncio.run(deliver(0)) == ("transient", 1)  # the first part arrived, the second did not
    assert asyncio.run(deliver(1)) is None
    assert "\n".join(m["text"] for m in user.messages).split("\n") == lines and len(user.messages) == 2


# a database connection another test left to the garbage collector may be collected here: not this test's subject
@pytest.mark.filterwarnings("default:Exception ignored in. <function BaseConnection.__del__"
                            ":pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("error")
def test_sending_through_the_transport_raises_no_library_warning(emulator):
    emulator.user(503).send_text("/start")
    assert attempt(emulator, 503) is None
