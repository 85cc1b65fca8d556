"""The Zalo Bot API emulator: Zalo's own rules, checked over real HTTP with httpx as the bot's
client would call it (f"{base_url}/bot{token}/{method}", JSON bodies)."""

from __future__ import annotations

import hmac
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.emulators.zalo import (
    BLOCKED_DESCRIPTION,
    EVENT_IMAGE,
    EVENT_TEXT,
    EVENT_UNSUPPORTED,
    SECRET_HEADER,
    WEBHOOK_ACTIVE_DESCRIPTION,
    ZaloEmulator,
)

TOKEN = "1234567890:TEST-ZALO"
SECRET = "s3cret-webhook-token"
HEX20 = re.compile(r"[0-9a-f]{20}")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def emu() -> Iterator[ZaloEmulator]:
    with ZaloEmulator(TOKEN, "HocTap") as e:
        yield e


@pytest.fixture
def api(emu: ZaloEmulator) -> Iterator[Any]:
    client = httpx.Client(timeout=15)

    def call(method: str, token: str = TOKEN, **params: Any) -> tuple[int, dict[str, Any]]:
        r = client.post(f"{emu.base_url}/bot{token}/{method}", json=params)
        return r.status_code, r.json()

    yield call
    client.close()


def poll(api: Any, timeout: float = 0) -> tuple[int, dict[str, Any]]:
    return api("getUpdates", timeout=timeout)


class Receiver:
    """The bot's side of a webhook: checks the secret in constant time, records bodies, and
    serves a photo for sendPhoto."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], Any]] = []
        self.photo_hits = 0

        async def hook(request: Request) -> Response:
            if not hmac.compare_digest(request.headers.get(SECRET_HEADER, ""), SECRET):
                return JSONResponse({"ok": False}, 403)
            body = await request.body()
            self.received.append((dict(request.headers), json.loads(body) if body else None))
            return JSONResponse({"ok": True})

        async def photo(request: Request) -> Response:
            self.photo_hits += 1
            return Response(PNG, media_type="image/png")

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = Starlette(routes=[Route("/zalo/webhook", hook, methods=["POST"]),
                                Route("/p/chart.png", photo)])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.005)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


# --- transport and getMe ----------------------------------------------------------------------
def test_get_me_wrong_token_and_unknown_methods(emu, api):
    status, body = api("getMe")
    assert status == 200 and body["ok"] is True
    assert body["result"] == {"id": "1234567890", "account_name": "HocTap",
                              "account_type": "BASIC", "can_join_groups": True}
    assert api("getMe", token="1234567890:WRONG") == (
        401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
    for method in ("editMessageText", "setMyCommands", "answerCallbackQuery", "getme"):
        status, body = api(method, chat_id="x", text="y")
        assert status == 404 and body["ok"] is False and body["error_code"] == 404
    assert [m for m, _ in emu.requests] == ["getMe", "editMessageText", "setMyCommands",
                                             "answerCallbackQuery", "getme"]
    emu.reset_log()
    assert emu.requests == []


# --- long polling -----------------------------------------------------------------------------
def test_idle_get_updates_holds_then_answers_408(api):
    started = time.monotonic()
    status, body = poll(api, timeout="1")  # Zalo accepts the timeout as a string too
    elapsed = time.monotonic() - started
    assert status == 408
    assert body == {"ok": False, "error_code": 408, "description": "Request timeout"}
    assert 0.9 <= elapsed < 3


def test_user_message_is_one_update_with_ms_date_and_string_ids(emu, api):
    user = emu.user("6ede9afa66b88fe6d6a9", "Nguyễn Văn A")
    before = int(time.time() * 1000)
    sent = user.send_text("xin chào")
    user.send_text("hai")
    assert emu.updates_pending() == 2
    status, body = poll(api, timeout=5)
    assert status == 200 and body["ok"] is True
    update = body["result"]
    assert set(update) == {"event_name", "message"}  # one object: no list, no update_id
    assert update["event_name"] == EVENT_TEXT
    msg = update["message"]
    assert msg == sent
    assert HEX20.fullmatch(msg["message_id"])
    assert before <= msg["date"] <= int(time.time() * 1000) + 1  # milliseconds
    assert msg["chat"] == {"id": "6ede9afa66b88fe6d6a9", "chat_type": "PRIVATE"}
    assert msg["from"] == {"id": "6ede9afa66b88fe6d6a9", "display_name": "Nguyễn Văn A",
                           "is_bot": False}
    assert msg["text"] == "xin chào"
    assert poll(api)[1]["result"]["message"]["text"] == "hai"
    assert poll(api)[0] == 408 and emu.updates_pending() == 0


def test_held_poll_is_answered_when_a_message_arrives(emu, api):
    user = emu.user("u1")
    threading.Timer(0.2, user.send_text, ["đến đây"]).start()
    started = time.monotonic()
    status, body = poll(api, timeout=5)
    assert status == 200 and body["result"]["message"]["text"] == "đến đây"
    assert time.monotonic() - started < 2


def test_returned_update_can_be_replayed(emu, api):
    a, b = emu.user("a1", "A"), emu.user("b1", "B")
    first = a.send_text("một")
    b.send_text("hai")
    assert poll(api)[1]["result"]["message"]["message_id"] == first["message_id"]
    assert poll(api)[1]["result"]["message"]["text"] == "hai"
    emu.replay(first["message_id"])
    again = poll(api)[1]["result"]
    assert again == {"event_name": EVENT_TEXT, "message": first}  # same message_id again
    emu.replay_last(b)
    assert poll(api)[1]["result"]["message"]["text"] == "hai"
    emu.replay_last()
    assert poll(api)[1]["result"]["message"]["text"] == "hai"
    with pytest.raises(LookupError):
        emu.replay("0" * 20)


def test_other_events(emu, api):
    user = emu.user("u2")
    user.send_image("https://photo.zdn.vn/a.jpg", "ảnh")
    user.send_image("https://photo.zdn.vn/b.jpg", url_key="photo")
    user.send_sticker("abc")
    user.send_unsupported()
    user.send_event("message.future.received", text=None, extra=1)
    updates = [poll(api)[1]["result"] for _ in range(5)]
    assert updates[0]["event_name"] == EVENT_IMAGE
    assert updates[0]["message"]["photo_url"] == "https://photo.zdn.vn/a.jpg"
    assert updates[0]["message"]["caption"] == "ảnh"
    assert updates[1]["message"]["photo"] == "https://photo.zdn.vn/b.jpg"
    assert "caption" not in updates[1]["message"]
    assert updates[2]["message"]["sticker"] == "abc"
    assert updates[3]["event_name"] == EVENT_UNSUPPORTED
    assert set(updates[3]["message"]) == {"message_id", "date", "chat", "from"}
    assert updates[4] == {"event_name": "message.future.received",
                          "message": {**updates[4]["message"], "extra": 1}}


# --- sending ----------------------------------------------------------------------------------
def test_send_message_limits_and_unknown_chat(emu, api):
    user = emu.user("u3")
    assert api("sendMessage", chat_id="u3", text="chào")[0] == 400  # never wrote: bot can't
    assert api("sendMessage", chat_id="nobody", text="chào")[0] == 400
    user.send_text("hi")
    status, body = api("sendMessage", chat_id="u3", text="x" * 2001)
    assert status == 400 and body["ok"] is False and body["error_code"] == 400
    assert api("sendMessage", chat_id="u3", text="😀" * 1001)[0] == 400  # UTF-16 units
    assert api("sendMessage", chat_id="u3", text="")[0] == 400
    assert api("sendMessage", chat_id="u3")[0] == 400
    assert api("sendMessage", chat_id="u3", text="a", parse_mode="MarkdownV2")[0] == 400
    assert api("sendMessage", chat_id=123, text="a")[0] == 400  # ids are strings
    assert user.messages == [] and emu.sent_count() == 0
    status, body = api("sendMessage", chat_id="u3", text="y" * 2000)
    assert status == 200 and set(body["result"]) == {"message_id", "date"}
    assert HEX20.fullmatch(body["result"]["message_id"])
    assert abs(body["result"]["date"] - time.time() * 1000) < 5000
    assert api("sendMessage", chat_id="u3", text="**đậm**", parse_mode="markdown")[0] == 200
    assert [m["text"][:3] for m in user.messages] == ["yyy", "**đ"]
    assert user.last()["parse_mode"] == "markdown"
    assert emu.sent_count() == 2 and len(emu.calls("sendMessage")) == 10


def test_photo_sticker_and_chat_action(emu, api):
    user = emu.user("u4")
    user.send_text("hi")
    assert api("sendChatAction", chat_id="u4", action="typing") == (200, {"ok": True})
    assert api("sendChatAction", chat_id="u4", action="upload_document")[0] == 400
    assert user.actions == ["typing"]
    assert api("sendPhoto", chat_id="u4", photo="not a url")[0] == 400
    assert api("sendPhoto", chat_id="u4", photo="https://x.test/a.png",
               caption="c" * 2001)[0] == 400
    status, body = api("sendPhoto", chat_id="u4", photo="https://x.test/a.png", caption="đồ thị")
    assert status == 200 and set(body["result"]) == {"message_id", "date"}
    assert api("sendSticker", chat_id="u4", sticker="abc")[0] == 200
    photo, sticker = user.messages
    assert photo["photo"] == "https://x.test/a.png" and photo["caption"] == "đồ thị"
    assert sticker["sticker"] == "abc"
    assert emu.sent_count() == 2


def test_fetch_photos_from_the_bots_server(receiver):
    with ZaloEmulator(TOKEN, fetch_photos=True) as emu, httpx.Client() as client:
        emu.user("u5").send_text("báo cáo")

        def send(photo: str) -> int:
            return client.post(f"{emu.base_url}/bot{TOKEN}/sendPhoto",
                               json={"chat_id": "u5", "photo": photo}).status_code

        assert send(f"{receiver.url}/p/chart.png") == 200
        assert send(f"{receiver.url}/p/gone.png") == 400  # the bot's server answered 404
        (msg,) = emu.user("u5").messages
        assert msg["fetched"].status == 200 and msg["fetched"].data == PNG
        assert msg["fetched"].content_type == "image/png" and receiver.photo_hits == 1


# --- faults -----------------------------------------------------------------------------------
def test_429_has_no_retry_after_and_other_faults(emu, api):
    user = emu.user("u6")
    user.send_text("hi")
    emu.inject_error("sendMessage", 429, times=2)
    for _ in range(2):
        status, body = api("sendMessage", chat_id="u6", text="a")
        assert (status, body) == (429, {"ok": False, "error_code": 429,
                                        "description": "Quota exceeded"})
        assert "retry_after" not in json.dumps(body)
    assert api("sendMessage", chat_id="u6", text="a")[0] == 200
    emu.inject_error("*", 500, "boom", chat_id="other")
    assert api("sendMessage", chat_id="u6", text="b")[0] == 200  # other chat only
    emu.block(user)
    assert api("sendMessage", chat_id="u6", text="c") == (
        403, {"ok": False, "error_code": 403, "description": BLOCKED_DESCRIPTION})
    user.send_text("again")  # writing to the bot again lifts the block
    assert api("sendMessage", chat_id="u6", text="d")[0] == 200
    assert emu.sent_count() == 3


def test_pacing_and_monthly_quota():
    with ZaloEmulator(TOKEN, min_interval_per_chat=0.25, monthly_quota=3) as emu, \
            httpx.Client() as client:
        for uid in ("p1", "p2"):
            emu.user(uid).send_text("hi")

        def send(chat: str) -> int:
            return client.post(f"{emu.base_url}/bot{TOKEN}/sendMessage",
                               json={"chat_id": chat, "text": "x"}).status_code

        assert send("p1") == 200
        assert send("p1") == 429  # too fast into one chat
        assert send("p2") == 200  # another chat is not affected
        time.sleep(0.27)
        assert send("p1") == 200
        time.sleep(0.27)
        assert send("p2") == 429  # the third message used the whole quota
        assert emu.sent_count() == 3


# --- webhook ----------------------------------------------------------------------------------
def test_webhook_info_set_and_delete(emu, api):
    status, body = api("getWebhookInfo")
    assert status == 404 and body["ok"] is False
    assert api("setWebhook", url="https://bot.example.vn/zalo", secret_token="short")[0] == 400
    assert api("setWebhook", url="http://bot.example.vn/zalo", secret_token=SECRET)[0] == 400
    status, body = api("setWebhook", url="https://bot.example.vn/zalo", secret_token=SECRET)
    assert status == 200 and body["result"]["url"] == "https://bot.example.vn/zalo"
    assert isinstance(body["result"]["updated_at"], int)
    status, body = api("getWebhookInfo")
    assert status == 200 and set(body["result"]) == {"url", "updated_at"}
    assert poll(api) == (400, {"ok": False, "error_code": 400,
                               "description": WEBHOOK_ACTIVE_DESCRIPTION})
    status, body = api("deleteWebhook")
    assert status == 200 and body["result"]["url"] == ""
    assert api("getWebhookInfo")[0] == 404
    assert poll(api)[0] == 408


def test_webhook_delivery_secret_and_both_body_shapes(emu, api, receiver):
    user = emu.user("w1", "Trần B")
    user.send_text("trước khi đặt webhook")  # queued: delivered once the webhook is set
    status, _ = api("setWebhook", url=f"{receiver.url}/zalo/webhook", secret_token=SECRET)
    assert status == 200
    first = emu.wait_deliveries(1)[0]
    assert first.status == 200 and first.headers[SECRET_HEADER] == SECRET
    headers, body = receiver.received[0]
    assert headers[SECRET_HEADER.lower()] == SECRET
    assert headers["user-agent"].startswith("Java/")
    assert body["ok"] is True and body["result"]["event_name"] == EVENT_TEXT
    assert body["result"]["message"]["text"] == "trước khi đặt webhook"

    emu.webhook_bare_body = True
    sent = user.send_text("thân trần")
    emu.wait_deliveries(2)
    assert receiver.received[1][1] == {"event_name": EVENT_TEXT, "message": sent}
    assert emu.updates_pending() == 0

    emu.replay(sent["message_id"])  # replays reach the webhook too
    assert emu.wait_deliveries(3)[2].message_id == sent["message_id"]

    forged = emu.deliver_webhook_with_secret("wrong-secret-123")
    assert forged.status == 403 and len(receiver.received) == 3
    explicit = emu.deliver_webhook(emu.make_text_update(user, "tay"), bare=False)
    assert explicit.status == 200 and receiver.received[3][1]["result"]["message"]["text"] == "tay"
    assert [d.status for d in emu.deliveries] == [200, 200, 200, 403, 200]


def test_webhook_verification_and_failed_delivery(receiver):
    with ZaloEmulator(TOKEN, webhook_verification=True, webhook_timeout=2) as emu, \
            httpx.Client() as client:
        def set_hook(url: str) -> dict[str, Any]:
            return client.post(f"{emu.base_url}/bot{TOKEN}/setWebhook",
                               json={"url": url, "secret_token": SECRET}).json()

        good = set_hook(f"{receiver.url}/zalo/webhook")["result"]["verification"]
        assert good["ok"] is True and receiver.received[0][1] is None  # empty probe
        bad = set_hook(f"{receiver.url}/nowhere")["result"]
        assert bad["verification"]["ok"] is False  # saved anyway, as on Zalo
        assert emu.webhook["url"].endswith("/nowhere")
        emu.user("w2").send_text("mất")
        lost = emu.wait_deliveries(3)[2]
        assert lost.status == 404 and emu.updates_pending() == 0  # not retried


# --- groups -----------------------------------------------------------------------------------
def test_group_only_mentions_and_replies_reach_the_bot(emu, api):
    group = emu.group("g-chibo-1", "Chi bộ 1")
    member = emu.user("m1", "Lê C")
    plain = group.send_text(member, "mọi người làm bài chưa?")
    assert plain["delivered"] is False and emu.updates_pending() == 0
    assert api("sendMessage", chat_id="g-chibo-1", text="x")[0] == 400  # bot can't write first
    mention = group.mention(member, "thống kê")
    assert mention["delivered"] is True and mention["text"] == "@HocTap thống kê"
    update = poll(api)[1]["result"]
    assert update["message"]["chat"] == {"id": "g-chibo-1", "chat_type": "GROUP"}
    assert update["message"]["from"]["id"] == "m1"
    assert update["message"]["text"] == "@HocTap thống kê"  # the mention stays in the text
    status, body = api("sendMessage", chat_id="g-chibo-1", text="Hãy nhắn riêng cho tôi.")
    assert status == 200
    assert group.last()["text"] == "Hãy nhắn riêng cho tôi."
    reply = group.send_text("m2", "vâng", reply_to=body["result"]["message_id"])
    assert reply["delivered"] is True
    assert poll(api)[1]["result"]["message"]["text"] == "vâng"
    other = group.send_text("m2", "ừ", reply_to=plain["message_id"])  # reply to a person
    assert other["delivered"] is False and poll(api)[0] == 408
    assert api("sendMessage", chat_id="m1", text="x")[0] == 400  # a group mention is no DM
    assert [m["delivered"] for m in group.all_messages] == [False, True, True, True, False]
    assert "not delivered" in group.transcript()


# --- driver -----------------------------------------------------------------------------------
def test_wait_for_and_transcript(emu, api):
    user = emu.user("d1", "Phạm D")
    user.send_text("/hoc")

    def bot() -> None:
        poll(api)
        api("sendMessage", chat_id="d1", text="Trang 1")
        time.sleep(0.05)
        api("sendMessage", chat_id="d1", text="gõ TIẾP để đọc tiếp")

    threading.Thread(target=bot).start()
    last = user.wait_for(lambda u: len(u.messages) == 2, timeout=5)
    assert last["text"] == "gõ TIẾP để đọc tiếp"
    user.mark()
    with pytest.raises(TimeoutError, match="Trang 1"):
        user.wait_for(timeout=0.1)
    assert "Phạm D" in user.transcript() and "bot" in user.transcript()


def test_second_poller_releases_the_first(emu, api):
    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(poll(api, timeout=5)[0]))
    first.start()
    time.sleep(0.2)
    assert poll(api, timeout=0.1)[0] == 408
    first.join(3)
    assert results == [408] and emu.poll_conflicts == 1
