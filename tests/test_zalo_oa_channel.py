"""The Zalo OA channel end to end: the real httpx client, token store, webhook on the product's web server,
ChatService and outbox against the OA emulator over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from sqlalchemy import func, select

from bot.channels.zalo_oa import TRAITS, BackgroundOA, OABudget, OARuntime, prices_from, token_store
from bot.config import ZaloOASettings
from bot.services.chat import ChatService
from bot.services.linking import format_code
from bot.storage.models import ChatAccount, InboxUpdate, Member, ProcessedUpdate, ZaloOaContact
from bot.timeutil import utcnow
from tests.messengers import TZ, ChannelProcess, count, free_port, say  # noqa: F401 - also for others

def oa_settings(emulator, port: int, **overrides) -> ZaloOASettings:
    values = dict(app_id=emulator.app_id, app_secret=emulator.app_secret, oa_secret_key=emulator.oa_secret,
                  api_base_url=emulator.base_url, business_api_url=emulator.base_url, oauth_url=emulator.base_url,
                  public_url=f"http://127.0.0.1:{port}", listen=f"127.0.0.1:{port}", rate=100.0)
    values.update(overrides)
    return ZaloOASettings(**values)


def authorize(db, emulator, settings) -> None:
    """What an admin does once: open the permission URL, allow, paste the address back."""
    store = token_store(settings, db)
    callback = emulator.approve(store.permission_url(f"{settings.public_url}/zalo-oa/callback"))
    store.complete(callback)


class OAProcess(ChannelProcess):
    """The OA side of the bot as one process runs it; authorised once, restartable."""

    def __init__(self, db, emulator, *, clock=utcnow, study_links=None, **overrides):
        self.db, self.emulator, self.clock, self.study_links = db, emulator, clock, study_links
        self.port = free_port()
        self.settings = oa_settings(emulator, self.port, **overrides)
        self.running: BackgroundOA | None = None
        authorize(db, emulator, self.settings)
        emulator.set_webhook(f"http://127.0.0.1:{self.port}/zalo-oa/webhook")

    def budget(self) -> OABudget:
        return OABudget(self.db, self.settings.monthly_budget, TZ, prices_from(self.settings))

    def start(self) -> "OAProcess":
        budget = self.budget()
        service = ChatService(self.db, TRAITS, TZ, budget=budget, study_links=self.study_links)
        self.running = BackgroundOA(OARuntime(self.settings, service, budget, clock=self.clock)).start()
        return self


@pytest.fixture
def oa_bot(province, oa_emulator):
    process = OAProcess(province, oa_emulator).start()
    yield process
    process.stop()


def delivered(db, user_id: str, position: int, timeout: float = 5.0) -> None:
    """Wait until the bot has recorded question ``position`` as delivered to this chat (Zalo's answer to the
    send came back): a human reads the question for longer than that takes."""
    from bot.storage.models import ChatState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.session() as s:
            state = s.get(ChatState, ("zalo_oa", user_id))
            if state is not None and state.question_position == position and state.question_delivered_at:
                return
        time.sleep(0.02)
    raise TimeoutError(f"question {position} never recorded as delivered to {user_id}")


def oa_link(emulator, invite, member_code: str, user_id: str, phone: str | None = None):
    user = emulator.user(user_id, phone)
    user.follow()
    user.wait_for(lambda u: any("mã liên kết" in m["text"] for m in u.messages))
    say(user, format_code(invite(member_code)).lower(), "Liên kết thành công")
    return user


# -- following, linking, buttons -------------------------------------------------------------------
def test_a_follower_is_told_to_type_the_code_and_links_with_a_zalo_invitation(oa_bot, oa_emulator, oa_invite,
                                                                                province):
    user = oa_emulator.user("oa-1")
    user.follow()
    welcome = user.wait_for(lambda u: bool(u.messages))["text"]
    assert "mã liên kết" in welcome and "64-KH/TU" not in welcome
    code = oa_invite("DV002", channel="zalo")  # the Zalo bot's invitation works on the OA too
    assert "Liên kết thành công! Xin chào đồng chí Đinh Văn Sơn" in say(user, format_code(code), "Liên kết")
    with province.session() as s:
        rows = s.execute(select(ChatAccount.channel, ChatAccount.external_id, Member.code).join(Member)).all()
        contact = s.get(ZaloOaContact, "oa-1")
    assert [tuple(r) for r in rows] == [("zalo_oa", "oa-1", "DV002")]
    assert contact.following and contact.last_interaction_at is not None


def test_the_quiz_is_tapped_with_buttons_and_typed_answers_work_too(oa_bot, oa_emulator, oa_invite, province):
    user = oa_link(oa_emulator, oa_invite, "DV004", "oa-4")
    say(user, "làm bài", "Câu 1/10")
    question = user.messages[-1]
    assert [b["title"] for b in question["buttons"]] == ["A", "B", "C", "D"]
    assert all(b["type"] == "oa.query.hide" and b["payload"].startswith("a:") for b in question["buttons"])
    before = len(user.messages)
    user.press("B")
    user.wait_for(lambda u: any("Câu 2/10" in m["text"] for m in u.messages[before:]))
    second = user.messages[-1]["text"]
    assert "Đã ghi nhận câu 1: B." in second.split("Câu 2/10")[0]  # the receipt of answer 1 travels with question 2
    delivered(province, "oa-4", 2)  # the member reads question 2 (a typed answer counts only after it arrived)
    assert "Câu 3/10" in say(user, "c", "Câu 3/10")  # typed
    with province.session() as s:
        from bot.storage.models import Answer

        assert s.scalar(select(func.count()).select_from(Answer)) == 2


def test_a_button_for_a_choice_the_question_does_not_have_says_which_choices_it_has(oa_bot, oa_emulator, oa_invite,
                                                                                     province):
    """A forged (or garbled) ``a:<attempt>:1:9`` on the current question: the same answer a typed "E" gets, not
    "no longer current"; nothing is recorded, and the real buttons still work."""
    from bot.storage.models import Answer

    user = oa_link(oa_emulator, oa_invite, "DV004", "oa-4")
    say(user, "làm bài", "Câu 1/10")
    attempt = user.messages[-1]["buttons"][0]["payload"].split(":")[1]
    before = len(user.messages)
    user.tap({"title": "E", "type": "oa.query.hide", "payload": f"a:{attempt}:1:9"})
    user.wait_for(lambda u: len(u.messages) > before)
    assert user.messages[-1]["text"] == "Câu này chỉ có các lựa chọn từ A đến D. Đồng chí vui lòng chọn lại."
    assert count(province, Answer) == 0
    before = len(user.messages)
    user.press("B")
    user.wait_for(lambda u: any("Câu 2/10" in m["text"] for m in u.messages[before:]))


@pytest.mark.parametrize("zalo_ahead", [0.0, -3.0, 3.0], ids=["same-clock", "zalo-3s-behind", "zalo-3s-ahead"])
def test_an_answer_typed_twice_quickly_on_the_oa_counts_once_and_says_which_question_is_current(
        oa_bot, oa_emulator, oa_invite, province, zalo_ahead):
    """As on the Zalo bot: the second "a" left before question 2 arrived, by Zalo's clock, so it is not taken
    for question 2, which the member never saw; an answer typed after reading counts, whatever the skew between
    Zalo's clock and ours."""
    from bot.storage.models import Answer

    oa_emulator.travel(zalo_ahead)
    user = oa_link(oa_emulator, oa_invite, "DV005", "oa-5")
    say(user, "làm bài", "Câu 1/10")
    delivered(province, "oa-5", 1)
    before = len(user.messages)
    user.send_text("a")
    user.send_text("a")
    user.wait_for(lambda u: any("chưa được tính" in m["text"] for m in u.messages[before:]))
    texts = [m["text"] for m in user.messages[before:]]
    assert texts[0].startswith("✔️ Đã ghi nhận câu 1: A.") and "Câu 2/10" in texts[0]
    assert texts[1] == ("Đáp án «A» chưa được tính vì gửi trước khi đồng chí nhận được câu 2. "
                        "Câu hỏi hiện tại là câu 2.")
    delivered(province, "oa-5", 2)
    assert say(user, "b", "Câu 3/10").startswith("✔️ Đã ghi nhận câu 2: B.")
    with province.session() as s:
        assert sorted(s.scalars(select(Answer.position))) == [1, 2]


def test_on_the_oa_a_question_whose_send_failed_is_shown_again_however_late_the_next_answer(
        oa_bot, oa_emulator, oa_invite, province):
    """Question 2 never reached the member (Zalo refused the send): the "b" they type later, meant for question
    1 again or typed blind, is not taken for question 2, which they never saw; it is shown to them instead."""
    from datetime import timedelta

    from bot.storage.models import Answer, ChatState

    user = oa_link(oa_emulator, oa_invite, "DV007", "oa-7")
    say(user, "làm bài", "Câu 1/10")
    delivered(province, "oa-7", 1)
    oa_emulator.inject_error("cs", 400, "refused", times=10)
    taken = oa_bot.channel.handled
    user.send_text("a")
    oa_bot.settle(taken + 1)
    oa_emulator.clear_errors()
    with province.session() as s:  # however long the member waits: its loss was recorded
        s.execute(ChatState.__table__.update().where(ChatState.external_id == "oa-7")
                  .values(updated_at=utcnow() - timedelta(minutes=5)))
    reply = say(user, "b", "Câu 2/10")
    assert reply.startswith("Đáp án «B» chưa được tính vì gửi trước khi đồng chí nhận được câu 2.")
    with province.session() as s:
        assert sorted(s.scalars(select(Answer.position))) == [1]


def test_a_language_button_from_ngonngu_switches_the_members_reading_language(oa_bot, oa_emulator, oa_invite,
                                                                               province):
    from tests.test_languages import translate

    translate(province)
    user = oa_link(oa_emulator, oa_invite, "DV004", "oa-4")
    say(user, "/ngonngu", "Tiếng Khmer")
    offer = user.messages[-1]
    khmer = next(b for b in offer["buttons"] if b["title"].startswith("Tiếng Khmer"))
    assert khmer["payload"] == "l:km"
    before = len(user.messages)
    user.tap(khmer)
    reply = user.wait_for(lambda u: len(u.messages) > before)["text"]
    assert "Đã chọn ngôn ngữ đọc tài liệu: Tiếng Khmer (km)." in reply
    with province.session() as s:
        assert s.scalar(select(Member.language).where(Member.code == "DV004")) == "km"


def test_an_unknown_follower_sees_nothing_that_is_not_theirs(oa_bot, oa_emulator):
    user = oa_emulator.user("oa-stranger")
    for text in ("/hoc", "a:1:1:0", "s:1:1"):
        reply = say(user, text, "liên kết")
        assert "chưa liên kết" in reply and "64-KH/TU" not in reply


def test_an_image_gets_a_text_only_hint(oa_bot, oa_emulator, oa_invite):
    user = oa_link(oa_emulator, oa_invite, "DV005", "oa-5")
    before = len(user.messages)
    user.send_image()
    user.wait_for(lambda u: len(u.messages) > before)
    assert "chỉ đọc được tin nhắn chữ" in user.messages[-1]["text"]


# -- the webhook -----------------------------------------------------------------------------------
def event_for(emulator, user_id: str, text: str, ts_ms: int | None = None) -> dict:
    ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    return {"app_id": emulator.app_id, "event_name": "user_send_text", "sender": {"id": user_id},
            "recipient": {"id": emulator.oa_id}, "message": {"text": text, "msg_id": f"m{ts}{user_id}"},
            "timestamp": ts}


def test_an_event_the_webhook_answered_before_a_kill_is_handled_after_the_restart(oa_bot, oa_emulator, province):
    """The webhook answers at once and Zalo does not deliver an answered event again: it is kept before the
    answer, and the next process handles what a killed one left."""
    from bot.services.inbox import Inbox

    user = oa_emulator.user("oa-k")
    user.send_text("xin chào")
    user.wait_for(lambda u: any(m.get("text") and m.get("from") != "user" for m in u.messages), timeout=10)
    before = len(user.messages)
    oa_bot.stop()
    event = event_for(oa_emulator, "oa-k", "/trogiup")
    Inbox(province, "zalo_oa", "zalo_oa").keep([(event["message"]["msg_id"], event)], utcnow())  # then killed
    oa_bot.start()
    user.wait_for(lambda u: len(u.messages) > before, timeout=10)
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(ProcessedUpdate)
                        .where(ProcessedUpdate.update_key == event["message"]["msg_id"])) == 1
    later = event_for(oa_emulator, "oa-k", "/hoc")
    oa_emulator.hold("oa-k")  # its reply hangs: the event is not answered yet
    try:
        assert oa_emulator.deliver_raw(*oa_emulator.signed(later)).status == 200
        with province.session() as s:  # kept by the time Zalo had its answer
            assert s.scalar(select(InboxUpdate.source).where(InboxUpdate.update_key == later["message"]["msg_id"])) \
                == "zalo_oa"
    finally:
        oa_emulator.release("oa-k")
    deadline = time.monotonic() + 10
    while kept_rows(province) and time.monotonic() < deadline:  # its reply went: answered, no longer kept
        time.sleep(0.05)
    assert kept_rows(province) == 0


def kept_rows(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(InboxUpdate))


def killed_after_recording(oa_bot, oa_emulator, province, user_id: str, text: str):
    """The bot stopped as a kill leaves it: the member's ``text`` (a tap, when it is a button's payload) kept and
    recorded, its reply never sent. Returns the event and what the dead process would have replied."""
    from bot.channels.zalo_oa.rendering import ACTION
    from bot.services.inbox import Inbox

    oa_bot.stop()
    event = event_for(oa_emulator, user_id, text)
    key = event["message"]["msg_id"]
    Inbox(province, "zalo_oa", "zalo_oa").keep([(key, event)], utcnow())
    service = ChatService(province, TRAITS, TZ)
    handle = service.on_action if ACTION.match(text) else service.on_text
    return event, handle(user_id, text, utcnow(), key)


def test_an_answer_the_oa_recorded_but_a_kill_kept_from_the_member_is_sent_after_the_restart(
        oa_bot, oa_emulator, oa_invite, province):
    """The event was kept and recorded, and the process killed before its reply: Zalo will not deliver it again,
    so a moment after the restart the member gets what it showed (question 2), nothing recorded twice, and
    their next letter counts for it."""
    from bot.storage.models import Answer

    user = oa_link(oa_emulator, oa_invite, "DV018", "oa-18")
    say(user, "làm bài", "Câu 1/10")
    delivered(province, "oa-18", 1)
    _, recorded = killed_after_recording(oa_bot, oa_emulator, province, "oa-18", "a")
    assert "Câu 2/10" in recorded.replies[-1].text
    before = len(user.messages)
    oa_bot.start()
    user.wait_for(lambda u: any("Câu 2/10" in m.get("text", "") for m in u.messages[before:]), timeout=15)
    assert count(province, Answer) == 1
    delivered(province, "oa-18", 2)
    assert say(user, "b", "Câu 3/10").startswith("✔️ Đã ghi nhận câu 2: B.")
    assert count(province, Answer) == 2


def test_a_tap_the_oa_recorded_but_a_kill_kept_from_the_member_brings_the_next_question_after_the_restart(
        oa_bot, oa_emulator, oa_invite, province):
    """As for a typed answer: a tap on an answer button was kept and recorded, and the process killed before its
    reply; a moment after the restart the member gets question 2 with the receipt of answer 1, and nothing is
    recorded twice."""
    from bot.storage.models import Answer

    user = oa_link(oa_emulator, oa_invite, "DV019", "oa-19")
    say(user, "làm bài", "Câu 1/10")
    payload = next(b["payload"] for b in user.messages[-1]["buttons"] if b["title"] == "C")
    _, recorded = killed_after_recording(oa_bot, oa_emulator, province, "oa-19", payload)
    assert "Câu 2/10" in recorded.replies[-1].text
    before = len(user.messages)
    oa_bot.start()
    user.wait_for(lambda u: any("Câu 2/10" in m.get("text", "") for m in u.messages[before:]), timeout=15)
    assert "Đã ghi nhận câu 1: C." in user.messages[-1]["text"]
    assert count(province, Answer) == 1
    before = len(user.messages)
    user.press("D")
    user.wait_for(lambda u: any("Câu 3/10" in m.get("text", "") for m in u.messages[before:]))
    assert count(province, Answer) == 2


def test_zalos_retry_of_an_answer_a_kill_left_unanswered_does_not_cancel_its_answer_after_the_restart(
        oa_bot, oa_emulator, oa_invite, province):
    """The process recorded the answer and died before the webhook's 200, so Zalo delivers the event again to the
    new process: that retry is answered with nothing (it was recorded), but the member still gets question 2."""
    user = oa_link(oa_emulator, oa_invite, "DV021", "oa-21")
    say(user, "làm bài", "Câu 1/10")
    delivered(province, "oa-21", 1)
    event, _ = killed_after_recording(oa_bot, oa_emulator, province, "oa-21", "a")
    before = len(user.messages)
    oa_bot.start()
    assert oa_emulator.deliver_raw(*oa_emulator.signed(event)).status == 200  # Zalo's retry
    user.wait_for(lambda u: any("Câu 2/10" in m.get("text", "") for m in u.messages[before:]), timeout=15)


def test_an_event_the_restart_took_up_and_is_still_answering_is_not_answered_twice(
        oa_bot, oa_emulator, oa_invite, province):
    """A killed process kept the member's "làm bài" and never handled it; the next one handles it as it starts,
    and its reply is still on its way when the moment for events recorded and never answered comes: the member
    gets question 1 once, not twice."""
    from bot.services.inbox import SETTLE, Inbox

    user = oa_link(oa_emulator, oa_invite, "DV020", "oa-20")
    oa_bot.stop()
    event = event_for(oa_emulator, "oa-20", "làm bài")
    Inbox(province, "zalo_oa", "zalo_oa").keep([(event["message"]["msg_id"], event)], utcnow())
    before = len(user.messages)
    oa_emulator.hold("oa-20")
    try:
        oa_bot.start()
        time.sleep(SETTLE + 1.5)  # recorded, and its reply hangs past the replay's moment
    finally:
        oa_emulator.release("oa-20")
    user.wait_for(lambda u: any("Câu 1/10" in m.get("text", "") for m in u.messages[before:]), timeout=10)
    time.sleep(1.0)
    assert len([m for m in user.messages[before:] if "Câu 1/10" in m.get("text", "")]) == 1


def test_webhook_refuses_forged_stale_oversized_and_malformed_requests(oa_bot, oa_emulator, province):
    oa_emulator.user("oa-x")
    event = event_for(oa_emulator, "oa-x", "/hoc")
    raw, headers = oa_emulator.signed(event)
    forged = dict(headers, **{"X-ZEvent-Signature": "mac=" + "0" * 64})
    assert oa_emulator.deliver_raw(raw, forged).status == 403
    app_secret_mac = __import__("hashlib").sha256(
        (oa_emulator.app_id).encode() + raw + event["timestamp"].encode() + oa_emulator.app_secret.encode()).hexdigest()
    assert oa_emulator.deliver_raw(raw, dict(headers, **{"X-ZEvent-Signature": f"mac={app_secret_mac}"})).status == 403
    old = event_for(oa_emulator, "oa-x", "/hoc", ts_ms=int((time.time() - 3 * 3600) * 1000))
    assert oa_emulator.deliver_raw(*oa_emulator.signed(old)).status == 403
    tampered = raw.replace(b"/hoc", b"/ketqua")
    assert oa_emulator.deliver_raw(tampered, headers).status == 403
    assert oa_emulator.deliver_raw(b"{not json", headers).status == 400
    assert oa_emulator.deliver_raw(b"[" * 60_000, headers).status == 400  # nested deeper than any event
    big = json.dumps({**event, "pad": "x" * 70_000}).encode()
    assert oa_emulator.deliver_raw(big, headers).status == 413
    time.sleep(0.2)
    assert count(province, ProcessedUpdate) == 0


def test_a_text_with_a_broken_emoji_lone_surrogate_is_answered_never_a_500_zalo_would_retry(
        oa_bot, oa_emulator, oa_invite, caplog):
    from bot.emulators.zalo_oa import mac

    user = oa_link(oa_emulator, oa_invite, "DV008", "oa-sur")
    before = len(user.messages)
    event = event_for(oa_emulator, "oa-sur", "\ud800 hoc")
    raw = json.dumps(event).encode()  # ASCII: the surrogate as its JSON escape
    assert b"\\ud800 hoc" in raw
    headers = {"Content-Type": "application/json",
               "X-ZEvent-Signature": "mac=" + mac(oa_emulator.app_id, raw, event["timestamp"], oa_emulator.oa_secret)}
    assert oa_emulator.deliver_raw(raw, headers).status == 200
    user.wait_for(lambda u: len(u.messages) > before, timeout=10)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_events_from_user_ids_zalo_never_sends_are_ignored_nothing_stored_and_nobody_messaged(oa_bot, oa_emulator,
                                                                                              province):
    """Zalo's ids are short strings of digits: a list would become the user "['a']", a 500-character id overflow
    String(64) on PostgreSQL. Signed all the same, such events are taken (200) and ignored."""
    from bot.storage.models import InboxUpdate

    odd = (["a"], "1" * 500, {"id": "1"}, True, "12 34", "١٢٣", "")
    statuses = []
    for n, user_id in enumerate(odd):
        text = {**event_for(oa_emulator, "x", "/hoc"), "sender": {"id": user_id}}
        text["message"] = {**text["message"], "msg_id": f"odd-text-{n}"}
        follow = {"app_id": oa_emulator.app_id, "event_name": "follow", "oa_id": oa_emulator.oa_id,
                  "follower": {"id": user_id}, "timestamp": str(int(time.time() * 1000) + n)}
        statuses += [oa_emulator.deliver_raw(*oa_emulator.signed(event)).status for event in (text, follow)]
    assert statuses == [200] * 2 * len(odd)
    oa_bot.settle(2 * len(odd))
    assert count(province, ZaloOaContact) == count(province, InboxUpdate) == count(province, ProcessedUpdate) == 0
    assert oa_emulator.calls("cs") == []


def test_a_signature_written_in_upper_case_hex_is_accepted(oa_bot, oa_emulator, province):
    oa_emulator.user("oa-hex")
    raw, headers = oa_emulator.signed(event_for(oa_emulator, "oa-hex", "xin chào"))
    upper = dict(headers, **{"X-ZEvent-Signature": "mac=" + headers["X-ZEvent-Signature"][4:].upper()})
    assert upper["X-ZEvent-Signature"] != headers["X-ZEvent-Signature"]
    assert oa_emulator.deliver_raw(raw, upper).status == 200
    oa_bot.settle(1)
    assert [c["recipient"]["user_id"] for c in oa_emulator.calls("cs")] == ["oa-hex"]  # answered


def test_webhook_accepts_the_timestamp_from_the_header_too(province):
    from bot.emulators.zalo_oa import ZaloOAEmulator

    with ZaloOAEmulator(signature_timestamp="header") as emu:
        process = OAProcess(province, emu).start()
        try:
            user = emu.user("oa-h")
            event = event_for(emu, "oa-h", "xin chào")
            raw, headers = emu.signed(event, timestamp=str(int(event["timestamp"]) + 7))  # header differs
            assert headers["X-ZEvent-Timestamp"] != event["timestamp"]
            assert emu.deliver_raw(raw, headers).status == 200
            assert "mã liên kết" in say(user, "xin chào", "mã liên kết")  # signed by the header's time
            assert all("X-ZEvent-Timestamp" in d.headers and d.ok for d in emu.deliveries)
        finally:
            process.stop()


def test_follows_and_unfollows_signed_by_the_headers_time_alone_each_count(province):
    """Zalo may sign an event with the header's time and leave it out of the body: a follow, an unfollow and a
    follow again are three events (not one follow and its repeat), so the member ends up following."""
    from bot.emulators.zalo_oa import ZaloOAEmulator

    with ZaloOAEmulator(signature_timestamp="header") as emu:
        process = OAProcess(province, emu).start()
        try:
            emu.user("oa-f")
            start = int(time.time() * 1000) - 3000
            for i, name in enumerate(("follow", "unfollow", "follow")):
                event = {"app_id": emu.app_id, "event_name": name, "oa_id": emu.oa_id, "follower": {"id": "oa-f"},
                         "user_id_by_app": "oa-f", "source": "oa_profile"}
                assert emu.deliver_raw(*emu.signed(event, timestamp=str(start + 1000 * i))).status == 200
                time.sleep(0.5)  # Zalo's order
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with province.session() as s:
                    contact = s.get(ZaloOaContact, "oa-f")
                    if contact is not None and contact.following:
                        break
                time.sleep(0.1)
            with province.session() as s:
                assert s.get(ZaloOaContact, "oa-f").following
                assert s.scalar(select(func.count()).select_from(ProcessedUpdate)) == 3  # each one handled
        finally:
            process.stop()


def test_webhook_answers_at_once_and_a_retried_event_is_handled_once_even_after_a_restart(
        province, oa_emulator, oa_invite):
    process = OAProcess(province, oa_emulator).start()
    try:
        user = oa_link(oa_emulator, oa_invite, "DV006", "oa-6")
        say(user, "/lambai", "Câu 1/10")
        before = len(user.messages)
        user.press("A")
        user.wait_for(lambda u: any("Câu 2/10" in m["text"] for m in u.messages[before:]))
        assert max(d.seconds for d in oa_emulator.deliveries) < 2.0  # Zalo gives up after about 2 s
        tap = next(k for k, e in oa_emulator.state.delivered.items() if e["message"]["text"].startswith("a:"))
        process.stop()
        process.start()  # a new process: nothing in memory about the tap
        sent = len(user.messages)
        assert oa_emulator.replay(tap).status == 200
        time.sleep(0.5)
        assert len(user.messages) == sent  # nothing answered twice
        from bot.storage.models import Answer

        assert count(province, Answer) == 1
    finally:
        process.stop()


def test_an_unfollowed_member_gets_nothing_and_is_on_the_call_list(oa_bot, oa_emulator, oa_invite, province):
    from bot.scheduling.due import Schedule, run_due
    from bot.outbox.sender import OutboxSender
    from bot.outbox.queue import QuietHours

    user = oa_link(oa_emulator, oa_invite, "DV007", "oa-7")
    user.unfollow()
    oa_bot.settle(3)
    with province.session() as s:
        assert s.get(ZaloOaContact, "oa-7").following is False
    sent_before = len(user.messages)
    quiet = QuietHours(tz=TZ, start=__import__("datetime").time(0, 0), end=__import__("datetime").time(0, 0))
    run_due(province, utcnow(), Schedule(quiet=quiet))
    sender = OutboxSender(province, {"zalo_oa": oa_bot.runtime.transport}, quiet=None)
    oa_bot.running.run(sender.run(until_idle=True))
    assert len(user.messages) == sent_before
    from bot.services.oversight import not_finished

    with province.session() as s:
        secretary = s.scalar(select(Member).where(Member.code == "DV001"))
        text = "\n".join(r.text for r in not_finished(s, secretary, utcnow()))
    assert "chưa liên lạc được qua Zalo" in text


def test_playground_plays_a_member_on_the_oa_with_numbered_buttons(workdir, capsys, monkeypatch):
    from bot.cli import main
    from tests.conftest import QUIZZES

    monkeypatch.setenv("HOCTAP_CONTENT_DIR", str(QUIZZES))
    script = workdir / "play.txt"
    script.write_text("hoc\n1\n/lambai\n2\nc\n/quit\n", encoding="utf-8")
    assert main(["playground", "--channel", "zalo-oa", "--script", str(script)]) == 0
    out = capsys.readouterr().out
    assert "Liên kết thành công! Xin chào đồng chí Đinh Văn Sơn" in out
    assert "[1] 1. Đọc 64-KH/TU" in out and "📖 64-KH/TU" in out  # "1" tapped the first button
    assert "[2] B" in out and "✔️ Đã ghi nhận câu 1: B." in out  # "2" tapped B
    assert "✔️ Đã ghi nhận câu 2: C." in out  # typed


def test_hoctap_run_serves_the_oa_webhook_beside_the_other_messengers(province, oa_emulator, oa_invite):
    import asyncio
    import threading

    from bot.app import serve
    from bot.config import SchedulerSettings, Settings

    port = free_port()
    oa = oa_settings(oa_emulator, port)
    authorize(province, oa_emulator, oa)
    settings = Settings(database_url=province.url, zalo_oa=oa, scheduler=SchedulerSettings(tick_seconds=3600))
    loop, stop = asyncio.new_event_loop(), asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve(settings, province, stop)), daemon=True)
    thread.start()
    try:
        oa_emulator.set_webhook(f"http://127.0.0.1:{port}/zalo-oa/webhook")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until every channel is up (before, events get 503 "starting")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        member = oa_link(oa_emulator, oa_invite, "DV011", "oa-11")
        assert "64-KH/TU" in say(member, "hoc", "64-KH/TU")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
    assert not thread.is_alive()


def test_a_retried_or_replayed_event_does_not_renew_the_members_free_window(province, oa_emulator, oa_invite):
    """The 48 hours run from the member's action: an event delivered again later carries its first time."""
    from datetime import timedelta

    from bot.timeutil import utcnow

    later = [timedelta(0)]
    process = OAProcess(province, oa_emulator, clock=lambda: utcnow() + later[0]).start()
    try:
        user = oa_link(oa_emulator, oa_invite, "DV006", "oa-6")
        with province.session() as s:
            first = s.get(ZaloOaContact, "oa-6").last_interaction_at
        text = next(k for k, e in oa_emulator.state.delivered.items() if e.get("event_name") == "user_send_text")
        later[0] = timedelta(minutes=90)  # Zalo delivers the same event again (or someone replays it)
        assert oa_emulator.replay(text).status == 200
        time.sleep(0.5)
        with province.session() as s:
            assert s.get(ZaloOaContact, "oa-6").last_interaction_at - first < timedelta(seconds=5)
    finally:
        process.stop()


# -- Zalo refusing or slow: replies are neither lost nor doubled (outside probe, 30/11/2026) --------------
def test_a_reply_refused_with_zalos_rate_limit_is_sent_again_and_arrives(oa_bot, oa_emulator, oa_invite):
    """-32 is Zalo's "too many requests": a busy endpoint, not a refusal of this member."""
    user = oa_link(oa_emulator, oa_invite, "DV002", "oa-2")
    oa_emulator.inject_error("cs", -32, "Exceed rate limit")
    assert "Câu 1/" in say(user, "lambai", "Câu 1/")


def test_a_reply_zalo_took_but_did_not_answer_in_time_is_not_sent_again(oa_bot, oa_emulator, oa_invite):
    """Sent again, the member would read the question twice and the OA could pay twice."""
    import httpx

    user = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
    oa_bot.runtime.client._http.timeout = httpx.Timeout(0.5)
    oa_emulator.reset_log()
    oa_emulator.hold("oa-3")
    user.send_text("lambai")
    time.sleep(2.5)  # the client gave up after 0.5 s; a resend would have arrived by now
    oa_emulator.release("oa-3")
    user.wait_for(lambda u: any("Câu 1/" in m["text"] for m in u.messages))
    oa_bot.settle(3)  # the follow, the code, "lambai"
    assert len([c for c in oa_emulator.calls("cs") if c["recipient"]["user_id"] == "oa-3"]) == 1
    assert sum("Câu 1/" in m["text"] for m in user.messages) == 1


def test_a_follow_delivered_late_after_the_members_unfollow_leaves_them_unfollowed_and_unanswered(
        oa_bot, oa_emulator, oa_invite, province):
    user = oa_link(oa_emulator, oa_invite, "DV006", "oa-6")
    unfollow = user.unfollow()
    oa_bot.settle(3)
    before = len(user.messages)
    late = {**unfollow, "event_name": "follow", "timestamp": str(int(unfollow["timestamp"]) - 60_000)}
    assert oa_emulator.deliver_raw(*oa_emulator.signed(late)).status == 200  # a follow from a minute before
    oa_bot.settle(4)
    with province.session() as s:
        contact = s.get(ZaloOaContact, "oa-6")
        assert contact.following is False and contact.unfollowed_at is not None
    assert len(user.messages) == before  # no greeting to someone who left


def test_an_unfollow_delivered_late_after_the_member_followed_again_leaves_them_following(
        oa_bot, oa_emulator, oa_invite, province):
    user = oa_link(oa_emulator, oa_invite, "DV006", "oa-6")
    unfollow = user.unfollow()
    oa_bot.settle(3)
    follow = user.follow()  # back again
    oa_bot.settle(4)
    late = {**unfollow, "timestamp": str(int(follow["timestamp"]) - 30_000)}  # an unfollow from before it
    assert oa_emulator.deliver_raw(*oa_emulator.signed(late)).status == 200
    oa_bot.settle(5)
    with province.session() as s:
        contact = s.get(ZaloOaContact, "oa-6")
        assert contact.following is True and contact.unfollowed_at is None


def test_a_tap_from_a_chat_no_longer_linked_is_told_to_type_a_code_once(oa_bot, oa_emulator, oa_invite):
    """The OA has no phone button and no personal link: a member links by typing a code."""
    user = oa_emulator.user("oa-stranger")
    user.follow()
    user.wait_for(lambda u: bool(u.messages))
    before = len(user.messages)
    user.send_text("a:1:1:0")  # an old button's payload
    user.wait_for(lambda u: len(u.messages) > before)
    oa_bot.settle(2)
    reply = "\n".join(m["text"] for m in user.messages[before:])
    assert "mã liên kết" in reply and "Chia sẻ số điện thoại" not in reply
    assert reply.count("chưa liên kết tài khoản") <= 1


def test_a_reaction_opens_no_free_window_that_the_spec_does_not_grant(oa_bot, oa_emulator):
    """Only messages, taps and follows renew the 48 hours: counting a reaction would send a message as free
    that Zalo bills (or refuses)."""
    event = {"app_id": oa_emulator.app_id, "event_name": "user_reacted_message", "user_id_by_app": "oa-react",
             "timestamp": str(int(time.time() * 1000)), "sender": {"id": "oa-react"},
             "recipient": {"id": oa_emulator.oa_id}, "message": {"msg_id": "react-1", "react_icon": "/-heart"}}
    assert oa_emulator.deliver_raw(*oa_emulator.signed(event)).status == 200
    oa_bot.settle(1)
    with oa_bot.db.session() as s:
        assert s.get(ZaloOaContact, "oa-react") is None
