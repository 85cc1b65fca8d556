"""The Zalo channel end to end: the real httpx client, poller and webhook over HTTP against the Zalo
emulator, the real ChatService and database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select

from bot.channels.zalo import TRAITS, BackgroundZalo, ZaloOptions, ZaloQuota, ZaloRuntime, render
from bot.domain.replies import Outcome, Reply
from bot.reports.replies import report_replies
from bot.services.chat import ChatService
from bot.services.linking import create_invites, format_code
from bot.outbox import queue
from bot.storage.models import Answer, ChannelUsage, ChatAccount, ChatState, Member, OutboxMessage, ProcessedUpdate
from bot.timeutil import utcnow
from tests.conftest import ZALO_TOKEN
from tests.messengers import TZ, ChannelProcess, count, free_port, new_texts, say  # noqa: F401 - also for others

TOKEN = ZALO_TOKEN
SECRET = "webhook-secret-0123"


class ZaloProcess(ChannelProcess):
    """The Zalo side of the bot as one process runs it: start, stop (as a crash would), start again."""

    def __init__(self, db, emulator, *, mode: str = "polling", public: bool = False, quota=None,
                 poll_interval: float = 0.0, bot_name: str | None = None, study_links=None, clock=utcnow):
        self.db, self.emulator, self.mode, self.quota, self.clock = db, emulator, mode, quota, clock
        self.poll_interval, self.bot_name = poll_interval, bot_name
        self.study_links = study_links
        self.public_url = None
        if mode == "webhook" or public:
            port = free_port()
            self.public_url, self.listen = f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"
        self.running: BackgroundZalo | None = None

    def start(self) -> "ZaloProcess":
        service = ChatService(self.db, TRAITS, TZ, budget=self.quota, study_links=self.study_links,
                              reports=report_replies)
        options = ZaloOptions(token=self.emulator.token, api_base_url=self.emulator.base_url, mode=self.mode,
                              webhook_secret=SECRET, public_url=self.public_url,
                              listen=getattr(self, "listen", "127.0.0.1:0"), poll_timeout=1,
                              poll_interval=self.poll_interval, share_link="https://zalo.me/s/hoctap",
                              bot_name=self.bot_name)
        polls = len(self.emulator.calls("getUpdates"))
        self.running = BackgroundZalo(ZaloRuntime(options, service, quota=self.quota, clock=self.clock)).start()
        deadline = time.monotonic() + 5
        while self.mode == "polling" and len(self.emulator.calls("getUpdates")) == polls:
            assert time.monotonic() < deadline, "the poller did not start"
            time.sleep(0.005)  # a poll held for the previous process would take the next update
        return self


@pytest.fixture
def zalo_bot(province, zalo_emulator):
    process = ZaloProcess(province, zalo_emulator).start()
    yield process
    process.stop()


def zalo_link(emulator, zalo_invite, member_code: str, user_id: str):
    user = emulator.user(user_id, "Đảng viên")
    say(user, format_code(zalo_invite(member_code)).lower(), "Liên kết thành công")
    return user


# -- linking -----------------------------------------------------------------------------------
def test_typed_code_links_in_any_case_with_or_without_start(zalo_bot, zalo_emulator, zalo_invite, province):
    code = zalo_invite("DV002")
    assert len(code) == 8 and not set(code) & set("0O1IL")
    user = zalo_emulator.user("zl-1")
    reply = say(user, f"  {code[:4].lower()} {code[4:]}  ")
    assert "Liên kết thành công! Xin chào đồng chí Đinh Văn Sơn" in reply
    other = zalo_emulator.user("zl-2")
    assert "đã được sử dụng" in say(other, f"/start {format_code(code)}")
    with province.session() as s:
        rows = s.execute(select(ChatAccount.channel, ChatAccount.external_id, Member.code).join(Member)).all()
    assert [tuple(r) for r in rows] == [("zalo", "zl-1", "DV002")]


@pytest.mark.parametrize("separator", [
    "\u2013",  # en dash, what a phone keyboard makes of "-"
    "\u2014",  # em dash
    "\u2010",  # hyphen
    "\u2212",  # minus sign
    "\uff0d",  # full-width hyphen-minus
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
    "\u200b",  # zero-width space
    " \u2013 ",
])
def test_typed_code_with_any_unicode_dash_or_space_links(zalo_bot, zalo_emulator, zalo_invite, separator):
    code = zalo_invite("DV004")
    reply = say(zalo_emulator.user("zl-dash"), f"{code[:4]}{separator}{code[4:].lower()}")
    assert "Liên kết thành công! Xin chào đồng chí" in reply, reply


def test_unlinked_user_is_told_to_type_the_code_and_that_this_is_a_bot(zalo_bot, zalo_emulator):
    reply = say(zalo_emulator.user("zl-3"), "xin chào")
    assert "bot tự động" in reply and "gõ mã liên kết gồm 8 chữ và số" in reply
    assert "Chia sẻ số điện thoại" not in reply  # Zalo cannot share contacts


def test_a_deactivated_members_chat_is_told_they_are_off_the_roster_not_asked_for_a_code(zalo_bot, zalo_emulator,
                                                                                          zalo_invite, province):
    user = zalo_link(zalo_emulator, zalo_invite, "DV005", "zl-gone")
    with province.session() as s:
        s.scalar(select(Member).where(Member.code == "DV005")).active = False
    for typed in ("A", "/lambai", "xin chào"):
        reply = say(user, typed)
        assert "không còn trong danh sách sinh hoạt" in reply and "mã liên kết" not in reply, reply
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 0


def test_wrong_codes_pause_the_chat_for_a_while(zalo_bot, zalo_emulator, zalo_invite, province):
    user = zalo_emulator.user("zl-4")
    good = zalo_invite("DV003")
    replies = [say(user, f"ABCD-EFG{n}") for n in range(2, 7)]
    assert "Mã liên kết không đúng" in replies[0] and "còn 4 lần thử" in replies[0]
    assert "còn 1 lần thử" in replies[3]
    assert "nhập sai mã liên kết nhiều lần" in replies[4] and "thử lại sau" in replies[4]
    assert re.search(r"thử lại sau \d\d:\d\d ngày \d\d/\d\d/\d{4}", replies[4])  # a pause may end tomorrow
    assert "thử lại sau" in say(user, good)  # even the right code waits out the pause
    assert count(province, ChatAccount) == 0
    with province.session() as s:
        state = s.get(ChatState, ("zalo", "zl-4"))
        assert state.codes_paused_until > utcnow() + timedelta(minutes=14)
        state.codes_paused_until = utcnow() - timedelta(seconds=1)  # the pause is over
    assert "Liên kết thành công" in say(user, good)


def test_invite_command_writes_short_codes_beside_the_share_link(cli, sample_roster, workdir, db_url):
    import csv
    import re

    result = cli("members", "invite", "--channel", "zalo", "--unit", "DP-TT-01", "--link", "https://zalo.me/s/hoctap",
                 "--out", "zalo.csv")
    assert result.code == 0, result.err
    assert "10 Zalo code(s) written to zalo.csv" in result.out
    assert "members open https://zalo.me/s/hoctap and type their code" in result.out
    rows = list(csv.DictReader((workdir / "zalo.csv").open(encoding="utf-8-sig")))
    assert [r["Mã đảng viên"] for r in rows] == [f"DV{i:03d}" for i in range(1, 11)]
    assert all(re.fullmatch(r"[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}", r["Mã liên kết"]) for r in rows)
    assert rows[1]["Lời nhắn"].endswith(f"gõ mã {rows[1]['Mã liên kết']}")
    from bot.storage.db import Database

    service = ChatService(Database(db_url), TRAITS, TZ)
    welcome = service.on_text("z9", rows[1]["Mã liên kết"].lower(), utcnow()).replies[0].text
    assert "Xin chào đồng chí Đinh Văn Sơn" in welcome


def test_telegram_links_survive_a_zalo_invitation_run(province, invite, zalo_invite):
    from bot.channels.telegram import TRAITS as TELEGRAM

    telegram_code = invite("DV005")
    zalo_invite("DV005")  # retires earlier Zalo codes only
    service = ChatService(province, TELEGRAM, TZ)
    assert "Liên kết thành công" in service.on_text("t1", f"/start {telegram_code}", utcnow()).replies[0].text


# -- de-duplication and webhook ----------------------------------------------------------------
def test_a_replayed_update_is_recorded_once_also_after_a_restart(zalo_bot, zalo_emulator, zalo_invite, province):
    user = zalo_link(zalo_emulator, zalo_invite, "DV006", "zl-6")
    say(user, "lam bai", "Câu 1/10")
    say(user, "A", "Câu 2/10")
    sent = len(user.messages)
    done = zalo_bot.channel.done
    zalo_emulator.replay_last(user)  # Zalo hands the same update out again
    zalo_bot.settle(done + 1)
    assert len(user.messages) == sent and count(province, Answer) == 1
    zalo_bot.stop()
    zalo_bot.start()
    zalo_emulator.replay_last(user)
    zalo_bot.settle(1)
    assert len(user.messages) == sent and count(province, Answer) == 1
    assert "Câu 3/10" in say(user, "b")  # and the conversation goes on


def test_polling_deletes_the_webhook_first_and_paces_its_calls(province, zalo_emulator, zalo_invite):
    process = ZaloProcess(province, zalo_emulator, poll_interval=0.3).start()
    try:
        methods = [m for m, _ in zalo_emulator.requests]
        assert methods[:3] == ["getMe", "deleteWebhook", "getUpdates"]
        user = zalo_emulator.user("zl-7")
        started = time.monotonic()
        for text in ("một", "hai", "ba"):
            user.send_text(text)
        user.wait_for(lambda u: len(u.messages) == 3)
        assert time.monotonic() - started >= 0.55  # three updates, one call per 0.3 s at most
    finally:
        process.stop()


def test_polling_keeps_one_call_per_interval_after_quick_408s_empty_answers_errors_and_updates(
        province, zalo_emulator):
    interval = 0.25
    process = ZaloProcess(province, zalo_emulator, poll_interval=interval).start()
    try:
        first = len(zalo_emulator.call_times("getUpdates")) - 1  # the call held now

        def calls_after(n: int, timeout: float = 15.0) -> None:
            deadline = time.monotonic() + timeout
            while len(zalo_emulator.call_times("getUpdates")) < first + n:
                assert time.monotonic() < deadline, f"{len(zalo_emulator.call_times('getUpdates')) - first} calls"
                time.sleep(0.01)

        zalo_emulator.inject_error("getUpdates", 408, times=8)  # answered at once, as a proxy may
        zalo_emulator.inject_empty("getUpdates", times=4)  # 200 {ok: true} without an update
        calls_after(1 + 8 + 4)
        zalo_emulator.inject_error("getUpdates", 500)
        zalo_emulator.inject_error("getUpdates", 429)
        calls_after(1 + 8 + 4 + 2)
        user = zalo_emulator.user("zl-pace")
        for text in ("một", "hai", "ba", "bốn"):
            user.send_text(text)
        user.wait_for(lambda u: len(u.messages) == 4, timeout=10)
        calls = zalo_emulator.call_times("getUpdates")[first:]
    finally:
        process.stop()
    spans = [b - a for a, b in zip(calls, calls[4:])]  # four intervals; one late arrival cannot break it
    assert len(calls) >= 17 and min(spans) >= 4 * interval * 0.8, [round(b - a, 3) for a, b in zip(calls, calls[1:])]


def test_polled_update_with_ids_too_long_to_store_is_ignored_without_an_error(zalo_bot, zalo_emulator, caplog):
    user = zalo_emulator.user("zl-long")
    user.send_event("message.text.received", text="xin chào", message_id="a" * 65)
    user.send_event("message.text.received", text="xin chào", chat={"id": "b" * 65, "chat_type": "PRIVATE"})
    assert "bot tự động" in say(user, "xin chào")  # the next, well-formed one is answered
    assert len(user.messages) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_wrong_webhook_secret_is_refused_before_anything_happens(province, zalo_emulator):
    process = ZaloProcess(province, zalo_emulator, mode="webhook").start()
    try:
        assert zalo_emulator.webhook["url"] == f"{process.public_url}/zalo/webhook"
        assert zalo_emulator.webhook["secret_token"] == SECRET
        for wrong in ("wrong-secret-123", "", SECRET + "x"):
            assert zalo_emulator.deliver_webhook_with_secret(wrong).status == 403
        assert count(province, ProcessedUpdate) == 0
        probe = zalo_emulator.deliver_webhook({}, bare=True)  # an empty-looking body is fine too
        assert probe.status == 200
    finally:
        process.stop()


def test_webhook_accepts_both_body_shapes_and_a_redelivery_once(province, zalo_emulator, zalo_invite):
    process = ZaloProcess(province, zalo_emulator, mode="webhook").start()
    try:
        user = zalo_emulator.user("zl-8")
        assert "Liên kết thành công" in say(user, zalo_invite("DV007"))
        zalo_emulator.webhook_bare_body = True
        assert "Câu 1/10" in say(user, "làm bài")
        assert [d.status for d in zalo_emulator.deliveries] == [200, 200]
        assert "result" in zalo_emulator.deliveries[0].body and "event_name" in zalo_emulator.deliveries[1].body
        sent = len(user.messages)
        update = zalo_emulator.deliveries[1].body  # the bare update, delivered again, wrapped this time
        assert zalo_emulator.deliver_webhook(update, bare=False).status == 200
        process.settle(3)
        assert len(user.messages) == sent
    finally:
        process.stop()


@pytest.mark.parametrize("mode", ["webhook", "polling"])
def test_a_message_with_a_broken_emoji_lone_surrogate_is_answered_never_a_500(province, zalo_emulator, zalo_invite,
                                                                                mode, caplog):
    """JSON allows "\\ud800", which no database or encoder takes: the webhook and the poller read it as U+FFFD, keep
    the update (a restart would not lose it) and the member gets an answer."""
    import httpx

    process = ZaloProcess(province, zalo_emulator, mode=mode).start()
    try:
        user = zalo_link(zalo_emulator, zalo_invite, "DV008", "zl-sur")
        before = len(user.messages)
        if mode == "webhook":
            update = zalo_emulator.make_text_update(user, "\ud800 hoc")
            raw = json.dumps({"ok": True, "result": update}).encode()  # ASCII: the surrogate as its JSON escape
            assert b"\\ud800 hoc" in raw
            answer = httpx.post(f"{process.public_url}/zalo/webhook", content=raw, timeout=10,
                                headers={"X-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"})
            assert answer.status_code == 200, answer.text
        else:
            user.send_text("\ud800 hoc")
        user.wait_for(lambda u: len(u.messages) > before, timeout=10)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        process.stop()


def test_webhook_answers_400_or_413_to_deep_oversized_and_malformed_bodies_never_a_traceback(
        province, zalo_emulator, zalo_invite, caplog):
    import httpx

    process = ZaloProcess(province, zalo_emulator, mode="webhook").start()
    url, headers = f"{process.public_url}/zalo/webhook", {"X-Bot-Api-Secret-Token": SECRET}

    def update(**message) -> bytes:
        message = {"message_id": "0123456789abcdef0123", "chat": {"id": "u1", "chat_type": "PRIVATE"}, **message}
        return json.dumps({"ok": True, "result": {"event_name": "message.text.received", "message": message}}).encode()

    cases = [
        (b"[" * 30_000 + b"]" * 30_000, 400),  # json.loads would raise RecursionError
        (b'{"ok": true, "result": ' + b'{"a": ' * 6_000 + b"1" + b"}" * 6_000 + b"}", 400),
        (b'{"event_name": "message.text.received", "message": {"x": ' + b"[" * 40 + b"]" * 40 + b"}}", 400),
        (b"[" * (64 * 1024 + 1), 413),
        (b'{"x": "' + b"a" * (64 * 1024) + b'"}', 413),
        (b"not json", 400), (b"\xff\xfe{", 400), (b'"\\' * 20_000, 400),
        (b'{"ok": true, "result": "x"}', 400), (b"[1, 2]", 400), (b'{"ok": true}', 400),
        (b'{"event_name": 5, "message": {}}', 400),
        (update(message_id="a" * 65), 400), (update(message_id=None), 400), (update(chat={"id": ["u1"]}), 400),
        (update(chat="u1"), 400), (update(text=["a"]), 400), (update(**{"from": "u1"}), 400),
    ]
    try:
        for body, status in cases:
            answer = httpx.post(url, content=body, headers=headers, timeout=10)
            assert answer.status_code == status and "Traceback" not in answer.text, (body[:60], answer.text[:200])
        streamed = httpx.post(url, content=iter([b"[" * 1024] * 80), headers=headers, timeout=10)  # no length
        assert streamed.status_code == 413
        user = zalo_emulator.user("zl-hook")
        assert "Liên kết thành công" in say(user, zalo_invite("DV012"))  # real updates still get through
    finally:
        process.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_webhook_verification_probe_gets_200(province):
    from bot.emulators.zalo import ZaloEmulator

    with ZaloEmulator(TOKEN, "HocTap", webhook_verification=True) as emu:
        process = ZaloProcess(province, emu, mode="webhook").start()
        try:
            probe = emu.deliveries[0]
            assert probe.body is None and probe.status == 200
        finally:
            process.stop()


# -- conversation on Zalo ----------------------------------------------------------------------
def test_a_ten_question_quiz_costs_at_most_twelve_messages_within_2000_characters(
        zalo_bot, zalo_emulator, zalo_invite, province):
    user = zalo_link(zalo_emulator, zalo_invite, "DV008", "zl-9")
    zalo_emulator.reset_log()
    text = say(user, "/lambai", "Câu 1/10")
    assert "👉 Trả lời: gõ A, B, C hoặc D." in text
    for position in range(1, 11):
        with province.session() as s:
            from tests.test_telegram_member_flow import quiz_state

            _attempt, _pos, right = quiz_state(province, "DV008")
        wrong = next(letter for letter in "ABCD" if letter != right)
        marker = f"Câu {position + 1}/10" if position < 10 else "còn 2 lượt làm bài"
        reply = say(user, f" {wrong.lower()}. ", marker)  # all wrong: the longest result
        assert reply.startswith(f"✔️ Đã ghi nhận câu {position}: {wrong}.")
    sends = [p for m, p in zalo_emulator.requests if m in ("sendMessage", "sendPhoto")]
    assert len(sends) <= 12
    assert all(len(p["text"]) <= 2000 for p in sends)
    assert "Số câu đúng: 0/10 — 0%" in "\n".join(p["text"] for p in sends)


def test_stickers_images_and_unknown_events_get_a_hint_and_never_stop_the_bot(zalo_bot, zalo_emulator, zalo_invite):
    user = zalo_link(zalo_emulator, zalo_invite, "DV009", "zl-10")
    before = len(user.messages)
    user.send_sticker()
    user.wait_for(lambda u: len(u.messages) > before)
    assert user.last()["text"].startswith("Bot chỉ đọc được tin nhắn chữ.")
    user.send_image(url_key="photo")
    user.send_event("message.reaction.received", reaction="like")  # a kind Zalo may add one day
    user.send_event("user.followed.bot", text=None)
    user.send_unsupported()
    assert "Các lệnh đồng chí dùng được" in say(user, "trợ giúp", "Các lệnh")


def test_a_linked_members_stray_messages_get_the_hint_three_times_a_quarter_hour_not_25_of_the_quota(
        province, zalo_emulator, zalo_invite):
    """25 stickers and "ok"s would cost 25 of the bot's 3,000 monthly messages: 3 hints, then nothing until the next
    quarter hour; commands and answers are answered as ever, and so is text during a quiz ("C ạ": not an answer)."""
    from datetime import datetime, timezone

    from bot.channels.zalo.channel import STRAY_PERIOD

    period = STRAY_PERIOD.total_seconds()
    start = (utcnow().timestamp() // period + 1) * period + 60  # a minute into a quarter hour: the burst fits in it
    shift = [datetime.fromtimestamp(start, timezone.utc) - utcnow()]
    process = ZaloProcess(province, zalo_emulator, clock=lambda: utcnow() + shift[0]).start()
    try:
        user = zalo_link(zalo_emulator, zalo_invite, "DV009", "zl-stray")
        done, before = process.channel.done, len(user.messages)
        for i in range(25):
            user.send_sticker() if i % 2 else user.send_text("ok")
        process.settle(done + 25, timeout=20)
        hints = new_texts(user, before)
        assert len(hints) == 3 and all("/trogiup" in t for t in hints), hints
        assert "Các lệnh đồng chí dùng được" in say(user, "trợ giúp", "Các lệnh")
        assert "Câu 1/10" in say(user, "làm bài", "Câu 1/10")
        assert "Câu 2/10" in say(user, "b", "Câu 2/10")
        for _ in range(2):  # text during the quiz is always told it was not taken as an answer
            assert "hãy chọn một đáp án" in say(user, "C ạ", "hãy chọn một đáp án")
        before = len(user.messages)
        user.send_sticker()
        process.settle(done + 31)
        assert len(user.messages) == before  # a sticker is never an answer: still rationed this quarter hour
        shift[0] += STRAY_PERIOD
        assert "hãy chọn một đáp án" in say(user, "ok")
    finally:
        process.stop()


def test_group_answers_a_mention_or_a_reply_to_the_bot_and_never_with_results(zalo_bot, zalo_emulator, zalo_invite,
                                                                                 province):
    member = zalo_link(zalo_emulator, zalo_invite, "DV010", "zl-11")
    say(member, "lam bai", "Câu 1/10")
    group = zalo_emulator.group("grp-1", "Chi bộ ấp 1")
    assert group.send_text(member, "mọi người làm bài chưa?")["delivered"] is False
    group.mention(member, "ketqua")
    group.wait_for()
    reply = group.last()["text"]
    assert "nhắn riêng cho bot" in reply and "https://zalo.me/s/hoctap" in reply
    assert "Lần 1" not in reply and "Câu" not in reply
    posted = format_code(zalo_invite("DV011"))
    group.mention(member, posted)
    group.wait_for(lambda g: len(g.messages) == 2)
    assert "mã vừa gửi trong nhóm đã bị hủy" in group.last()["text"]
    done = zalo_bot.channel.done
    zalo_emulator.replay_last(member)
    zalo_bot.settle(done + 1)
    assert len(group.messages) == 2  # a redelivered mention is answered once
    reader = zalo_emulator.user("zl-reader", "Người trong nhóm")  # someone who read it there
    assert "Mã liên kết không đúng" in say(reader, posted, "Mã liên kết")
    quoted = format_code(zalo_invite("DV012"))
    group.mention(member, f"mã của tôi là {quoted}")  # quoted in a sentence: cancelled just the same
    group.wait_for(lambda g: len(g.messages) == 3)
    assert "đã bị hủy" in group.last()["text"]
    # a reply to the bot's message reaches it without a mention (all Zalo says of it): answered, its code voided
    replied = format_code(zalo_invite("DV013"))
    assert group.send_text(member, f"mã đây {replied}", reply_to=group.last()["message_id"])["delivered"]
    group.wait_for(lambda g: len(g.messages) == 4)
    assert "đã bị hủy" in group.last()["text"] and "Lần 1" not in group.last()["text"]
    assert "Mã liên kết không đúng" in say(reader, replied, "Mã liên kết")
    # a plain reply gets the pointer once an hour in the group (each answer costs a message of the quota);
    # a mention is always answered
    done = zalo_bot.channel.done
    for text in ("cảm ơn bot", "ok"):
        assert group.send_text(member, text, reply_to=group.last()["message_id"])["delivered"]
    zalo_bot.settle(done + 2)
    assert len(group.messages) == 5 and "nhắn riêng cho bot" in group.last()["text"]
    group.mention(member, "cho hỏi")
    group.wait_for(lambda g: len(g.messages) == 6)


def test_group_mention_by_the_name_the_app_shows_is_answered_in_any_case_and_without_diacritics(
        province, zalo_invite):
    from bot.emulators.zalo import ZaloEmulator

    with ZaloEmulator(TOKEN, "hoctap_bot", display_name="Bot Học Tập") as emu:  # getMe says only hoctap_bot
        process = ZaloProcess(province, emu, bot_name="bot hoc tap").start()  # as an operator may type it
        try:
            member = emu.user("zl-g1", "Đảng viên")
            group = emu.group("grp-2", "Chi bộ ấp 2")
            for text in ("@Bot Học Tập ketqua", "@BOT HỌC TẬP cho hỏi", "@hoctap_bot cho hỏi"):
                before = len(group.messages)
                assert group.send_text(member, text)["delivered"]
                group.wait_for(lambda g: len(g.messages) > before)
                assert "nhắn riêng cho bot" in group.last()["text"], text
            group.mention(member, format_code(zalo_invite("DV011")).replace("-", "–"))
            group.wait_for(lambda g: len(g.messages) == 4)
            assert "đã bị hủy" in group.last()["text"]  # the mention is not taken for part of it
        finally:
            process.stop()


def test_mentions_are_recognised_in_any_case_with_or_without_diacritics():
    from bot.channels.zalo import bot_names, strip_mention

    names = bot_names("Bot Học Tập", None, "hoctap_bot", "@bot hoc tap")
    assert sorted(names) == ["Bot Học Tập", "hoctap_bot"]
    for text, said in [("@Bot Học Tập ketqua", "ketqua"), ("@bot hoc tap  ketqua", "ketqua"),
                       ("hỏi @BOT HỌC TẬP gì?", "hỏi gì?"), ("@HocTap_Bot K7PM–X3QD", "K7PM–X3QD"),
                       ("@Bot Ho\u0323c Tâ\u0323p ơi", "ơi")]:  # decomposed diacritics, as some keyboards send
        assert strip_mention(text, names) == said, text
    for text in ("@Bot Học ketqua", "Bot Học Tập ơi", "@bot"):
        assert strip_mention(text, names) == text, text


def test_typed_numbers_beyond_the_offer_or_in_other_scripts_are_text_not_ids(zalo_bot, zalo_emulator, zalo_invite,
                                                                            caplog, province):
    cadre = zalo_link(zalo_emulator, zalo_invite, "CB002", "zl-num")
    for typed in ("99999999999999999999", "2147483648", "٣", "s:1:9999999999999999999", "1 "):
        with province.session() as s:  # a new quarter hour: the stray-message hint is answered again
            s.execute(ProcessedUpdate.__table__.delete().where(ProcessedUpdate.update_key.like("stray:%")))
        assert "👉 Gõ 1: Đảng bộ bộ phận Tân Tiến" in say(cadre, "thống kê", "📊")
        reply = say(cadre, typed)
        assert ("Đảng bộ bộ phận Tân Tiến\n" in reply) is (typed == "1 "), (typed, reply)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_cadre_report_on_zalo_is_text_and_a_chart_fetched_from_our_server(province, zalo_emulator, zalo_invite):
    process = ZaloProcess(province, zalo_emulator, public=True).start()
    try:
        cadre = zalo_link(zalo_emulator, zalo_invite, "CB002", "zl-12")
        before = len(cadre.messages)
        cadre.send_text("bao cao")
        cadre.wait_for(lambda u: any("photo" in m for m in u.messages[before:]), timeout=10)
        text = "\n".join(new_texts(cadre, before))
        assert "Báo cáo 64-KH/TU" in text and "tệp Excel" in text
        photo = next(m for m in cadre.messages[before:] if "photo" in m)
        assert photo["photo"].startswith(process.public_url + "/files/")
        assert photo["fetched"].status == 200 and photo["fetched"].data.startswith(b"\x89PNG")
        assert photo["fetched"].content_type == "image/png"
        thongke = say(cadre, "thống kê", "📊")
        assert "👉 Gõ" in thongke  # drill down by typing the unit's number
    finally:
        process.stop()


def test_report_without_a_public_address_says_where_to_get_the_files(zalo_bot, zalo_emulator, zalo_invite):
    cadre = zalo_link(zalo_emulator, zalo_invite, "CB002", "zl-13")
    text = say(cadre, "/baocao", "Báo cáo")
    assert "Zalo không gửi được" in text and "biểu đồ" in text and "tệp Excel" in text and "hoctap report" in text
    assert not any("photo" in m for m in cadre.messages)


def test_429_without_retry_after_is_retried_with_backoff(zalo_bot, zalo_emulator, zalo_invite):
    user = zalo_link(zalo_emulator, zalo_invite, "DV012", "zl-14")
    zalo_emulator.inject_error("sendMessage", 429, times=1)
    assert "Các lệnh đồng chí dùng được" in say(user, "trogiup", "Các lệnh", timeout=8)


def test_the_token_never_reaches_the_logs(zalo_emulator, province, caplog):
    caplog.set_level(logging.DEBUG)
    process = ZaloProcess(province, zalo_emulator).start()
    try:
        zalo_emulator.inject_error("sendMessage", 400, times=1)
        user = zalo_emulator.user("zl-15")
        user.send_text("xin chào")
        process.settle(1, timeout=10)
    finally:
        process.stop()
    # every logger at DEBUG (aiohttp's included) was captured, and none quoted the token
    assert "sendMessage" in caplog.text
    assert "ZALO-SECRET-PART" not in caplog.text


def test_rendering_lists_choices_in_text_and_splits_at_2000():
    from bot.domain.replies import Choice

    long = "\n\n".join("Đoạn văn 🇻🇳 " * 60 for _ in range(6))
    outcome = Outcome([Reply(long, [[Choice("Tiếp ›", "r:1:2", typed="tiếp")]])], notice="Câu hỏi hiện tại là câu 2.")
    parts = [o.text for o in render(outcome)]
    assert len(parts) >= 3 and all(len(p.encode("utf-16-le")) // 2 <= 2000 for p in parts)
    assert parts[0].startswith("Câu hỏi hiện tại là câu 2.") and parts[-1].endswith("👉 Gõ TIẾP để xem tiếp.")
    receipt = Outcome([Reply("✔️ Đã ghi nhận câu 1: A.\n\n📝 Câu 2/10", edit=True)], notice="Đã ghi nhận.")
    assert [o.text for o in render(receipt)] == ["✔️ Đã ghi nhận câu 1: A.\n\n📝 Câu 2/10"]
    assert [o.text for o in render(Outcome(notice="Bài làm không còn tồn tại."))] == ["Bài làm không còn tồn tại."]


# -- the monthly quota -------------------------------------------------------------------------
@pytest.fixture
def zalo_branch(province):
    """Round 2 for branch DP-TT-01 (10 members); DV001-DV005 linked on Zalo only."""
    from bot.services.rounds import open_round
    from bot.storage.models import Round

    now = utcnow()
    with province.session() as s:
        s.delete(s.get(Round, 1))
        s.flush()
        rnd = open_round(s, "kh-83-hu-tuy-phuoc", ["DP-TT-01"], now - timedelta(minutes=5), now + timedelta(days=10),
                         98, now)
        for m in s.scalars(select(Member).where(Member.code.between("DV001", "DV005"))):
            s.add(ChatAccount(channel="zalo", external_id=f"q{m.id}", member_id=m.id, linked_at=now, last_seen_at=now))
        return rnd.id


def test_a_broadcast_that_does_not_fit_the_monthly_quota_is_refused_whole(province, zalo_branch, caplog):
    from bot.scheduling.due import Schedule, run_due

    with province.session() as s:  # the district's cadre, on Telegram, is told why (once a day)
        cadre = s.scalar(select(Member).where(Member.code == "CB002"))
        s.add(ChatAccount(channel="telegram", external_id="8802", member_id=cadre.id, linked_at=utcnow()))
    quota = ZaloQuota(province, 10, TZ, channels=("zalo",))
    quota.add(7)
    report = run_due(province, utcnow(), Schedule(budget=quota))
    refused = [d for d in report.dropped if d.startswith(f"announce:{zalo_branch}:")]
    assert refused and "needs 5 message(s) but only 3 of 10 are left" in refused[0]
    with province.session() as s:
        rows = s.scalars(select(OutboxMessage)).all()
        assert [(r.purpose, r.member_id) for r in rows] == [("notice", cadre.id)]  # no announcement half-queued
        told = queue.payloads(s, [rows[0].id])[rows[0].id]["text"]
    assert "Thông báo đợt học tập 83-KH/HU" in told and "chưa gửi: cần 5 tin nhắn Zalo" in told
    run_due(province, utcnow(), Schedule(budget=quota))  # tried again at the next tick: not told twice
    assert count(province, OutboxMessage) == 1
    assert "needs 5 message(s)" in caplog.text
    bigger = ZaloQuota(province, 100, TZ, channels=("zalo",))  # the plan was raised
    again = run_due(province, utcnow(), Schedule(budget=bigger))
    assert f"announce:{zalo_branch}: 5 message(s)" in again.jobs
    assert count(province, OutboxMessage) == 6


def test_secretary_is_told_how_many_messages_a_reminder_needs_and_how_many_are_left(province, zalo_branch):
    quota = ZaloQuota(province, 10, TZ, channels=("zalo",))
    quota.add(8)
    service = ChatService(province, TRAITS, TZ, budget=quota)
    with province.session() as s:
        secretary = s.scalar(select(Member.id).where(Member.code == "DV001"))  # DP-TT-01's secretary
    reply = service.on_text(f"q{secretary}", "nhắc nhở", utcnow()).replies
    text = "\n".join(r.text for r in reply)
    assert "chưa gửi: cần 5 tin nhắn Zalo" in text and "chỉ còn 2 tin" in text
    assert count(province, OutboxMessage) == 0


def test_quota_counts_every_message_and_warns_at_80_percent(zalo_emulator, province, zalo_invite, caplog):
    quota = ZaloQuota(province, 10, TZ)
    process = ZaloProcess(province, zalo_emulator, quota=quota).start()
    try:
        user = zalo_link(zalo_emulator, zalo_invite, "DV013", "zl-16")
        say(user, "lam bai", "Câu 1/10")
        for _ in range(6):
            say(user, "a", "Đã ghi nhận")
    finally:
        process.stop()
    assert quota.used() == zalo_emulator.sent_count() == 8
    assert "8 of 10 messages of the monthly quota used" in caplog.text
    with province.session() as s:
        assert s.scalar(select(ChannelUsage.sent)) == 8


def test_a_bot_near_its_monthly_limit_sees_what_other_processes_sent_at_once(province):
    """Far from the limit a count this process read a moment ago answers without the database (a fleet-wide
    broadcast would otherwise read once per message); within the last hundred messages every check reads the
    database, so another process's sends stop this one at the limit."""
    now = utcnow()
    month = now.astimezone(TZ).strftime("%Y-%m")
    here, elsewhere = ZaloQuota(province, 3000, TZ), ZaloQuota(province, 3000, TZ)
    here.add(2000, now)
    statements = []
    record = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(province.engine, "before_cursor_execute", record)
    try:
        assert not here.used_up(now)
    finally:
        event.remove(province.engine, "before_cursor_execute", record)
    assert statements == []  # answered from the count the add returned
    elsewhere.add(950, now)
    assert here.add(1, now) == 2951  # within a hundred of the limit: from now on every check reads
    assert not here.used_up(now)
    elsewhere.add(49, now)
    assert here.used_up(now)  # the other process used the last 49
    with province.session() as s:
        assert s.get(ChannelUsage, ("zalo", month)).sent == 3000


def test_outbox_goes_to_zalo_when_used_last_and_falls_back_to_telegram_when_zalo_keeps_refusing(
        province, zalo_emulator, emulator):
    import asyncio

    from telegram import Bot

    from bot.channels.telegram import TelegramTransport
    from bot.channels.zalo import ZaloClient, ZaloTransport
    from bot.outbox import queue
    from bot.outbox.sender import OutboxSender

    now = utcnow()
    users = {}
    with province.session() as s:
        for code, zalo_blocked in (("DV014", False), ("DV015", True)):
            m = s.scalar(select(Member).where(Member.code == code))
            s.add(ChatAccount(channel="telegram", external_id=str(80_000 + m.id), member_id=m.id, linked_at=now,
                              last_seen_at=now - timedelta(hours=1)))
            s.add(ChatAccount(channel="zalo", external_id=f"zq{m.id}", member_id=m.id, linked_at=now, last_seen_at=now))
            queue.enqueue(s, dedupe_key=f"t:{m.id}", purpose="announce", member_id=m.id,
                          reply=Reply("📢 Thông báo thử"), now=now)
            users[code] = (emulator.user(80_000 + m.id), zalo_emulator.user(f"zq{m.id}"))
            users[code][0].send_text("/start")
            users[code][1].send_text("chào")
            if zalo_blocked:
                zalo_emulator.block(f"zq{m.id}")

    async def go():
        client = ZaloClient(zalo_emulator.token, zalo_emulator.base_url)
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, TelegramTransport(bot) as transport:
            sender = OutboxSender(province, {"telegram": transport,
                                             "zalo": ZaloTransport(client, rate=50)}, per_chat_interval=0)
            stats = await sender.run(until_idle=True)
        await client.aclose()
        return stats

    sent = asyncio.run(go()).sent
    for _ in range(2):  # Zalo's 403 ("internal error", or a block) is tried three times before the fallback
        time.sleep(3.1)
        sent += asyncio.run(go()).sent
    assert sent == 2
    tg, zl = users["DV014"]
    assert [m["text"] for m in zl.messages] == ["📢 Thông báo thử"] and not tg.messages
    tg, zl = users["DV015"]
    assert [m["text"] for m in tg.messages] == ["📢 Thông báo thử"] and not zl.messages
    with province.session() as s:
        assert sorted(s.scalars(select(OutboxMessage.channel))) == ["telegram", "zalo"]


# -- operating it ------------------------------------------------------------------------------
def test_zalo_settings_come_from_the_file_and_the_environment(workdir):
    from bot.config import ConfigError, load_settings

    assert load_settings(None, {}).zalo.monthly_quota == 3000  # the free plan
    path = workdir / "zalo.yaml"
    path.write_text("zalo:\n  token: ${ZALO_BOT_TOKEN}\n  mode: webhook\n  public_url: https://bot.example.vn\n"
                    "  webhook_secret: ${ZALO_WEBHOOK_SECRET}\n  monthly_quota: 0\n", encoding="utf-8")
    s = load_settings(path, {"ZALO_BOT_TOKEN": "1:abc", "ZALO_WEBHOOK_SECRET": "s3cret-s3cret"})
    assert (s.zalo.token, s.zalo.mode, s.zalo.webhook_secret, s.zalo.monthly_quota) == (
        "1:abc", "webhook", "s3cret-s3cret", 0)
    assert "1:abc" not in repr(s) and "s3cret" not in repr(s)
    for text, message in [
        ("zalo:\n  token: 123:LITERAL\n", "zalo.token: secrets are read from the environment"),
        ("zalo:\n  mode: push\n", "zalo.mode: expected polling or webhook, got 'push'"),
        ("zalo:\n  mode: webhook\n", "web.public_url: zalo.mode webhook needs the server's public https URL"),
        ("zalo:\n  rate: 0\n", "zalo.rate: expected messages per second"),
        ("zalo:\n  tokn: x\n", "zalo.tokn: unknown setting"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_settings(path, {})
        assert message in str(info.value) and "LITERAL" not in str(info.value)


def test_scripted_zalo_playground_plays_a_round(workdir, capsys, monkeypatch):
    from bot.cli import main
    from tests.conftest import QUIZZES

    monkeypatch.setenv("HOCTAP_CONTENT_DIR", str(QUIZZES))
    script = workdir / "play.txt"
    script.write_text("hoc\n1\ntiếp\nlàm bài\nB\n2\n/ketqua\n/as DV011\nlam bai\nc\n/quit\n", encoding="utf-8")
    assert main(["playground", "--channel", "zalo", "--script", str(script)]) == 0
    out = capsys.readouterr().out
    assert "(typing the invitation code" in out and "Liên kết thành công" in out
    assert "👉 Gõ 1: Đọc 64-KH/TU" in out and "📖 64-KH/TU" in out
    assert "👉 Trả lời: gõ A, B, C hoặc D." in out
    assert "✔️ Đã ghi nhận câu 1: B." in out and "✔️ Đã ghi nhận câu 2: B." in out
    assert "Lần 1: đang làm dở" in out
    assert "--- you are" in out.split("> /as DV011")[1]


def test_a_long_review_is_compacted_to_two_messages_keeping_every_right_answer(province):
    from bot.storage.models import Question
    from tests.test_telegram_member_flow import quiz_state

    with province.session() as s:
        for q in s.scalars(select(Question)):
            q.explanation = "Giải thích rất dài về văn bản. " * 12
            q.text = q.text + " " + "(câu hỏi dài) " * 8
    service = ChatService(province, TRAITS, TZ)
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV003"))
        code = create_invites(s, [member], utcnow(), channel="zalo")[member.id]
    service.on_text("z3", code, utcnow())
    service.on_text("z3", "lam bai", utcnow())
    for _ in range(10):
        right = quiz_state(province, "DV003")[2]
        outcome = service.on_text("z3", next(x for x in "ABCD" if x != right), utcnow())
    parts = [m.text for m in render(outcome)]
    assert len(parts) <= 2 and all(len(p) <= 2000 for p in parts)
    assert parts[0].startswith("✔️ Đã ghi nhận câu 10:")
    assert "\n".join(parts).count("Đáp án đúng:") == 10


# -- typed answers count only for the question on the member's screen ------------------------------
def test_an_answer_typed_twice_quickly_counts_once_and_says_which_question_is_current(
        zalo_bot, zalo_emulator, zalo_invite, province):
    user = zalo_link(zalo_emulator, zalo_invite, "DV012", "zl-12")
    say(user, "làm bài", "Câu 1/10")
    before = len(user.messages)
    user.send_text("A")
    user.send_text("A")  # the second one leaves before question 2 has arrived
    user.wait_for(lambda u: any("chưa được tính" in t for t in new_texts(u, before)))
    texts = new_texts(user, before)
    assert count(province, Answer) == 1
    assert texts[0].startswith("✔️ Đã ghi nhận câu 1: A.") and "📝 Câu 2/10" in texts[0]
    assert texts[1] == ("Đáp án «A» chưa được tính vì gửi trước khi đồng chí nhận được câu 2. "
                        "Câu hỏi hiện tại là câu 2.")
    assert len(texts) == 2  # a short note, not question 2 again
    assert say(user, "b", "Câu 3/10").startswith("✔️ Đã ghi nhận câu 2: B.")
    with province.session() as s:
        assert sorted(s.scalars(select(Answer.position))) == [1, 2]


def test_after_a_reply_that_never_arrived_a_typed_answer_brings_the_question_instead(
        zalo_bot, zalo_emulator, zalo_invite, province):
    """Question 2 was never delivered (the send failed, or the bot died before it); another process
    serves the chat next: the answer the member types for question 1 again is not taken for question 2."""
    user = zalo_link(zalo_emulator, zalo_invite, "DV013", "zl-13")
    say(user, "làm bài", "Câu 1/10")
    zalo_emulator.inject_error("sendMessage", 400, chat_id="zl-13")
    taken = zalo_bot.channel.handled  # the update that showed question 1 may still be finishing
    user.send_text("C")
    zalo_bot.settle(taken + 1)
    assert count(province, Answer) == 1 and "Câu 1/10" in user.last()["text"]
    zalo_bot.stop()
    zalo_bot.start()
    with province.session() as s:  # however long the member waits: its loss was recorded
        s.execute(ChatState.__table__.update().where(ChatState.external_id == "zl-13")
                  .values(updated_at=utcnow() - timedelta(minutes=5)))
    reply = say(user, "C", "Câu 2/10")
    assert reply.startswith("Đáp án «C» chưa được tính vì gửi trước khi đồng chí nhận được câu 2. "
                            "Câu hỏi hiện tại là câu 2.")
    assert "📝 Câu 2/10" in reply and count(province, Answer) == 1
    assert say(user, "d", "Câu 3/10").startswith("✔️ Đã ghi nhận câu 2: D.")


def test_after_a_process_died_sending_question_2_an_answer_typed_later_counts_for_it(
        zalo_bot, zalo_emulator, zalo_invite, province):
    """kill -9 while question 2 was on its way (the outside probe: the member saw it): neither its delivery
    nor its loss was recorded. An answer typed well after it was sent (longer than any live process takes to
    settle a send) counts for it; it is not refused as if typed before question 2 arrived (which cost the
    member a second answer and a message)."""
    from sqlalchemy import update

    user = zalo_link(zalo_emulator, zalo_invite, "DV014", "zl-14")
    say(user, "làm bài", "Câu 1/10")
    zalo_bot.stop()
    service = ChatService(province, TRAITS, TZ)  # the process that died as question 2 went out
    assert "Câu 2/10" in service.on_text("zl-14", "a", utcnow()).replies[-1].text
    with province.session() as s:  # the restart took a while, and the member answered after reading it
        s.execute(update(ChatState).where(ChatState.external_id == "zl-14")
                  .values(updated_at=utcnow() - timedelta(minutes=4)))
    zalo_bot.start()
    reply = say(user, "b", "Câu 3/10")
    assert reply.startswith("✔️ Đã ghi nhận câu 2: B.") and "chưa được tính" not in reply
    assert count(province, Answer) == 2


def test_a_secretarys_figures_for_two_open_rounds_come_in_one_message_where_they_fit(
        zalo_bot, zalo_emulator, zalo_invite, province):
    """Every Zalo message counts against the bot's 3,000 a month: short replies of one command share a
    message (blank line between); what has choices to type, or does not fit, stays a message of its own."""
    from bot.services.rounds import open_round

    now = utcnow()
    with province.session() as s:
        open_round(s, "kh-83-hu-tuy-phuoc", ["DP-TT-01"], now - timedelta(hours=1), now + timedelta(days=5), 98, now)
    user = zalo_link(zalo_emulator, zalo_invite, "DV001", "zl-sec")
    for command in ("chua lam", "thong ke", "nhac nho"):
        before = len(user.messages)
        user.send_text(command)
        user.wait_for(lambda u: len(u.messages) > before)
        time.sleep(0.5)  # a second message would have come by now
        texts = new_texts(user, before)
        assert len(texts) == 1 and len(texts[0]) <= 2000, texts
        assert "64-KH/TU" in texts[0] and "83-KH/HU" in texts[0], texts[0]


def test_a_message_a_killed_poller_took_from_zalo_is_answered_after_the_restart(
        zalo_bot, zalo_emulator, zalo_invite, province):
    """Zalo forgets an update once getUpdates returned it (and a webhook delivery once answered): a process
    killed while handling it would lose the member's message. It was kept first, and the next process answers
    it, once."""
    user = zalo_link(zalo_emulator, zalo_invite, "DV015", "zl-15")
    zalo_bot.stop()
    update = kept_by_a_killed_poller(province, zalo_emulator, user, "làm bài")
    before = len(user.messages)
    zalo_bot.start()
    user.wait_for(lambda u: any("Câu 1/10" in t for t in new_texts(u, before)), timeout=10)
    time.sleep(0.5)
    assert len([t for t in new_texts(user, before) if "Câu 1/10" in t]) == 1
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(ProcessedUpdate)
                        .where(ProcessedUpdate.update_key == update["message"]["message_id"])) == 1


def kept_by_a_killed_poller(province, zalo_emulator, user, text: str) -> dict:
    """The Zalo bot is stopped; ``text`` from ``user`` is fetched and kept by a process that then died."""
    import httpx

    from bot.services.inbox import Inbox

    time.sleep(1.5)  # the stopped poller's last getUpdates (held 1 s) has ended
    user.send_text(text)
    api = f"{zalo_emulator.base_url}/bot{zalo_emulator.token}/getUpdates"
    update = httpx.post(api, json={"timeout": 0}, timeout=10).json()["result"]  # the killed process's poll
    Inbox(province, "zalo", "zalo").keep([(update["message"]["message_id"], update)], utcnow())
    return update


def test_a_typed_answer_a_killed_poller_recorded_but_never_answered_brings_the_next_question_after_the_restart(
        zalo_bot, zalo_emulator, zalo_invite, province):
    """Zalo never hands an update out twice: the answer was kept and recorded, and the process killed before its
    reply. A moment after the restart the member gets question 2 (nothing recorded twice), and their next
    letter counts for it; without it they would type the letter again, for a question they never saw."""
    user = zalo_link(zalo_emulator, zalo_invite, "DV016", "zl-16")
    say(user, "làm bài", "Câu 1/10")
    zalo_bot.stop()
    update = kept_by_a_killed_poller(province, zalo_emulator, user, "a")
    service = ChatService(province, TRAITS, TZ)  # the process that died: it recorded the answer
    assert "Câu 2/10" in service.on_text(user.id, "a", utcnow(), update["message"]["message_id"]).replies[-1].text
    before = len(user.messages)
    zalo_bot.start()
    user.wait_for(lambda u: any("Câu 2/10" in t for t in new_texts(u, before)), timeout=15)
    assert count(province, Answer) == 1
    reply = say(user, "b", "Câu 3/10")
    assert reply.startswith("✔️ Đã ghi nhận câu 2: B.")
    assert len([t for t in new_texts(user, before) if "Câu 2/10" in t]) == 1
    assert count(province, Answer) == 2


def test_what_the_zalo_bot_answered_before_a_stop_is_not_answered_again_after_the_restart(
        zalo_bot, zalo_emulator, zalo_invite, province):
    from bot.services.inbox import SETTLE

    user = zalo_link(zalo_emulator, zalo_invite, "DV017", "zl-17")
    say(user, "làm bài", "Câu 1/10")
    zalo_bot.stop()
    zalo_bot.start()
    time.sleep(SETTLE + 1.5)
    assert len([m for m in user.messages if "Câu 1/10" in m.get("text", "")]) == 1


def test_the_webhook_keeps_each_update_before_answering_zalo(zalo_emulator, province):
    """Answered 200, an update is Zalo's no more: it is in the database by then (and a database that cannot
    keep it gets a 500, for Zalo to deliver it again)."""
    import httpx

    from bot.storage.models import InboxUpdate

    process = ZaloProcess(province, zalo_emulator, mode="webhook").start()
    zalo_emulator.inject_error("sendMessage", 500, times=5)  # the reply takes seconds of tries: still unanswered
    try:
        body = {"ok": True, "result": {"event_name": "message.text.received", "message": {
            "message_id": "a" * 20, "date": 1764547200000, "chat": {"id": "zl-wh", "chat_type": "PRIVATE"},
            "from": {"id": "zl-wh", "display_name": "Khách"}, "text": "xin chào"}}}
        answer = httpx.post(f"{process.public_url}/zalo/webhook", json=body, timeout=10,
                            headers={"X-Bot-Api-Secret-Token": SECRET})
        assert answer.status_code == 200
        with province.session() as s:
            assert s.scalar(select(InboxUpdate.update_key).where(InboxUpdate.source == "zalo")) == "a" * 20
    finally:
        process.stop()


def test_a_group_message_without_its_chat_type_is_still_a_groups_and_gets_no_ones_results(
        zalo_emulator, zalo_invite, province):
    """A chat that is not the sender's own is a group even where ``chat_type`` is missing: a member's "kết quả"
    there is not answered with their results for everyone to read."""
    import httpx

    process = ZaloProcess(province, zalo_emulator, mode="webhook").start()
    try:
        zalo_link(zalo_emulator, zalo_invite, "DV013", "zl-g1")
        linked = len(zalo_emulator.calls("sendMessage"))
        zalo_emulator.group("grp-x", "Chi bộ ấp 3")
        body = {"ok": True, "result": {"event_name": "message.text.received", "message": {
            "message_id": "g" * 20, "date": 1764547200000, "chat": {"id": "grp-x"},
            "from": {"id": "zl-g1", "display_name": "Đảng viên"}, "text": "kết quả"}}}
        answer = httpx.post(f"{process.public_url}/zalo/webhook", json=body, timeout=10,
                            headers={"X-Bot-Api-Secret-Token": SECRET})
        assert answer.status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(zalo_emulator.calls("sendMessage")) == linked:
            time.sleep(0.05)
        time.sleep(0.3)  # a second message would be there by now
        since = zalo_emulator.calls("sendMessage")[linked:]
        assert [c["chat_id"] for c in since] == ["grp-x"]  # nothing to the member's own chat either
        assert "không hiển thị kết quả học tập ở đây" in since[0]["text"]
    finally:
        process.stop()


def queued_for_zalo(province, zalo_emulator, member_code: str, chat_id: str, key: str, text: str):
    """One outbox message to a member who wrote to the Zalo bot (``chat_id``); returns the chat's user."""
    from bot.outbox import queue

    now = utcnow()
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == member_code))
        s.add(ChatAccount(channel="zalo", external_id=chat_id, member_id=member.id, linked_at=now, last_seen_at=now))
        queue.enqueue(s, dedupe_key=key, purpose="announce", member_id=member.id, reply=Reply(text), now=now)
    user = zalo_emulator.user(chat_id)
    user.send_text("chào")
    return user


def send_outbox_by_zalo(province, zalo_emulator):
    """One outbox sender over the Zalo bot until nothing is due; its stats."""
    import asyncio

    from bot.channels.zalo import ZaloClient, ZaloTransport
    from bot.outbox.sender import OutboxSender

    async def send():
        client = ZaloClient(zalo_emulator.token, zalo_emulator.base_url)
        try:
            return await OutboxSender(province, {"zalo": ZaloTransport(client, rate=50)},
                                      per_chat_interval=0).run(until_idle=True)
        finally:
            await client.aclose()

    return asyncio.run(send())


def test_a_long_message_whose_second_part_failed_is_finished_without_sending_the_first_again(
        province, zalo_emulator):
    lines = [f"{i}. Đồng chí Nguyễn Văn {i} — chi bộ ấp {i % 7}: chưa làm bài kiểm tra." for i in range(60)]
    user = queued_for_zalo(province, zalo_emulator, "DV014", "zp1", "long:1", "\n".join(lines))
    zalo_emulator.inject_error("sendMessage", 502, after=1)  # the first part goes through, the second fails
    assert send_outbox_by_zalo(province, zalo_emulator).retried == 1
    time.sleep(1.6)  # the retry's back-off
    assert send_outbox_by_zalo(province, zalo_emulator).sent == 1
    received = [m["text"] for m in user.messages]
    assert len(received) == 2 and "\n".join(received).split("\n") == lines  # each part once, in order
    with province.session() as s:
        row = s.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == "long:1"))
        assert row.status == "sent"


def test_a_stranger_typing_on_is_answered_a_few_times_then_paused_longer_each_time(zalo_bot, zalo_emulator,
                                                                                   zalo_invite, province):
    """Every reply costs one of the bot's 3,000 monthly messages: an unlinked chat cannot spend them."""
    stranger = zalo_emulator.user("zl-stranger")
    for i in range(40):
        stranger.send_text(f"xin chào {i}")
    zalo_bot.settle(40, timeout=20)
    texts = [m["text"] for m in stranger.messages]
    assert len(texts) == 6  # four "type your code", the pause, and once more when it is still paused
    assert all("gõ mã liên kết" in t for t in texts[:4])
    assert all("thử lại sau" in t for t in texts[4:])
    with province.session() as s:
        state = s.get(ChatState, ("zalo", "zl-stranger"))
        first_pause = state.codes_paused_until - utcnow()
        assert timedelta(minutes=14) < first_pause <= timedelta(minutes=15)
        state.codes_paused_until = utcnow() - timedelta(seconds=1)  # the pause is over
    for i in range(5):
        stranger.send_text(f"lại là tôi {i}")
    zalo_bot.settle(45, timeout=20)
    with province.session() as s:
        assert s.get(ChatState, ("zalo", "zl-stranger")).codes_paused_until - utcnow() > timedelta(minutes=29)
        s.get(ChatState, ("zalo", "zl-stranger")).codes_paused_until = utcnow() - timedelta(seconds=1)
    assert "Liên kết thành công" in say(stranger, zalo_invite("DV003"))  # a member after all: the code works
    with province.session() as s:
        state = s.get(ChatState, ("zalo", "zl-stranger"))
        assert state.pauses is None and state.codes_paused_until is None


def test_a_single_403_documented_as_internal_error_is_tried_again_not_taken_as_a_refusal(province, zalo_emulator):
    user = queued_for_zalo(province, zalo_emulator, "DV016", "z403", "z403:1", "📢 Thông báo")
    zalo_emulator.inject_error("sendMessage", 403)  # the spec: "403 (documented as internal error)"
    assert send_outbox_by_zalo(province, zalo_emulator).retried == 1
    time.sleep(1.6)
    assert send_outbox_by_zalo(province, zalo_emulator).sent == 1
    assert [m["text"] for m in user.messages] == ["📢 Thông báo"]
    with province.session() as s:
        assert s.scalar(select(OutboxMessage.status).where(OutboxMessage.dedupe_key == "z403:1")) == "sent"


def test_a_reply_meeting_one_403_is_sent_again_and_arrives(zalo_bot, zalo_emulator, zalo_invite):
    user = zalo_link(zalo_emulator, zalo_invite, "DV017", "zl-403")
    zalo_emulator.inject_error("sendMessage", 403)
    assert "64-KH/TU" in say(user, "học", "64-KH/TU", timeout=10)
