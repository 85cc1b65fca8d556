"""The bot's HTTP layer under python-telegram-bot (``AiohttpRequest``): what PTB expects of a request class
when Telegram does not answer, cannot be reached, or is sent a file."""

from __future__ import annotations

import asyncio

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import NetworkError, TimedOut

from bot.channels.telegram_request import AiohttpRequest
from bot.emulators.common import free_port


def test_a_call_telegram_does_not_answer_in_time_is_timed_out_and_arrives_late(emulator):
    user = emulator.user(501)
    user.send_text("/start")
    emulator.hold(501)  # the network stalls on this chat

    async def send():
        async with Bot(emulator.token, base_url=emulator.base_url, request=AiohttpRequest()) as bot:
            with pytest.raises(TimedOut):
                await bot.send_message(501, "Xin chào", read_timeout=0.5)

    asyncio.run(send())
    emulator.release(501)
    user.wait_for(lambda u: any(m.get("text") == "Xin chào" for m in u.messages))  # it did leave: sent once


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:{port}/bot", "htp://127.0.0.1:{port}/bot", "http://[bad/bot"],
                         ids=["nobody-listens", "a-bad-scheme", "a-bad-address"])
def test_a_telegram_that_cannot_be_reached_is_a_network_error_without_the_token(base_url):
    token = "123456:SECRET-TOKEN"

    async def send():
        async with Bot(token, base_url=base_url.format(port=free_port()), request=AiohttpRequest()) as bot:
            await bot.send_message(1, "x")

    with pytest.raises(NetworkError) as failed:
        asyncio.run(send())
    assert not isinstance(failed.value, TimedOut) and "SECRET-TOKEN" not in str(failed.value)
    assert failed.value.__cause__ is None or "SECRET-TOKEN" not in str(failed.value.__cause__)


def test_a_file_and_its_caption_reach_telegram_as_one_upload(emulator):
    user = emulator.user(502)
    user.send_text("/start")

    async def send():
        async with Bot(emulator.token, base_url=emulator.base_url, request=AiohttpRequest()) as bot:
            await bot.send_document(502, b"STT,Ho ten\n1,Nguyen Van A\n", filename="bao-cao.csv",
                                    caption="Báo cáo đợt 1")

    asyncio.run(send())
    sent = [m for m in user.messages if m.get("document")]
    assert sent and sent[0]["document"]["file_name"] == "bao-cao.csv" and sent[0]["caption"] == "Báo cáo đợt 1"
    assert emulator.file(sent[0]["document"]["file_id"]).data == b"STT,Ho ten\n1,Nguyen Van A\n"


def test_text_with_form_reserved_characters_and_a_keyboard_arrives_exactly_as_written(emulator):
    """The request class url-encodes the parameters itself: Vietnamese, ``& = + % #`` and newlines in a
    message, and the JSON of its buttons, must reach Telegram unchanged."""
    user = emulator.user(503)
    user.send_text("/start")
    text = "Điểm: 8/10 & đạt = 80% + thưởng #1?\nCâu tiếp theo — “Nghị quyết 57”"

    async def send():
        async with Bot(emulator.token, base_url=emulator.base_url, request=AiohttpRequest()) as bot:
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("A. Đúng & đủ", callback_data="a:1=2&b")]])
            await bot.do_api_request("sendMessage", api_kwargs={"chat_id": 503, "text": text,
                                                                "reply_markup": keyboard})

    asyncio.run(send())
    sent = user.last()
    assert sent["text"] == text
    button = sent["reply_markup"]["inline_keyboard"][0][0]
    assert (button["text"], button["callback_data"]) == ("A. Đúng & đủ", "a:1=2&b")
