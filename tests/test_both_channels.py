"""The member scenarios, once, on every messenger: the same suite drives the real Telegram bot (PTB,
buttons, edits), the real Zalo bot (httpx poller, everything typed) and the real Zalo OA channel (signed
webhook, buttons without edits) through their emulators, on SQLite and PostgreSQL. A small driver hides
what differs: pressing a button or typing its word, a toast or a message."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from sqlalchemy import func, select

from bot.services import quiz
from bot.services.linking import format_code
from bot.storage.models import Answer, Attempt, AttemptQuestion, ChatAccount, Document, Member
from bot.timeutil import utcnow
from tests.conftest import BotProcess
from tests.test_telegram_member_flow import quiz_state
from tests.messengers import count
from tests.test_zalo_channel import ZaloProcess
from tests.test_zalo_oa_channel import OAProcess

CHANNELS = ["telegram", "zalo", "zalo_oa", "zalo-bots"]  # zalo-bots: a branch's own bot, beside another branch's, in one process


class Person:
    """One person on one messenger. ``say`` types; ``tap`` presses a button (Telegram) or types its
    word (Zalo); ``expect`` waits for a new or edited bot message; ``feedback`` is what answers a
    tap: the toast on Telegram, the message on Zalo."""

    def __init__(self, user, channel: str):
        self.user, self.channel = user, channel
        self._snap: dict[Any, str] = {}
        self._answers = 0

    def _texts(self) -> dict[Any, str]:
        return {m["message_id"]: m.get("text") or m.get("caption") or "" for m in self.user.messages}

    def _mark(self) -> None:
        self._snap = self._texts()
        self._answers = len(self.user.callback_answers) if self.channel == "telegram" else 0

    def fresh(self) -> list[str]:
        return [t for mid, t in self._texts().items() if self._snap.get(mid) != t]

    def texts(self) -> list[str]:
        return list(self._texts().values())

    def say(self, text: str) -> None:
        self._mark()
        self.user.send_text(text)

    def tap(self, label: str, typed: str, message_id=None) -> None:
        if self.channel == "zalo":
            self.say(typed)
            return
        self._mark()
        self.user.press(label, message_id=message_id)  # Telegram: a callback; the OA: a text event

    def answer(self, letter: str, message_id=None) -> None:
        self.tap(letter, letter.lower() if self.channel == "zalo" else letter, message_id)

    def expect(self, fragment: str, timeout: float = 5.0) -> str:
        self.user.wait_for(lambda u: any(fragment in t for t in self.fresh()), timeout=timeout)
        return next(t for t in reversed(self.fresh()) if fragment in t)

    def feedback(self, timeout: float = 5.0) -> str:
        if self.channel == "telegram":
            self.user.wait_for(lambda u: len(u.callback_answers) > self._answers, timeout=timeout)
            return self.user.callback_answers[-1].get("text") or ""
        self.user.wait_for(lambda u: bool(self.fresh()), timeout=timeout)
        return "\n".join(self.fresh())

    def last_id(self):
        return self.user.last()["message_id"]


@dataclass
class Messenger:
    name: str
    limit: int
    process: Any
    emulator: Any
    invite: Callable[[str], str]

    def person(self, uid: int) -> Person:
        if self.name == "zalo_oa":
            return Person(self.emulator.user(f"oa{uid}"), self.name)
        user = self.emulator.user(uid) if self.name == "telegram" else self.emulator.user(f"z{uid}", "Đảng viên")
        return Person(user, self.name)

    def start_text(self, code: str) -> str:
        """What a member sends to link: the deep link's /start, or the code typed as read."""
        return f"/start {code}" if self.name == "telegram" else format_code(code).lower()

    def link(self, member_code: str, uid: int) -> Person:
        person = self.person(uid)
        person.say(self.start_text(self.invite(member_code)))
        person.expect("Liên kết thành công")
        return person

    def restart(self) -> None:
        self.process.stop()
        self.process.start()

    def sends(self, person: Person) -> list[dict]:
        """Every message the bot sent (or edited) into this person's chat."""
        if self.name == "zalo_oa":
            return [body["message"] for body in self.emulator.calls("cs")
                    if body["recipient"]["user_id"] == person.user.id]
        methods = ("sendMessage", "editMessageText") if self.name == "telegram" else ("sendMessage", "sendPhoto")
        chat = str(person.user.id)
        return [p for m, p in self.emulator.requests if m in methods and str(p.get("chat_id")) == chat]

    def flood_control_once(self) -> None:
        if self.name == "telegram":
            self.emulator.inject_error("editMessageText", 429, retry_after=1)
        elif self.name == "zalo_oa":
            self.emulator.inject_error("cs", 500)  # no published rate limit: a failed request instead
        else:
            self.emulator.inject_error("sendMessage", 429)  # Zalo: no retry_after


@pytest.fixture(params=CHANNELS)
def messenger(request, province, invite, zalo_invite, oa_invite):  # noqa: F811 - pytest fixture
    if request.param == "zalo_oa":
        from bot.emulators.zalo_oa import ZaloOAEmulator

        with ZaloOAEmulator() as emu:
            process = OAProcess(province, emu).start()
            try:
                yield Messenger("zalo_oa", 2000, process, emu, oa_invite)
            finally:
                process.stop()
    elif request.param == "telegram":
        from bot.emulators.telegram import TelegramEmulator

        with TelegramEmulator() as emu:
            process = BotProcess(province, emu).start()
            try:
                yield Messenger("telegram", 4096, process, emu, invite)
            finally:
                process.stop()
    elif request.param == "zalo":
        from bot.emulators.zalo import ZaloEmulator

        with ZaloEmulator("1234567890:TEST-ZALO", "HocTap") as emu:
            process = ZaloProcess(province, emu).start()
            try:
                yield Messenger("zalo", 2000, process, emu, zalo_invite)
            finally:
                process.stop()
    else:
        from tests.test_zalo_bots import branch_bots

        with branch_bots(province) as (process, _default, bot_a, _bot_b):  # members of Tân Tiến use bot A
            yield Messenger("zalo", 2000, process, bot_a, zalo_invite)


def take_quiz(person: Person, db, member_code: str, wrong: set[int] = frozenset(), letter: str | None = None) -> str:
    """Start the quiz and answer all ten questions (right except ``wrong``, or always ``letter``);
    returns the result as the member reads it."""
    person.say("/lambai")
    person.expect("Câu 1/10")
    for position in range(1, 11):
        _attempt, at, right = quiz_state(db, member_code)
        assert at == position
        choice = letter or (right if position not in wrong else next(x for x in "ABCD" if x != right))
        person.answer(choice)
        person.expect(f"Câu {position + 1}/10" if position < 10 else "lượt làm bài")
    return "\n".join(t for t in person.fresh() if "Câu " in t or "Kết quả" in t or "lượt" in t)


# -- the scenarios ---------------------------------------------------------------------------------
def test_member_links_with_a_code_that_works_once(messenger, province):
    code = messenger.invite("DV002")
    lan = messenger.person(6001)
    lan.say(messenger.start_text(code))
    assert "Liên kết thành công! Xin chào đồng chí Đinh Văn Sơn" in lan.expect("Liên kết")
    other = messenger.person(6002)
    other.say(messenger.start_text(code))
    assert "đã được sử dụng" in other.expect("mã")
    with province.session() as s:
        accounts = s.execute(select(ChatAccount.channel, ChatAccount.external_id, Member.code).join(Member)).all()
    assert [tuple(a) for a in accounts] == [(messenger.name, str(lan.user.id), "DV002")]


def test_unlinked_user_only_learns_how_to_link(messenger):
    stranger = messenger.person(5001)
    for text in ("/hoc", "xin chào", "/ketqua"):
        stranger.say(text)
        assert "chưa liên kết tài khoản" in stranger.expect("liên kết")
    assert not any("64-KH/TU" in t for t in stranger.texts())


def test_a_long_summary_is_paged_within_the_messengers_limit(messenger, province):
    with province.session() as s:
        s.get(Document, "kh-64-tu-binh-phuoc").summary = "\n\n".join(
            f"Đoạn {i}: " + "nội dung nghị quyết " * 40 for i in range(1, 13))
    member = messenger.link("DV015", 9001)
    member.say("/hoc")
    member.expect("Hạn hoàn thành")
    member.tap("1. Đọc 64-KH/TU", "1")
    pages = int(re.search(r"\(Trang 1/(\d+)\)", member.expect("(Trang 1/")).group(1))
    assert pages >= 3
    for page in range(2, pages + 1):
        member.tap("Tiếp ›", "tiếp")
        member.expect(f"(Trang {page}/{pages})")
    closing = member.expect("Những điểm chính")
    if messenger.name == "zalo":
        assert "Gõ LÀM BÀI để làm bài kiểm tra" in closing
    elif messenger.name == "zalo_oa":
        assert "Làm bài kiểm tra" in [b["title"] for b in member.user.last()["buttons"]]
    else:
        assert "Làm bài kiểm tra" in str(member.user.last().get("reply_markup"))
    texts = [t for t in member.texts() if "(Trang " in t]
    assert len(texts) == pages and all(len(t) <= messenger.limit for t in texts)
    assert all(f"Đoạn {i}:" in " ".join(texts) for i in range(1, 13))


def test_next_past_the_last_page_is_one_short_line_on_what_to_do(messenger, province):
    member = messenger.link("DV018", 9011)
    member.say("/hoc")
    member.expect("Hạn hoàn thành")
    member.tap("1. Đọc 64-KH/TU", "1")
    first = member.expect("📖 64-KH/TU")
    pages = re.search(r"\(Trang 1/(\d+)\)", first)
    for page in range(2, int(pages.group(1)) + 1 if pages else 2):
        member.tap("Tiếp ›", "tiếp")
        member.expect(f"(Trang {page}/")
    member.expect("Những điểm chính")
    sent = len(messenger.sends(member))
    member.say("tiếp")
    end = member.expect("đã đọc hết")
    assert len(messenger.sends(member)) == sent + 1  # one message: not the last page and key points again
    assert end.startswith("Đồng chí đã đọc hết tài liệu 64-KH/TU.") and len(end) < 120
    assert "Những điểm chính" not in end
    if messenger.name == "zalo":
        assert "Gõ LÀM BÀI để làm bài kiểm tra" in end
    member.tap("Làm bài kiểm tra", "làm bài")
    member.expect("Câu 1/10")


@pytest.mark.parametrize("wrong, score, verdict", [({1, 2}, "8/10 — 80%", "ĐẠT ✅"),
                                                     (set(range(1, 11)), "0/10 — 0%", "CHƯA ĐẠT ❌")])
def test_a_whole_quiz_is_scored_with_the_wrong_answers_explained_in_at_most_12_messages(
        messenger, province, wrong, score, verdict):
    member = messenger.link("DV004", 8101)
    messenger.emulator.reset_log()
    result = take_quiz(member, province, "DV004", wrong)
    assert f"Số câu đúng: {score}" in result and f"Kết quả: {verdict}" in result
    assert result.count("Đáp án đúng:") == len(wrong)
    assert "còn 2 lượt làm bài" in result
    sends = messenger.sends(member)
    assert len(sends) <= 12
    assert all(len(p["text"]) <= messenger.limit for p in sends)
    with province.session() as s:
        attempt = s.scalar(select(Attempt))
        assert attempt.correct_count == 10 - len(wrong) and attempt.submitted_at is not None
        assert s.scalar(select(func.count()).select_from(Answer)) == 10
    member.say("/ketqua")
    assert f"Lần 1: {10 - len(wrong)}/10 câu đúng" in member.expect("Lần 1")


def answered_elsewhere(db, member_code: str, positions, shown: int = 0) -> None:
    """Record answers as another device would, or a process that died before it could reply."""
    attempt_id, _, _ = quiz_state(db, member_code)
    with db.session() as s:
        m = s.scalar(select(Member).where(Member.code == member_code))
        for position in positions:
            assert quiz.answer(s, m.id, attempt_id, position, shown, utcnow()).status == "recorded"


def test_an_answer_to_a_question_no_longer_current_is_recorded_once(messenger, province):
    member = messenger.link("DV006", 8301)
    member.say("/lambai")
    member.expect("Câu 1/10")
    question_one = member.last_id()
    answered_elsewhere(province, "DV006", [1])  # from another device meanwhile
    member.answer("C", message_id=question_one)  # what the member still sees: question 1
    said = member.feedback()
    assert "Câu này đã được ghi nhận rồi." in said
    if messenger.name != "telegram":  # no toast on Zalo: the reply says which question is current
        assert "Câu hỏi hiện tại là câu 2." in said and "📝 Câu 2/10" in said
    assert count(province, Answer) == 1


def test_after_a_crash_that_lost_the_reply_the_member_is_brought_to_where_they_are(messenger, province):
    """Question 1 was recorded, then the process died before replying; it is restarted."""
    member = messenger.link("DV017", 8351)
    member.say("/lambai")
    member.expect("Câu 1/10")
    question_one = member.last_id()
    answered_elsewhere(province, "DV017", [1], shown=1)
    messenger.restart()
    member.answer("B", message_id=question_one)  # what the member still sees: question 1
    assert "📝 Câu 2/10" in member.expect("Câu 2/10")
    if messenger.name == "telegram":  # the pressed message itself moves on
        assert member.user.last()["message_id"] == question_one
    answered_elsewhere(province, "DV017", range(2, 11))  # to the end; the result is lost as well
    messenger.restart()
    member.answer("A", message_id=question_one)
    assert "Số câu đúng:" in member.expect("Kết quả bài kiểm tra")
    assert count(province, Answer) == 10


def test_member_continues_after_a_restart(messenger, province):
    member = messenger.link("DV007", 8401)
    member.say("/lambai")
    member.expect("Câu 1/10")
    for expected in (2, 3):
        member.answer("A")
        member.expect(f"Câu {expected}/10")
    attempt_id, _, _ = quiz_state(province, "DV007")

    def shown() -> list[int]:
        with province.session() as s:
            return list(s.scalars(select(AttemptQuestion.question_id).where(AttemptQuestion.attempt_id == attempt_id)
                                  .order_by(AttemptQuestion.position)))

    before = shown()
    messenger.restart()  # the process dies mid-quiz
    member.say("/lambai")
    assert "Câu 3/10" in member.expect("Câu 3/10")
    assert shown() == before and count(province, Attempt) == 1


def test_attempts_run_out_after_the_documents_maximum(messenger, province):
    member = messenger.link("DV014", 8901)
    with province.session() as s:  # two attempts done already
        m = s.scalar(select(Member).where(Member.code == "DV014"))
        rnd = quiz.open_rounds_for(s, m, utcnow())[0]
        for _ in range(2):
            position = quiz.start_or_resume(s, rnd, m, utcnow())
            for p in range(1, 11):
                quiz.answer(s, m.id, position.attempt.id, p, 0, utcnow())
    assert "Lần làm bài: 3/3" in take_quiz(member, province, "DV014", letter="A")
    member.say("/lambai")
    assert "đã dùng hết 3 lượt làm bài" in member.expect("lượt")
    assert count(province, Attempt) == 3


def test_answers_after_the_round_closes_are_refused(messenger, province):
    from bot.services.rounds import close_round

    member = messenger.link("DV016", 9101)
    member.say("/lambai")
    member.expect("Câu 1/10")
    with province.session() as s:
        close_round(s, 1, utcnow())
    member.answer("A")
    assert "Đợt học tập đã kết thúc, không thể ghi nhận thêm." in member.feedback()
    member.say("/lambai")
    assert "chưa có đợt học tập nào đang mở" in member.expect("đợt học tập")
    assert count(province, Answer) == 0


def test_flood_control_never_reaches_the_member(messenger):
    member = messenger.link("DV008", 8501)
    member.say("/lambai")
    member.expect("Câu 1/10")
    messenger.flood_control_once()
    member.answer("A")
    assert "Câu 2/10" in member.expect("Câu 2/10", timeout=8)


# -- one member, two messengers ----------------------------------------------------------------
@pytest.fixture
def both(province, emulator, zalo_emulator, invite, zalo_invite):  # noqa: F811 - pytest fixtures
    telegram = BotProcess(province, emulator).start()
    zalo = ZaloProcess(province, zalo_emulator).start()
    yield (Messenger("telegram", 4096, telegram, emulator, invite),
           Messenger("zalo", 2000, zalo, zalo_emulator, zalo_invite))
    zalo.stop()
    telegram.stop()


def test_a_quiz_started_on_telegram_is_finished_on_zalo(both, province):
    telegram, zalo = both
    on_telegram = telegram.link("DV009", 7001)
    on_zalo = zalo.link("DV009", 7002)
    on_telegram.say("/lambai")
    on_telegram.expect("Câu 1/10")
    for position in range(1, 5):
        on_telegram.answer("A")
        on_telegram.expect(f"Câu {position + 1}/10")
    on_zalo.say("làm bài")
    assert "📝 Câu 5/10" in on_zalo.expect("Câu 5/10")  # the next unanswered question
    for position in range(5, 11):
        on_zalo.answer("b")
        on_zalo.expect(f"Câu {position + 1}/10" if position < 10 else "lượt làm bài")
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 1
        assert s.scalar(select(func.count()).select_from(Answer)) == 10
        assert s.scalar(select(Attempt.submitted_at)) is not None
    on_telegram.say("/ketqua")
    history = on_telegram.expect("Kết quả của đồng chí")
    assert history.count("Lần ") == 1 and "Lần 1:" in history  # the member counts once


def test_hoctap_run_serves_every_configured_messenger(province, emulator, zalo_emulator, invite, zalo_invite):  # noqa: F811
    from bot.app import serve
    from bot.config import SchedulerSettings, Settings, TelegramSettings, ZaloSettings

    settings = Settings(database_url=province.url,
                        telegram=TelegramSettings(token=emulator.token, api_base_url=emulator.base_url),
                        zalo=ZaloSettings(token=zalo_emulator.token, api_base_url=zalo_emulator.base_url),
                        scheduler=SchedulerSettings(tick_seconds=3600))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve(settings, province, stop)), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not zalo_emulator.calls("getUpdates") and time.monotonic() < deadline:
            time.sleep(0.01)
        tg = Messenger("telegram", 4096, None, emulator, invite).link("DV010", 7101)
        zl = Messenger("zalo", 2000, None, zalo_emulator, zalo_invite).link("DV011", 7102)
        tg.say("/hoc")
        zl.say("hoc")
        assert "64-KH/TU" in tg.expect("Hạn hoàn thành") and "👉 Gõ 1: Đọc 64-KH/TU" in zl.expect("Hạn")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
    assert not thread.is_alive()
    with province.session() as s:
        assert sorted(s.scalars(select(ChatAccount.channel))) == ["telegram", "zalo"]
