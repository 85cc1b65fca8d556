"""The Telegram Bot API emulator: honest to the official spec and to what PTB expects.

A real python-telegram-bot Application long-polls the emulator from a background event loop,
so these tests cover the same HTTP path the bot uses in production.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import zlib
from collections.abc import Coroutine, Iterator
from typing import Any

import httpx
import pytest
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.emulators import _gen_telegram_spec as gen
from bot.emulators.telegram import (
    IMPLEMENTED_METHODS,
    NOT_MODIFIED,
    SPEC_SUBSET_PATH,
    EmulatedUser,
    TelegramApiSpec,
    TelegramEmulator,
)

TOKEN = "123456:TEST-TOKEN"


def _png(width: int, height: int) -> bytes:
    """A valid tiny PNG, so sendPhoto has real dimensions to report."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class LoopThread:
    """An asyncio loop in a daemon thread: PTB runs there, tests submit coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Bắt đầu", callback_data="go"),
                                      InlineKeyboardButton("Trang web", url="https://x.vn")]])
    await update.message.reply_text(
        f"Xin chào <b>{update.effective_user.first_name}</b>! args={context.args}",
        parse_mode=ParseMode.HTML, reply_markup=keyboard)


async def _button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer("Đã nhận", show_alert=True)
    await query.edit_message_text(f"Bạn chọn {query.data}")


async def _ask_phone(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    button = KeyboardButton("Chia sẻ số điện thoại", request_contact=True)
    await update.message.reply_text(
        "Gửi số của bạn", reply_markup=ReplyKeyboardMarkup([[button]], one_time_keyboard=True))


async def _contact(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    contact = update.message.contact
    own = contact.user_id == update.effective_user.id
    await update.message.reply_text(f"{contact.phone_number} own={own}",
                                    reply_markup=ReplyKeyboardRemove())


async def _files(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.message.reply_document(b"PK\x03\x04 not really xlsx", filename="Bảng điểm.xlsx",
                                        caption="<b>Điểm</b> tuần 1", parse_mode=ParseMode.HTML)
    await update.message.reply_photo(_png(3, 2), caption="biểu đồ")


@pytest.fixture(scope="module")
def emu() -> Iterator[TelegramEmulator]:
    with TelegramEmulator(token=TOKEN, bot_username="hoctap_test_bot") as emulator:
        yield emulator


@pytest.fixture(scope="module")
def ptb(emu: TelegramEmulator) -> Iterator[tuple[Application, LoopThread]]:
    """A real PTB Application long-polling the emulator (started once for the module)."""
    app = (ApplicationBuilder().token(TOKEN).base_url(emu.base_url)
           .base_file_url(emu.base_file_url).build())
    app.add_handler(CommandHandler("start", _start))
    app.add_handler(CommandHandler("phone", _ask_phone))
    app.add_handler(CommandHandler("files", _files))
    app.add_handler(MessageHandler(filters.CONTACT, _contact))
    app.add_handler(CallbackQueryHandler(_button))
    runner = LoopThread()

    async def start() -> None:
        await app.initialize()
        await app.updater.start_polling(poll_interval=0, timeout=1)
        await app.start()

    async def stop() -> None:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()

    runner.run(start())
    yield app, runner
    runner.run(stop())
    runner.close()


@pytest.fixture
def fresh() -> Iterator[tuple[TelegramEmulator, httpx.Client]]:
    """A separate emulator without a bot, driven with raw HTTP."""
    with TelegramEmulator(token=TOKEN) as emulator:
        with httpx.Client(base_url=f"{emulator.base_url}{TOKEN}/", timeout=10) as client:
            yield emulator, client


def _started_user(emu: TelegramEmulator, user_id: int, **kwargs: Any) -> EmulatedUser:
    """A user who has written to the bot (otherwise Telegram says "chat not found")."""
    user = emu.user(user_id, **kwargs)
    user.send_text("hi")
    return user


# --- the spec ----------------------------------------------------------------------------

def test_subset_covers_every_implemented_method() -> None:
    spec = TelegramApiSpec.load()
    assert set(spec.methods) == set(IMPLEMENTED_METHODS)
    known = set(spec.types) | {"Integer", "String", "Boolean", "Float"}
    for entry in [*spec.methods.values(), *spec.types.values()]:
        for f in entry.get("fields", []):  # required fields must be checkable in depth
            assert not f["required"] or all(
                t.replace("Array of ", "") in known for t in f["types"]), (entry["name"], f)


def test_subset_is_the_official_spec_trimmed() -> None:
    official = gen.find_official_spec()
    if official is None:
        pytest.skip("shared official api.json not present")
    expected = gen.build_subset(json.loads(official.read_text(encoding="utf-8")))
    assert json.loads(SPEC_SUBSET_PATH.read_text(encoding="utf-8")) == expected


def test_handlers_cannot_read_parameters_outside_the_spec() -> None:
    params = TelegramApiSpec.load().parse_params("sendMessage",
                                                 {"chat_id": "5", "text": "x", "bogus": 1})
    assert params == {"chat_id": 5, "text": "x"}  # unknown names ignored like Telegram
    with pytest.raises(KeyError):
        params.get("not_a_telegram_field")


# --- the real PTB application ----------------------------------------------------------

def test_command_reply_button_callback_answer_and_edit(emu: TelegramEmulator, ptb: Any) -> None:
    user = emu.user(1001, first_name="Lan", last_name="Nguyễn")
    sent = user.send_text("/start abc")
    assert sent["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]

    reply = user.wait_for()
    assert reply["text"] == "Xin chào Lan! args=['abc']"
    assert reply["entities"] == [{"type": "bold", "offset": 9, "length": 3}]
    assert reply["message_id"] == sent["message_id"] + 1

    with pytest.raises(ValueError, match="no callback_data"):
        user.press("Trang web")
    with pytest.raises(LookupError):
        user.press("missing")
    query_id = user.press("Bắt đầu")
    edited = user.wait_for(lambda u: u.callback_answers and "reply_markup" not in u.last())
    assert edited["text"] == "Bạn chọn go" and "edit_date" in edited
    assert user.callback_answers == [{"callback_query_id": query_id, "text": "Đã nhận",
                                      "show_alert": True, "url": None}]
    methods = [m for m, _ in emu.requests]
    assert {"getMe", "deleteWebhook", "getUpdates", "sendMessage", "answerCallbackQuery",
            "editMessageText"} <= set(methods)
    assert emu.updates_pending() <= 1


def test_request_contact_keyboard_and_contact_update(emu: TelegramEmulator, ptb: Any) -> None:
    user = emu.user(1002, first_name="Minh")
    user.send_text("/phone")
    user.wait_for()
    assert user.reply_keyboard["keyboard"][0][0]["request_contact"] is True
    user.send_contact(phone_number="84912345678")
    assert user.wait_for()["text"] == "84912345678 own=True"
    assert user.reply_keyboard is None
    user.send_contact(phone_number="+84900000000", user_id=42)
    assert user.wait_for()["text"] == "+84900000000 own=False"


def test_documents_and_photos_round_trip(emu: TelegramEmulator, ptb: Any) -> None:
    app, loop = ptb
    user = emu.user(1003)
    user.send_text("/files")
    user.wait_for(lambda u: len(u.messages) == 2)
    doc, photo = user.messages
    assert doc["document"]["file_name"] == "Bảng điểm.xlsx"
    assert doc["caption"] == "Điểm tuần 1"
    assert doc["caption_entities"] == [{"type": "bold", "offset": 0, "length": 4}]
    assert doc["file"].data == b"PK\x03\x04 not really xlsx"
    assert (photo["photo"][0]["width"], photo["photo"][0]["height"]) == (3, 2)

    async def download() -> bytes:
        tg_file = await app.bot.get_file(doc["document"]["file_id"])
        return bytes(await tg_file.download_as_bytearray())
    assert loop.run(download()) == b"PK\x03\x04 not really xlsx"

    sent = user.send_document("danh sách.csv", b"a,b\n1,2\n")
    assert emu.file(sent["document"]["file_id"]).data == b"a,b\n1,2\n"


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # retry_after
def test_ptb_sees_telegram_errors(emu: TelegramEmulator, ptb: Any) -> None:
    app, loop = ptb
    bot = app.bot
    _started_user(emu, 1004)

    message = loop.run(bot.send_message(1004, "một"))
    with pytest.raises(BadRequest, match="(?i)not modified"):
        loop.run(bot.edit_message_text("một", chat_id=1004, message_id=message.message_id))
    with pytest.raises(BadRequest, match="(?i)to edit not found"):
        loop.run(bot.edit_message_text("hai", chat_id=1004, message_id=9999))

    loop.run(bot.send_message(1004, "a" * 4096))
    loop.run(bot.send_message(1004, "<b>" + "&lt;" * 4096 + "</b>", parse_mode=ParseMode.HTML))
    with pytest.raises(BadRequest, match="(?i)too long"):
        loop.run(bot.send_message(1004, "a" * 4097))
    with pytest.raises(BadRequest, match="(?i)too long"):  # 2049 emoji = 4098 UTF-16 code units
        loop.run(bot.send_message(1004, "😀" * 2049))
    with pytest.raises(BadRequest, match="(?i)empty"):
        loop.run(bot.send_message(1004, "<b> </b>", parse_mode=ParseMode.HTML))
    with pytest.raises(BadRequest, match="(?i)parse entities"):
        loop.run(bot.send_message(1004, "Chào <Lan>", parse_mode=ParseMode.HTML))

    def keyboard(data: str) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data=data)]])
    loop.run(bot.send_message(1004, "ok", reply_markup=keyboard("x" * 64)))
    for too_long in ("x" * 65, "ệ" * 22):  # 22 characters but 66 bytes
        with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):
            loop.run(bot.send_message(1004, "ok", reply_markup=keyboard(too_long)))

    emu.inject_error("sendMessage", 429, retry_after=7, chat_id=1004)
    with pytest.raises(RetryAfter) as retry:
        loop.run(bot.send_message(1004, "x"))
    value = retry.value.retry_after
    assert (value if isinstance(value, int) else value.total_seconds()) == 7
    emu.inject_error("sendMessage", 502, chat_id=1004)
    with pytest.raises(NetworkError, match="(?i)Bad Gateway"):
        loop.run(bot.send_message(1004, "x"))
    loop.run(bot.send_message(1004, "faults are used up"))

    emu.block(1004)
    with pytest.raises(Forbidden, match="(?i)blocked by the user"):
        loop.run(bot.send_message(1004, "x"))
    emu.user(1004).send_text("/start")  # writing to the bot again unblocks it
    with pytest.raises(BadRequest, match="(?i)chat not found"):
        loop.run(bot.send_message(777_777, "nobody started me"))

    async def wrong_token() -> None:
        async with Bot("999:WRONG", base_url=emu.base_url):
            pass
    with pytest.raises(InvalidToken):
        loop.run(wrong_token())


def test_answer_callback_query_once_and_in_limits(emu: TelegramEmulator, ptb: Any) -> None:
    app, loop = ptb
    user = _started_user(emu, 1005)
    loop.run(app.bot.send_message(1005, "chọn", reply_markup=InlineKeyboardMarkup(
        [[InlineKeyboardButton("A", callback_data="a")]])))
    query_id = user.press("a")  # by callback_data; the app's handler answers it
    user.wait_for(lambda u: bool(u.callback_answers))
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        loop.run(app.bot.answer_callback_query(query_id, "again"))
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        loop.run(app.bot.answer_callback_query("123", "unknown"))


def test_commands_are_stored(emu: TelegramEmulator, ptb: Any) -> None:
    app, loop = ptb
    loop.run(app.bot.set_my_commands([("start", "Bắt đầu"), ("help", "Trợ giúp")]))
    assert [c.command for c in loop.run(app.bot.get_my_commands())] == ["start", "help"]
    assert emu.my_commands()[1] == {"command": "help", "description": "Trợ giúp"}
    with pytest.raises(BadRequest, match="(?i)BOT_COMMAND_INVALID"):
        loop.run(app.bot.set_my_commands([("Start!", "x")]))


# --- raw HTTP ----------------------------------------------------------------------------

def test_http_contract(fresh: tuple[TelegramEmulator, httpx.Client]) -> None:
    emu, http = fresh
    root = emu.base_url
    assert httpx.get(f"{root}999:nope/getMe").json() == {
        "ok": False, "error_code": 401, "description": "Unauthorized"}
    missing = http.post("noSuchMethod")
    assert missing.status_code == 404 and missing.json()["description"] == "Not Found"
    assert http.get("getme").json()["result"]["username"] == "hoctap_test_bot"  # any case

    _started_user(emu, 7)
    ok = [http.post("sendMessage", json={"chat_id": 7, "text": "json", "unknown_param": 1}),
          http.post("sendMessage", data={"chat_id": "7", "text": "form"}),
          http.post("sendMessage", params={"chat_id": "7", "text": "query"}),
          http.post("sendMessage", data={"chat_id": "7", "text": "multipart"},
                    files={"ignored": ("a.txt", b"x")})]
    assert [r.json()["result"]["text"] for r in ok] == ["json", "form", "query", "multipart"]
    ids = [r.json()["result"]["message_id"] for r in ok]
    assert ids == sorted(ids) and len(set(ids)) == 4

    def error(method: str, **payload: Any) -> tuple[int, str]:
        response = http.post(method, json=payload)
        body = response.json()
        assert body["ok"] is False and body["error_code"] == response.status_code
        return response.status_code, body["description"]

    assert error("sendMessage", text="x") == (400, "Bad Request: chat_id is empty")
    assert error("sendMessage", chat_id=7) == (400, "Bad Request: message text is empty")
    assert error("sendMessage", chat_id={"id": 7}, text="x")[0] == 400
    assert error("sendMessage", chat_id=7, text="x", reply_markup="{not json") == (
        400, "Bad Request: can't parse reply keyboard markup JSON object")
    assert error("sendMessage", chat_id=7, text="x",
                 reply_markup={"inline_keyboard": [[{"text": "no action"}]]})[0] == 400
    assert error("sendMessage", chat_id=7, text="x",
                 reply_markup={"inline_keyboard": "nope"})[0] == 400
    assert error("sendDocument", chat_id=7) == (
        400, "Bad Request: there is no document in the request")
    assert error("sendPhoto", chat_id=7, photo="not-a-file-id")[0] == 400
    assert error("sendChatAction", chat_id=7, action="dancing")[0] == 400
    sent = http.post("sendMessage", json={"chat_id": 7, "text": "same", "reply_markup": {
        "inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}}).json()["result"]
    same = {"chat_id": 7, "message_id": sent["message_id"], "text": "same",
            "reply_markup": sent["reply_markup"]}
    assert error("editMessageText", **same) == (400, NOT_MODIFIED)
    assert error("editMessageReplyMarkup", chat_id=7, message_id=sent["message_id"],
                 reply_markup=sent["reply_markup"]) == (400, NOT_MODIFIED)
    assert http.post("editMessageText", json={**same, "text": "changed"}).json()["ok"]
    assert http.post("deleteMessage", json={"chat_id": 7, "message_id": sent["message_id"]}
                     ).json()["result"] is True
    assert error("deleteMessage", chat_id=7, message_id=sent["message_id"]) == (
        400, "Bad Request: message to delete not found")
    assert all(m["message_id"] != sent["message_id"] for m in emu.user(7).messages)

    emu.inject_error("getMe", 429, retry_after=3)
    response = http.get("getMe")
    assert response.status_code == 429 and response.json()["parameters"] == {"retry_after": 3}
    assert emu.calls("sendChatAction")[0] == {"chat_id": 7, "action": "dancing"}


def test_every_implemented_method_answers_within_the_spec(
        fresh: tuple[TelegramEmulator, httpx.Client]) -> None:
    """Handlers may only read spec parameters and self_check validates every result, so a
    200 from each method proves both for the paths taken."""
    emu, http = fresh
    _started_user(emu, 11)
    keyboard = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    doc = http.post("sendDocument", data={"chat_id": "11"},
                    files={"document": ("a.txt", b"x")}).json()["result"]
    msg = http.post("sendMessage", json={"chat_id": 11, "text": "m"}).json()["result"]
    http.post("editMessageReplyMarkup", json={"chat_id": 11, "message_id": msg["message_id"],
                                              "reply_markup": keyboard}).raise_for_status()
    query_id = emu.user(11).press("A")
    calls: dict[str, dict[str, Any]] = {
        "getMe": {}, "getUpdates": {"timeout": 0}, "getWebhookInfo": {},
        "setWebhook": {"url": "https://bot.example/hook"}, "deleteWebhook": {},
        "setMyCommands": {"commands": [{"command": "start", "description": "Bắt đầu"}]},
        "getMyCommands": {}, "deleteMyCommands": {},
        "sendMessage": {"chat_id": 11, "text": "<i>x</i>", "parse_mode": "HTML",
                        "link_preview_options": {"is_disabled": True},
                        "reply_markup": {"keyboard": [[{"text": "Số", "request_contact": True}]]}},
        "editMessageText": {"chat_id": 11, "message_id": msg["message_id"], "text": "m2",
                            "reply_markup": keyboard},
        "editMessageReplyMarkup": {"chat_id": 11, "message_id": msg["message_id"]},
        "answerCallbackQuery": {"callback_query_id": query_id, "text": "ok"},
        "sendDocument": {"chat_id": 11, "document": doc["document"]["file_id"], "caption": "c"},
        "sendPhoto": {"chat_id": 11, "photo": "https://example.org/a.png"},
        "sendChatAction": {"chat_id": 11, "action": "typing"},
        "deleteMessage": {"chat_id": 11, "message_id": msg["message_id"]},
        "getFile": {"file_id": doc["document"]["file_id"]},
    }
    assert set(calls) == set(IMPLEMENTED_METHODS)
    for method, payload in calls.items():
        response = http.post(method, json=payload)
        assert response.status_code == 200, (method, response.json())


def test_long_polling(fresh: tuple[TelegramEmulator, httpx.Client]) -> None:
    emu, http = fresh
    began = time.monotonic()
    assert http.post("getUpdates", json={"timeout": 1}).json()["result"] == []
    assert 0.9 <= time.monotonic() - began < 3

    user = emu.user(8)
    threading.Timer(0.2, user.send_text, args=("xin chào",)).start()
    began = time.monotonic()
    updates = http.post("getUpdates", data={"timeout": "5"}).json()["result"]
    assert time.monotonic() - began < 2
    assert updates[0]["message"]["text"] == "xin chào"
    user.send_text("hai")
    user.send_text("ba")
    assert emu.updates_pending() == 3
    first = updates[0]["update_id"]
    batch = http.post("getUpdates", json={"offset": first + 1, "limit": 1}).json()["result"]
    assert [u["update_id"] for u in batch] == [first + 1]
    assert emu.updates_pending() == 2  # the offset confirmed the first update
    assert http.post("getWebhookInfo").json()["result"] == {
        "url": "", "has_custom_certificate": False, "pending_update_count": 2}

    holder: dict[str, Any] = {}
    waiting = threading.Thread(target=lambda: holder.update(
        r=httpx.post(f"{emu.base_url}{TOKEN}/getUpdates", json={"timeout": 3, "offset": -1})))
    http.post("getUpdates", json={"offset": first + 3})  # confirm everything
    generation = emu.polls_started()
    waiting.start()
    deadline = time.monotonic() + 5
    while emu.polls_started() == generation and time.monotonic() < deadline:  # until it is waiting
        time.sleep(0.01)
    http.post("getUpdates", json={"timeout": 0})  # a second poller terminates the first
    waiting.join(5)
    assert holder["r"].status_code == 409

    assert http.post("setWebhook", json={"url": "https://bot.example/hook"}).json()["ok"]
    assert http.post("getUpdates").status_code == 409
    assert http.post("deleteWebhook", json={"drop_pending_updates": True}).json()["ok"]
    assert http.post("getUpdates").json()["result"] == []


def test_flood_limit_per_chat() -> None:
    with TelegramEmulator(token=TOKEN, flood_limit_per_chat=1.0) as emu:
        _started_user(emu, 9)
        url = f"{emu.base_url}{TOKEN}/sendMessage"
        assert httpx.post(url, json={"chat_id": 9, "text": "1"}).status_code == 200
        second = httpx.post(url, json={"chat_id": 9, "text": "2"})
        assert second.status_code == 429 and second.json()["parameters"]["retry_after"] == 1


def test_wait_for_timeout_shows_the_transcript(fresh: tuple[TelegramEmulator, Any]) -> None:
    emu, _ = fresh
    user = emu.user(10)
    user.send_text("/start")
    with pytest.raises(TimeoutError, match=r"(?s)user #1: /start"):
        user.wait_for(timeout=0.2)
