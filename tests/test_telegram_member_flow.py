"""A member on Telegram, end to end: the real PTB Application over HTTP against the emulator."""

from __future__ import annotations

import logging
import time
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot.storage.models import Answer, Attempt, AttemptQuestion, ChatAccount, Member, StudyView

LETTERS = "ABCDEF"


def texts(user) -> list[str]:
    return [m.get("text", "") for m in user.messages]


def buttons(message) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [b["text"] for row in rows for b in row]


def link(emulator, invite, member_code: str, user_id: int):
    user = emulator.user(user_id, first_name="Đảng viên")
    user.send_text(f"/start {invite(member_code)}")
    user.wait_for(lambda u: "Liên kết thành công" in (u.last() or {}).get("text", ""))
    return user


def quiz_state(db, member_code: str):
    """(attempt id, next position, shown letter of the right answer) of the member's open attempt."""
    with db.session() as s:
        attempt = s.scalar(select(Attempt).join(Member).where(Member.code == member_code, Attempt.submitted_at.is_(None)))
        answered = set(s.scalars(select(Answer.position).where(Answer.attempt_id == attempt.id)))
        aq = next(q for q in attempt.questions if q.position not in answered)
        return attempt.id, aq.position, LETTERS[aq.option_order.index(aq.question.answer_index)]


def wrong_letter(db, member_code: str) -> str:
    """A wrong answer to the member's current question, as the buttons show it."""
    _attempt, _position, right = quiz_state(db, member_code)
    return next(letter for letter in "ABCD" if letter != right)


def answer_wrongly(user, db, member_code: str, message_id: int, questions: int) -> str:
    """Tap a wrong answer to each of the first ``questions`` questions, each time waiting for the next one
    (not after question 10: the result); returns the last letter tapped."""
    for position in range(1, questions + 1):
        letter = wrong_letter(db, member_code)
        user.press(letter, message_id=message_id)
        if position < 10:
            user.wait_for(lambda u: f"Câu {position + 1}/10" in u.messages[-1]["text"])
    return letter


def wait_text(user, fragment: str, timeout: float = 5.0):
    return user.wait_for(lambda u: any(fragment in m.get("text", "") for m in u.messages), timeout=timeout)


def test_unlinked_user_only_learns_how_to_link(telegram_bot, emulator):
    stranger = emulator.user(5001, first_name="Lạ")
    for text in ("/hoc", "xin chào", "/ketqua"):
        stranger.send_text(text)
        stranger.wait_for()
    assert all("chưa liên kết tài khoản" in t for t in texts(stranger))
    assert stranger.reply_keyboard["keyboard"][0][0]["request_contact"] is True
    assert not any("64-KH/TU" in t for t in texts(stranger))


def test_bot_sets_its_vietnamese_command_menu(telegram_bot, emulator):
    deadline = time.monotonic() + 5
    while not emulator.my_commands() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [c["command"] for c in emulator.my_commands()] == ["hoc", "lambai", "ketqua", "trogiup"]
    assert emulator.my_commands()[0]["description"] == "Đọc tài liệu đợt học tập"


def test_deep_link_code_links_once(telegram_bot, emulator, invite, province):
    code = invite("DV002")
    lan = emulator.user(6001)
    lan.send_text(f"/start {code}")
    reply = lan.wait_for()
    assert "Liên kết thành công! Xin chào đồng chí Đinh Văn Sơn" in reply["text"]
    other = emulator.user(6002)
    other.send_text(f"/start {code}")
    assert "đã được sử dụng" in other.wait_for()["text"]
    with province.session() as s:
        accounts = s.execute(select(ChatAccount.external_id, Member.code).join(Member)).all()
    assert [tuple(a) for a in accounts] == [("6001", "DV002")]


def test_a_link_code_posted_in_a_group_is_cancelled_and_commands_for_other_bots_are_left_alone(
        telegram_bot, emulator, invite):
    """Everyone in the group read the code: it no longer links anyone (the member asks for a new one); a command
    meant for another bot in the group gets nothing from this one."""
    code = invite("DV003")
    emulator.user(6101, first_name="Lan")
    emulator.group_says(-1001, 6101, f"/start@{emulator.bot_user['username']} {code}")
    deadline = time.monotonic() + 5
    while not emulator.group_messages(-1001) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "đã bị hủy" in emulator.group_messages(-1001)[-1]["text"]
    reader = emulator.user(6102)
    reader.send_text(f"/start {code}")
    assert "Liên kết thành công" not in reader.wait_for()["text"]
    emulator.group_says(-1001, 6101, "/help@SomeOtherBot")
    emulator.group_says(-1001, 6101, "/trogiup")
    while len(emulator.group_messages(-1001)) < 2 and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    time.sleep(0.3)
    assert len(emulator.group_messages(-1001)) == 2  # the code's warning, and the answer to /trogiup only


def test_sharing_own_phone_links_but_someone_elses_does_not(telegram_bot, emulator):
    user = emulator.user(7001)
    user.send_contact("+84333378379", user_id=7999)  # DV002's number, but not this user's contact
    assert "chỉ có thể chia sẻ số điện thoại của chính mình" in user.wait_for()["text"]
    user.send_contact("0999 000 111")
    assert "Không tìm thấy đảng viên" in user.wait_for()["text"]
    user.send_contact("+84333378379")
    assert "Liên kết thành công! Xin chào đồng chí Đinh Văn Sơn" in user.wait_for()["text"]
    assert user.reply_keyboard is None  # the share-phone keyboard is gone once linked


def test_member_reads_summary_then_sees_key_points_and_quiz_button(telegram_bot, emulator, invite, province):
    user = link(emulator, invite, "DV003", 8001)
    user.send_text("/hoc")
    listing = user.wait_for()
    assert "64-KH/TU" in listing["text"] and "Hạn hoàn thành" in listing["text"]
    user.press(buttons(listing)[0])
    first_page = user.wait_for(lambda u: (u.last() or {}).get("text", "").startswith("📖"))
    assert first_page["text"].startswith("📖 64-KH/TU: Kế hoạch")
    page = first_page
    while "Tiếp ›" in buttons(page):  # a summary longer than one message comes in pages
        count = len(user.messages)
        user.press("Tiếp ›", message_id=page["message_id"])
        page = user.wait_for(lambda u: len(u.messages) > count and buttons(u.last() or {}))
    last = user.wait_for(lambda u: "Làm bài kiểm tra" in buttons(u.last() or {}))
    assert "Những điểm chính" in last["text"]
    assert all(len(m["text"]) <= 4096 for m in user.messages)
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(StudyView)) == 1


def test_member_takes_the_whole_quiz_in_one_edited_message(telegram_bot, emulator, invite, province):
    user = link(emulator, invite, "DV004", 8101)
    emulator.reset_log()
    user.send_text("/lambai")
    first = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    quiz_message = first["message_id"]
    assert buttons(first) == ["A", "B", "C", "D"]
    for expected in range(1, 11):
        _attempt, position, right = quiz_state(province, "DV004")
        assert position == expected
        wrong = next(letter for letter in "ABCD" if letter != right)
        user.press(right if position > 2 else wrong, message_id=quiz_message)
        if position < 10:
            user.wait_for(lambda u: f"Câu {position + 1}/10" in u.messages[-1]["text"])
            assert user.last()["message_id"] == quiz_message  # edited in place, not a new message
    result = wait_text(user, "Kết quả bài kiểm tra")
    assert "Số câu đúng: 8/10 — 80%" in result["text"]
    assert "Kết quả: ĐẠT ✅" in result["text"]
    assert result["text"].count("Đáp án đúng:") == 2 and "Giải thích: Mục" in result["text"]
    assert "còn 2 lượt làm bài" in result["text"]
    assert result["message_id"] == quiz_message  # the question message became the result
    sent = [m for m, p in emulator.requests if m in ("sendMessage", "editMessageText") and str(p.get("chat_id")) == "8101"]
    assert len(sent) <= 12
    with province.session() as s:
        attempt = s.scalar(select(Attempt))
        assert (attempt.correct_count, attempt.score, attempt.passed) == (8, 80.0, True)
        assert s.scalar(select(func.count()).select_from(Answer)) == 10
    user.send_text("/ketqua")  # (the last press's toast may still come: wait for the history itself)
    history = user.wait_for(lambda u: "Lần 1:" in (u.last() or {}).get("text", ""))
    assert "Lần 1: 8/10 câu đúng — 80% — đạt" in history["text"]


def test_double_tap_records_one_answer(telegram_bot, emulator, invite, province):
    user = link(emulator, invite, "DV005", 8201)
    user.send_text("/lambai")
    question = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    user.press("B", message_id=question["message_id"])
    user.press("C", message_id=question["message_id"])  # the second tap carries question 1's data
    user.wait_for(lambda u: len(u.callback_answers) == 2)
    assert user.callback_answers[1]["text"] == "Câu này đã được ghi nhận rồi."
    with province.session() as s:
        rows = s.execute(select(Answer.position)).all()
    assert [r.position for r in rows] == [1]
    assert "Câu 2/10" in user.last()["text"]


def test_the_next_question_does_not_wait_for_the_buttons_toast(telegram_bot, emulator, invite, province):
    """The toast and the next question go out at once: a slow answer to the toast holds nothing up."""
    user = link(emulator, invite, "DV005", 8251)
    user.send_text("/lambai")
    question = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    emulator.hold_method("answerCallbackQuery")
    try:
        user.press("B", message_id=question["message_id"])
        user.wait_for(lambda u: "Câu 2/10" in u.last()["text"])
        assert user.callback_answers == []  # the toast is still on its way
    finally:
        emulator.release_method("answerCallbackQuery")
    user.wait_for(lambda u: len(u.callback_answers) == 1)  # and the spinner stops too


def test_a_toast_telegram_refuses_or_delays_holds_up_neither_the_next_question_nor_the_next_tap(
        telegram_bot, emulator, invite, province, caplog):
    """Flood control on the toast (30 s) or a failing toast: the toast is left out, once, and the member goes on
    answering at full speed; nothing is logged as a failed update."""
    user = link(emulator, invite, "DV007", 8261)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    emulator.inject_error("answerCallbackQuery", 429, retry_after=30)
    emulator.inject_error("answerCallbackQuery", 500, after=1)
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        for position in (1, 2):
            user.press("B", message_id=q["message_id"])
            user.wait_for(lambda u: f"Câu {position + 1}/10" in u.last()["text"], timeout=10)
    assert time.monotonic() - started < 5  # not the 30 s Telegram asked to wait
    while len(emulator.calls("answerCallbackQuery")) < 2 and time.monotonic() - started < 10:
        time.sleep(0.05)  # the second toast travels beside its edit
    time.sleep(0.5)  # a retry would have come by now
    assert len(emulator.calls("answerCallbackQuery")) == 2  # each toast tried once, neither retried
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 2


def test_stale_button_from_an_old_message_is_harmless(telegram_bot, emulator, invite, province):
    user = link(emulator, invite, "DV006", 8301)
    user.send_text("/lambai")
    old = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    user.send_text("/lambai")  # shows the current question again, in a new message
    new = user.wait_for(lambda u: u.last()["message_id"] != old["message_id"])
    user.press("A", message_id=new["message_id"])
    user.wait_for(lambda u: "Câu 2/10" in u.last()["text"])
    user.press("D", message_id=old["message_id"])  # question 1's button, already answered
    user.wait_for(lambda u: len(u.callback_answers) == 2)
    assert user.callback_answers[-1]["text"] == "Câu này đã được ghi nhận rồi."
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 1


def test_a_deactivated_member_pressing_a_quiz_button_is_told_they_are_off_the_roster(telegram_bot, emulator, invite,
                                                                                        province):
    user = link(emulator, invite, "DV008", 8351)
    user.send_text("/lambai")
    question = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    with province.session() as s:
        s.scalar(select(Member).where(Member.code == "DV008")).active = False
    user.press("A", message_id=question["message_id"])
    user.wait_for(lambda u: len(u.callback_answers) == 1)
    assert "không còn trong danh sách sinh hoạt" in user.callback_answers[-1]["text"]
    user.send_text("/lambai")
    reply = user.wait_for(lambda u: "không còn trong danh sách sinh hoạt" in (u.last() or {}).get("text", ""))
    assert "liên kết" not in reply["text"]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 0


def test_member_continues_after_a_restart(telegram_bot, emulator, invite, province):
    user = link(emulator, invite, "DV007", 8401)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    for expected in (2, 3):
        user.press("A", message_id=q["message_id"])
        user.wait_for(lambda u: f"Câu {expected}/10" in u.last()["text"])
    attempt_id, _, _ = quiz_state(province, "DV007")
    with province.session() as s:
        shown_before = [aq.question_id for aq in s.scalars(select(AttemptQuestion).where(AttemptQuestion.attempt_id == attempt_id).order_by(AttemptQuestion.position))]
    telegram_bot.stop()  # the process dies mid-quiz
    telegram_bot.start()
    user.send_text("/lambai")
    resumed = user.wait_for(lambda u: "Câu 3/10" in u.last()["text"])
    with province.session() as s:
        shown_after = [aq.question_id for aq in s.scalars(select(AttemptQuestion).where(AttemptQuestion.attempt_id == attempt_id).order_by(AttemptQuestion.position))]
        assert s.scalar(select(func.count()).select_from(Attempt)) == 1
    assert shown_after == shown_before
    assert buttons(resumed) == ["A", "B", "C", "D"]



def test_flood_control_and_server_errors_never_reach_the_member(telegram_bot, emulator, invite, province):
    user = link(emulator, invite, "DV008", 8501)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    emulator.inject_error("editMessageText", 429, retry_after=1)
    user.press("A", message_id=q["message_id"])
    user.wait_for(lambda u: "Câu 2/10" in u.last()["text"], timeout=8)
    emulator.inject_error("sendMessage", 502, times=2)
    user.send_text("/ketqua")
    assert "đang làm dở" in user.wait_for(timeout=8)["text"]
    assert len(emulator.calls("editMessageText")) >= 2  # the refused edit was tried again


def test_one_failing_update_does_not_stop_the_bot(telegram_bot, emulator, invite):
    user = link(emulator, invite, "DV009", 8601)
    emulator.inject_error("sendMessage", 400, description="Bad Request: chat not found", chat_id=8601)
    user.send_text("/trogiup")
    time.sleep(0.5)
    user.send_text("/trogiup")
    reply = user.wait_for(lambda u: "Các lệnh đồng chí dùng được" in u.last()["text"])
    assert "/lambai" in reply["text"]


def test_an_edited_or_business_message_or_one_without_a_sender_gets_no_reply_and_no_traceback(
        telegram_bot, emulator, invite, caplog):
    """An edited /ketqua is not a new command, a business chat's message is not the member's own chat, and a
    message without ``from`` names nobody: none is answered, none logs an error."""
    user = link(emulator, invite, "DV003", 9302)
    sent = user.send_text("/ketqua")
    user.wait_for(lambda u: "Liên kết thành công" not in u.messages[-1]["text"])
    answered = len(user.messages)
    caplog.clear()
    user.edit_text(sent["message_id"], "/hoc")
    chat = {"id": user.id, "type": "private", "first_name": "Đảng viên"}
    emulator.deliver("business_message", {"message_id": 90, "business_connection_id": "b-1", "date": int(time.time()),
                                          "from": {"id": user.id, "is_bot": False, "first_name": "Đảng viên"},
                                          "chat": chat, "text": "/hoc"})
    emulator.deliver("message", {"message_id": 91, "date": int(time.time()), "chat": chat, "text": "/hoc"})
    user.send_text("/trogiup")  # handled after the three above (one chat's updates go in order)
    user.wait_for(lambda u: len(u.messages) > answered)
    time.sleep(0.3)
    assert len(user.messages) == answered + 1 and "64-KH/TU" not in user.messages[-1]["text"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_stray_messages_get_a_hint_never_silence(telegram_bot, emulator, invite):
    user = link(emulator, invite, "DV010", 8701)
    user.send_text("cho tôi hỏi")
    assert "Gõ /hoc để đọc tài liệu" in user.wait_for()["text"]
    user.send_document("anh.pdf", b"%PDF-1.4")
    assert "Gõ /hoc để đọc tài liệu" in user.wait_for()["text"]


def test_a_letter_typed_with_no_quiz_under_way_points_to_the_slash_commands(telegram_bot, emulator, invite):
    """Telegram members use /ketqua and /lambai (the menu): the hint names those, not Zalo's typed words."""
    user = link(emulator, invite, "DV003", 9303)
    user.send_text("a")
    hint = user.wait_for(lambda u: "đang làm dở" in u.messages[-1]["text"])["text"]
    assert "/ketqua" in hint and "/lambai" in hint and "KẾT QUẢ" not in hint and "LÀM BÀI" not in hint


def test_attempts_run_out_after_the_documents_maximum(telegram_bot, emulator, invite, province):
    user = link(emulator, invite, "DV014", 8901)
    for attempt in range(1, 4):
        user.send_text("/lambai")
        q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
        for position in range(1, 11):
            user.press("A", message_id=q["message_id"])
            if position < 10:
                user.wait_for(lambda u: f"Câu {position + 1}/10" in u.last()["text"])
        wait_text(user, f"Lần làm bài: {attempt}/3")
        user.wait_for(lambda u: "lượt làm bài" in u.last()["text"])  # the result's last part is in
    user.send_text("/lambai")
    assert "đã dùng hết 3 lượt làm bài" in user.wait_for(lambda u: "đã dùng hết 3" in u.last()["text"])["text"]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 3


def test_a_long_summary_is_paged_with_a_next_button(telegram_bot, emulator, invite, province):
    from bot.storage.models import Document

    with province.session() as s:
        doc = s.get(Document, "kh-64-tu-binh-phuoc")
        doc.summary = "\n\n".join(f"Đoạn {i}: " + "nội dung nghị quyết " * 40 for i in range(1, 13))
    user = link(emulator, invite, "DV015", 9001)
    user.send_text("/hoc")
    user.press("1. Đọc 64-KH/TU", message_id=user.wait_for()["message_id"])
    page = user.wait_for(lambda u: "Tiếp ›" in buttons(u.last() or {}))
    assert "(Trang 1/3)" in page["text"]
    for expected in (2, 3):
        user.press("Tiếp ›", message_id=page["message_id"])
        page = user.wait_for(lambda u: f"(Trang {expected}/3)" in "".join(texts(u)))
    user.wait_for(lambda u: "Làm bài kiểm tra" in buttons(u.last() or {}))
    pages = [t for t in texts(user) if "(Trang " in t]
    assert len(pages) == 3 and all(len(t) <= 4096 for t in pages)
    joined = " ".join(pages)
    assert all(f"Đoạn {i}:" in joined for i in range(1, 13))


def test_answers_after_the_round_closes_are_refused(telegram_bot, emulator, invite, province):
    from bot.services.rounds import close_round
    from bot.timeutil import utcnow

    user = link(emulator, invite, "DV016", 9101)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    with province.session() as s:
        close_round(s, 1, utcnow())
    user.press("A", message_id=q["message_id"])
    user.wait_for(lambda u: len(u.callback_answers) == 1)
    assert user.callback_answers[0]["text"] == "Đợt học tập đã kết thúc, không thể ghi nhận thêm."
    user.send_text("/lambai")
    assert "chưa có đợt học tập nào đang mở" in user.wait_for()["text"]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 0


def test_an_all_wrong_quiz_fails_and_explains_every_question(telegram_bot, emulator, invite, province):
    user = link(emulator, invite, "DV017", 9201)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    answer_wrongly(user, province, "DV017", q["message_id"], 10)
    wait_text(user, "còn 2 lượt làm bài")  # the last part of a result too long for one message
    parts = [t for t in texts(user) if "Kết quả bài kiểm tra" in t or "Đáp án đúng" in t]
    assert all(len(p) <= 4096 for p in parts), user.transcript()
    text = "\n".join(parts)
    assert "Số câu đúng: 0/10 — 0%" in text and "CHƯA ĐẠT ❌" in text
    assert text.count("Đáp án đúng:") == 10


def test_a_double_tap_on_the_last_question_shows_the_long_result_once(telegram_bot, emulator, invite, province):
    """The review of an all-wrong quiz takes two messages; an impatient second tap on question 10 leaves the
    result in place and sends none of it again."""
    user = link(emulator, invite, "DV018", 9251)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    wrong = answer_wrongly(user, province, "DV018", q["message_id"], 10)
    user.press(wrong, message_id=q["message_id"])  # the second tap, on the same question 10
    user.wait_for(lambda u: len(u.callback_answers) == 11)
    wait_text(user, "còn 2 lượt làm bài")
    time.sleep(0.5)  # anything the second tap sent has arrived by now
    sent = texts(user)
    assert len(sent) == len(set(sent)), user.transcript()
    assert sum("Đáp án đúng:" in t for t in sent if "Kết quả bài kiểm tra" not in t) == 1  # the review's second part
    assert user.callback_answers[-1]["text"] == "Câu này đã được ghi nhận rồi."


def test_answering_faster_than_telegram_allows_never_shows_an_error(province, invite):
    """Telegram accepts about one message per second into a chat; the bot waits instead of failing."""
    from bot.emulators.telegram import TelegramEmulator
    from tests.conftest import BotProcess

    with TelegramEmulator(flood_limit_per_chat=1.0) as emulator:
        bot = BotProcess(province, emulator).start()
        try:
            user = emulator.user(9301)
            user.send_text(f"/start {invite('DV018')}")
            user.wait_for()
            time.sleep(1.1)
            user.send_text("/lambai")
            user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""), timeout=10)
            for letter in "ABC":  # three typed answers within a second, each answered by a message
                user.send_text(letter)
            user.wait_for(lambda u: "Câu 4/10" in u.last()["text"], timeout=15)
        finally:
            bot.stop()
        refused = [e for e in emulator.requests if e[0] == "sendMessage"]
    texts = [m["text"] for m in user.messages]
    assert [t.split("\n")[0] for t in texts[-3:]] == [
        "✔️ Đã ghi nhận câu 1: A.", "✔️ Đã ghi nhận câu 2: B.", "✔️ Đã ghi nhận câu 3: C."]
    assert len(refused) > len(texts)  # some sends were refused with 429 and made again after the wait


def test_a_tap_after_a_crash_that_lost_the_reply_edits_the_message_to_where_the_member_is(
        telegram_bot, emulator, invite, province):
    """The bot recorded question 1 and died before replying: the member still sees question 1."""
    user = link(emulator, invite, "DV019", 9401)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    emulator.inject_error("editMessageText", 400, description="Bad Request: message to edit not found")
    emulator.inject_error("sendMessage", 400, description="Bad Request: chat not found")
    user.press("B", message_id=q["message_id"])  # recorded; both ways of replying fail
    user.wait_for(lambda u: len(u.callback_answers) == 1)
    telegram_bot.stop()
    telegram_bot.start()
    assert "Câu 1/10" in user.messages[-1]["text"]
    user.press("B", message_id=q["message_id"])
    edited = user.wait_for(lambda u: "Câu 2/10" in u.messages[-1]["text"])
    assert edited["message_id"] == q["message_id"]
    assert edited["text"].startswith("✔️ Đã ghi nhận câu 1: B.")
    assert buttons(edited) == ["A", "B", "C", "D"]
    user.wait_for(lambda u: len(u.callback_answers) == 2)  # the toast travels beside the edit
    assert user.callback_answers[-1]["text"] == "Câu này đã được ghi nhận rồi."
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 1


def test_a_tap_on_the_last_question_after_the_quiz_was_submitted_shows_the_result(
        telegram_bot, emulator, invite, province):
    from bot.services import quiz
    from bot.timeutil import utcnow

    user = link(emulator, invite, "DV020", 9501)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    attempt_id, _, _ = quiz_state(province, "DV020")
    with province.session() as s:  # answered to the end, the last reply lost
        member = s.scalar(select(Member).where(Member.code == "DV020"))
        held = s.get(Attempt, attempt_id)  # as the study page holds it while answering
        for position in range(1, 11):
            assert quiz.answer(s, member.id, attempt_id, position, 0, utcnow()).status == "recorded"
        assert held.submitted_at is not None and held.score is not None  # the same session sees the submission
    user.press("A", message_id=q["message_id"])
    user.wait_for(lambda u: any("Kết quả bài kiểm tra" in m["text"] for m in u.messages))
    shown = next(m for m in user.messages if "Kết quả bài kiểm tra" in m["text"])
    assert shown["message_id"] == q["message_id"] and buttons(shown) == []
    assert "Số câu đúng:" in shown["text"]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 10


def test_a_long_flood_wait_after_an_answer_is_logged_and_the_question_comes_from_the_outbox(
        telegram_bot, emulator, invite, province, caplog):
    import asyncio
    from datetime import timedelta

    from telegram import Bot

    from bot.channels.telegram import MAX_TRIES, TelegramTransport
    from bot.outbox.queue import QuietHours
    from bot.outbox.sender import OutboxSender
    from bot.storage.models import OutboxMessage
    from bot.timeutil import utcnow

    user = link(emulator, invite, "DV021", 9601)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    emulator.inject_error("editMessageText", 429, retry_after=1, times=MAX_TRIES)
    caplog.set_level("WARNING", logger="bot.channels.telegram")
    user.press("C", message_id=q["message_id"])
    deadline = time.monotonic() + MAX_TRIES + 5
    while time.monotonic() < deadline and not any("outbox" in r.getMessage() for r in caplog.records):
        time.sleep(0.1)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("editMessageText: still under flood control" in w for w in warnings), warnings
    assert any("queued in the outbox" in w for w in warnings), warnings
    assert not any(emulator.token in w or emulator.token.split(":")[1] in w for w in caplog.text.splitlines())
    assert "Câu 1/10" in user.messages[-1]["text"]  # the limit has not passed yet
    with province.session() as s:
        row = s.scalar(select(OutboxMessage))
        assert (row.purpose, row.status) == ("reply", "pending")
        not_before = row.not_before
    assert utcnow() < not_before

    async def send(at):
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, TelegramTransport(bot) as transport:
            sender = OutboxSender(province, {"telegram": transport}, clock=lambda: at,
                                  quiet=QuietHours((at - timedelta(hours=1)).timetz().replace(tzinfo=None),
                                                   (at + timedelta(hours=1)).timetz().replace(tzinfo=None),
                                                   tz=at.tzinfo),
                                  per_chat_interval=0)
            return await sender.run(until_idle=True)

    assert asyncio.run(send(not_before - timedelta(seconds=0.5))).sent == 0  # not before the limit passes
    assert asyncio.run(send(not_before + timedelta(seconds=1))).sent == 1  # even in quiet hours
    fresh = user.messages[-1]
    assert fresh["message_id"] != q["message_id"]
    assert fresh["text"].startswith("✔️ Đã ghi nhận câu 1: C.") and "📝 Câu 2/10" in fresh["text"]
    user.press("A", message_id=fresh["message_id"])
    user.wait_for(lambda u: "Câu 3/10" in u.messages[-1]["text"])


def test_a_held_back_question_answered_meanwhile_is_not_sent_late(telegram_bot, emulator, invite, province):
    import asyncio
    from datetime import timedelta

    from telegram import Bot

    from bot.channels.telegram import MAX_TRIES, TelegramTransport
    from bot.outbox.sender import OutboxSender
    from bot.storage.models import OutboxMessage

    user = link(emulator, invite, "DV022", 9701)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    emulator.inject_error("editMessageText", 429, retry_after=1, times=MAX_TRIES)
    user.press("C", message_id=q["message_id"])
    deadline = time.monotonic() + MAX_TRIES + 5
    while time.monotonic() < deadline and not _count_rows(province, OutboxMessage):
        time.sleep(0.1)
    user.press("A", message_id=q["message_id"])  # a tap on the old message: question 2 appears there
    user.wait_for(lambda u: "Câu 2/10" in u.messages[-1]["text"])
    user.press("A", message_id=q["message_id"])  # and is answered
    user.wait_for(lambda u: "Câu 3/10" in u.messages[-1]["text"])
    sent_before = len(user.messages)
    with province.session() as s:
        at = s.scalar(select(OutboxMessage.not_before)) + timedelta(seconds=1)

    async def send():
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, TelegramTransport(bot) as transport:
            return await OutboxSender(province, {"telegram": transport}, clock=lambda: at,
                                      per_chat_interval=0).run(until_idle=True)

    stats = asyncio.run(send())
    assert (stats.sent, stats.dropped) == (0, 1)
    assert len(user.messages) == sent_before


def _count_rows(db, model) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_a_redelivered_button_press_records_nothing_twice_sends_nothing_new_and_logs_no_error(
        telegram_bot, emulator, invite, province, caplog):
    user = link(emulator, invite, "DV023", 9801)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    user.press("A", message_id=q["message_id"])
    user.wait_for(lambda u: "Câu 2/10" in u.messages[-1]["text"] and len(u.callback_answers) == 1)
    telegram_bot.stop()
    calls = len(emulator.requests)
    emulator.replay_last(9801)  # Telegram hands the press out again (its offset was never confirmed)
    caplog.clear()
    telegram_bot.start()
    deadline = time.monotonic() + 5
    while emulator.updates_pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the handler runs after the update is taken
    after = [m for m, _ in emulator.requests[calls:]]
    assert emulator.updates_pending() == 0
    assert "sendMessage" not in after  # at most the same edit again (and an answer Telegram refuses as too old)
    assert "Câu 2/10" in user.messages[-1]["text"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 1
    user.press("B", message_id=q["message_id"])
    user.wait_for(lambda u: "Câu 3/10" in u.messages[-1]["text"])


def pressed_a_and_died(telegram_bot, emulator, invite, province, member_code: str, user_id: int):
    """The member starts the quiz and presses A while the bot is down; a process that died recorded the press and
    never replied (its service called here). Returns the member, the press's callback query id and what the dead
    process recorded."""
    from bot.channels.telegram import TRAITS
    from bot.services.chat import ChatService
    from bot.timeutil import utcnow

    user = link(emulator, invite, member_code, user_id)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    telegram_bot.stop()
    query_id = user.press("A", message_id=q["message_id"])
    data = next(b["callback_data"] for row in q["reply_markup"]["inline_keyboard"] for b in row
                if b["text"].startswith("A"))
    service = ChatService(province, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"))
    recorded = service.on_action(str(user.id), data, utcnow(), str(int(query_id) - 4_000_000_000_000_000))
    return user, query_id, recorded


def test_a_press_recorded_by_a_process_that_died_before_replying_shows_the_next_question_when_redelivered(
        telegram_bot, emulator, invite, province):
    """kill -9 between the commit and the edit: Telegram hands the press out again, and the member sees the next
    question in place of the one they answered, with the answer recorded once."""
    user, _query_id, recorded = pressed_a_and_died(telegram_bot, emulator, invite, province, "DV024", 9802)
    assert "Câu 2/10" in recorded.replies[-1].text
    assert "Câu 1/10" in user.messages[-1]["text"]  # ... and never replied
    telegram_bot.start()
    user.wait_for(lambda u: "Câu 2/10" in u.messages[-1]["text"], timeout=10)
    assert len([m for m in user.messages if "Câu " in m.get("text", "")]) == 1  # edited in place, nothing new
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 1


def test_a_redelivered_press_whose_answer_was_lost_stops_the_button_spinning(telegram_bot, emulator, invite,
                                                                           province, caplog):
    """kill -9 between the commit and the answer: the redelivered press answers the callback query too, so the
    member's button does not spin on, and the answer is recorded once."""
    user, query_id, _recorded = pressed_a_and_died(telegram_bot, emulator, invite, province, "DV024", 9811)
    caplog.clear()
    telegram_bot.start()
    user.wait_for(lambda u: "Câu 2/10" in u.messages[-1]["text"] and len(u.callback_answers) == 1, timeout=10)
    assert user.callback_answers[0]["callback_query_id"] == query_id
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("bot.")]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 1


def test_a_lambai_recorded_by_a_process_that_died_before_replying_still_shows_question_1_when_redelivered(
        telegram_bot, emulator, invite, province):
    """kill -9 between the commit of /lambai and its reply: Telegram hands the text out again, and the member
    gets the first question of the attempt already begun, not silence and not a second attempt."""
    from bot.channels.telegram import TRAITS
    from bot.services.chat import ChatService
    from bot.timeutil import utcnow

    user = link(emulator, invite, "DV025", 9803)
    telegram_bot.stop()
    user.send_text("/lambai")
    [update_id] = emulator.pending_update_ids()
    service = ChatService(province, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"))  # the process that died: it recorded
    assert "Câu 1/10" in service.on_text(str(user.id), "/lambai", utcnow(), str(update_id)).replies[-1].text
    telegram_bot.start()
    question = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""), timeout=10)
    assert buttons(question) == ["A", "B", "C", "D"]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 1


def test_a_start_link_recorded_by_a_process_that_died_before_replying_tells_the_member_they_are_linked(
        telegram_bot, emulator, invite, province):
    """kill -9 between linking by ``/start CODE`` and the reply: the redelivered link is answered that the account is
    linked (not silence, which leaves the member wondering whether to try the link again), and links nothing twice."""
    from bot.channels.telegram import TRAITS
    from bot.services.chat import ChatService
    from bot.timeutil import utcnow

    user = emulator.user(9812, first_name="Đảng viên")
    telegram_bot.stop()
    code = invite("DV033")
    user.send_text(f"/start {code}")
    [update_id] = emulator.pending_update_ids()
    service = ChatService(province, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"))  # the process that died: it linked
    assert "Liên kết thành công" in service.on_text(str(user.id), f"/start {code}", utcnow(), str(update_id)).replies[0].text
    telegram_bot.start()
    reply = user.wait_for(timeout=10)
    assert "Tài khoản đã được liên kết" in reply["text"] and "Xin chào đồng chí" in reply["text"]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(ChatAccount)) == 1


def fetch_as_a_killed_poller(emulator, province, *, confirm: bool) -> None:
    """What a polling process killed mid-handling leaves: the updates fetched and kept, never handled, and (with
    ``confirm``: its next getUpdates had gone out) Telegram holding them no more."""
    import httpx

    from bot.services.inbox import Inbox
    from bot.timeutil import utcnow

    api = f"{emulator.base_url}{emulator.token}/getUpdates"
    updates = httpx.post(api, json={"timeout": 0}, timeout=10).json()["result"]
    assert updates
    Inbox(province, "telegram", "telegram").keep([(str(u["update_id"]), u) for u in updates], utcnow())
    if confirm:
        httpx.post(api, json={"offset": updates[-1]["update_id"] + 1, "timeout": 0}, timeout=10)
        assert emulator.updates_pending() == 0


def test_a_message_fetched_by_a_poller_killed_before_handling_it_is_answered_after_the_restart(
        telegram_bot, emulator, invite, province):
    """Telegram counts an update delivered at the next getUpdates, which goes out while the batch is still
    being handled: a process killed then would lose the member's /lambai. It was kept, and the next process
    answers it, once."""
    user = link(emulator, invite, "DV029", 9807)
    telegram_bot.stop()
    user.send_text("/lambai")
    fetch_as_a_killed_poller(emulator, province, confirm=True)
    telegram_bot.start()
    question = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""), timeout=10)
    assert buttons(question) == ["A", "B", "C", "D"]
    user.press("A", message_id=question["message_id"])  # and the chat goes on
    user.wait_for(lambda u: "Câu 2/10" in u.messages[-1]["text"])
    assert len([m for m in user.messages if "Câu 1/10" in m.get("text", "")]) <= 1
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 1


def test_a_kept_update_telegram_still_holds_is_handled_once_not_twice(telegram_bot, emulator, invite, province):
    """Killed before its next getUpdates: Telegram would hand the update out again beside the kept copy. The
    next process tells Telegram it arrived, then handles the kept copy: one reply, not a reply and a replay."""
    user = link(emulator, invite, "DV030", 9808)
    telegram_bot.stop()
    user.send_text("/ketqua")
    fetch_as_a_killed_poller(emulator, province, confirm=False)
    assert emulator.updates_pending() == 1
    telegram_bot.start()
    user.wait_for(lambda u: u.last() is not None and "/ketqua" not in u.last().get("text", ""), timeout=10)
    time.sleep(1.0)
    replies = [m for m in user.messages if m.get("from", {}).get("is_bot")]
    after = replies[[i for i, m in enumerate(replies) if "Liên kết thành công" in m.get("text", "")][-1] + 1:]
    assert len(after) == 1, [m.get("text") for m in after]


def test_a_typed_answer_recorded_by_a_process_that_died_before_replying_shows_the_next_question_when_redelivered(
        telegram_bot, emulator, invite, province):
    """kill -9 between the commit of a typed "A" and its reply: Telegram hands the text out again, and the member
    sees question 2, instead of silence (then typing "A" again, which would count for question 2 unseen)."""
    from bot.channels.telegram import TRAITS
    from bot.services.chat import ChatService
    from bot.timeutil import utcnow

    user = link(emulator, invite, "DV027", 9805)
    user.send_text("/lambai")
    user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    telegram_bot.stop()
    user.send_text("A")
    [update_id] = emulator.pending_update_ids()
    service = ChatService(province, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"))  # the process that died: it recorded
    assert "Câu 2/10" in service.on_text(str(user.id), "A", utcnow(), str(update_id)).replies[-1].text
    telegram_bot.start()
    question = user.wait_for(lambda u: "Câu 2/10" in (u.last() or {}).get("text", ""), timeout=10)
    assert buttons(question) == ["A", "B", "C", "D"]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 1  # not answered twice


def test_a_typed_answer_a_killed_poller_recorded_but_never_answered_shows_the_next_question_after_the_restart(
        telegram_bot, emulator, invite, province):
    """Polling: the batch was kept, the answer committed, and the process killed before its reply; Telegram is
    told the kept update arrived, so it will not hand it out again: the next process works out what it shows
    now (question 2) and records nothing twice."""
    from bot.channels.telegram import TRAITS
    from bot.services.chat import ChatService
    from bot.timeutil import utcnow

    user = link(emulator, invite, "DV031", 9809)
    user.send_text("/lambai")
    user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    telegram_bot.stop()
    user.send_text("A")
    [update_id] = emulator.pending_update_ids()
    fetch_as_a_killed_poller(emulator, province, confirm=False)
    service = ChatService(province, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"))  # the process that died: it recorded
    assert "Câu 2/10" in service.on_text(str(user.id), "A", utcnow(), str(update_id)).replies[-1].text
    telegram_bot.start()
    user.wait_for(lambda u: "Câu 2/10" in (u.last() or {}).get("text", ""), timeout=10)
    time.sleep(0.5)
    assert emulator.updates_pending() == 0
    assert len([m for m in user.messages if "Câu 2/10" in m.get("text", "")]) == 1
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 1


def test_what_was_answered_before_a_stop_is_not_taken_up_again(telegram_bot, emulator, invite, province):
    user = link(emulator, invite, "DV032", 9810)
    user.send_text("/lambai")
    user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    telegram_bot.stop()
    telegram_bot.start()
    time.sleep(1.0)
    assert len([m for m in user.messages if "Câu 1/10" in m.get("text", "")]) == 1


def test_a_typed_hand_in_recorded_by_a_process_that_died_before_replying_brings_the_result_when_redelivered(
        telegram_bot, emulator, invite, province):
    from bot.channels.telegram import TRAITS
    from bot.services.chat import ChatService
    from bot.timeutil import utcnow

    user = link(emulator, invite, "DV028", 9806)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    answer_wrongly(user, province, "DV028", q["message_id"], 9)
    wrong = wrong_letter(province, "DV028")
    telegram_bot.stop()
    user.send_text(wrong)
    [update_id] = emulator.pending_update_ids()
    service = ChatService(province, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"))  # the process that died: it recorded
    assert "Kết quả bài kiểm tra" in service.on_text(str(user.id), wrong, utcnow(), str(update_id)).replies[0].text
    telegram_bot.start()
    wait_text(user, "còn 2 lượt làm bài", timeout=10)  # the result's last part
    assert "\n".join(texts(user)).count("Đáp án đúng:") == 10
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 10


def test_a_hand_in_recorded_by_a_process_that_died_before_replying_brings_the_whole_result_when_redelivered(
        telegram_bot, emulator, invite, province):
    """kill -9 as the last answer is recorded: the redelivered press turns the question into the result and
    sends the review's second part too, which the member could not get any other way."""
    from bot.channels.telegram import TRAITS
    from bot.services.chat import ChatService
    from bot.timeutil import utcnow

    user = link(emulator, invite, "DV026", 9804)
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
    answer_wrongly(user, province, "DV026", q["message_id"], 9)
    wrong = wrong_letter(province, "DV026")
    telegram_bot.stop()
    query_id = user.press(wrong, message_id=q["message_id"])
    data = next(b["callback_data"] for row in user.messages[-1]["reply_markup"]["inline_keyboard"] for b in row
                if b["text"].startswith(wrong))
    update_id = int(query_id) - 4_000_000_000_000_000
    service = ChatService(province, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"))  # the process that died: it recorded
    assert len(service.on_action(str(user.id), data, utcnow(), str(update_id)).replies) == 2
    telegram_bot.start()
    wait_text(user, "còn 2 lượt làm bài", timeout=10)  # the result's last part
    assert "Kết quả bài kiểm tra" in next(m for m in user.messages if m["message_id"] == q["message_id"])["text"]
    assert "\n".join(texts(user)).count("Đáp án đúng:") == 10


def test_a_press_too_old_to_answer_still_moves_on_without_a_traceback(province, invite, caplog):
    from bot.emulators.telegram import TelegramEmulator
    from tests.conftest import BotProcess

    with TelegramEmulator(callback_query_ttl=0.0) as emulator:  # every answerCallbackQuery is "too old"
        bot = BotProcess(province, emulator).start()
        try:
            user = link(emulator, invite, "DV024", 9901)
            user.send_text("/lambai")
            q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""))
            caplog.clear()
            user.press("A", message_id=q["message_id"])
            user.wait_for(lambda u: "Câu 2/10" in u.messages[-1]["text"])
        finally:
            bot.stop()
        assert emulator.calls("answerCallbackQuery")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_member_sending_two_dozen_messages_at_once_does_not_hold_up_another_member(province):
    """Telegram lets about one message a second into a chat: the burst's replies wait their turn in
    their own chat only, holding none of the slots other chats' updates need."""
    from bot.emulators.telegram import TelegramEmulator
    from tests.conftest import BotProcess

    with TelegramEmulator(flood_limit_per_chat=1.0) as emulator:
        bot = BotProcess(province, emulator).start()
        try:
            flooder, other = emulator.user(9501), emulator.user(9502)
            for i in range(24):  # more than the 16 updates handled at once
                flooder.send_text(f"tin nhắn {i}")
            time.sleep(0.5)  # the burst is taken in and its first replies are waiting out 429s
            started = time.monotonic()
            other.send_text("/start")
            other.wait_for(timeout=20)
            waited = time.monotonic() - started
        finally:
            emulator.lift_flood_limit()  # the rest of the burst's replies go at once: the stop need not wait them out
            bot.stop()
    assert waited < 4, f"the other member waited {waited:.1f}s behind someone else's burst"


# a poll as an older Telegram (or a newer python-telegram-bot) has it: the options lack ``persistent_id``
UNREADABLE_POLL = {"poll": {"id": "1", "question": "Họp chi bộ lúc mấy giờ?", "total_voter_count": 0,
                            "options": [{"text": "7 giờ", "voter_count": 0}, {"text": "8 giờ", "voter_count": 0}],
                            "is_closed": False, "is_anonymous": False, "type": "regular",
                            "allows_multiple_answers": False}}


def test_a_message_the_bot_cannot_read_is_skipped_and_the_others_in_its_batch_are_answered(province, caplog):
    """Polling: one update python-telegram-bot cannot parse used to fail its whole batch at every poll; now it alone
    is skipped (a warning naming it), the other members are answered and polling goes on past it."""
    from bot.emulators.telegram import TelegramEmulator
    from tests.conftest import BotProcess

    with TelegramEmulator(self_check=False) as emulator:  # it hands out what the spec would not allow
        bot = BotProcess(province, emulator)
        first, poller, last = emulator.user(9601), emulator.user(9602), emulator.user(9603)
        first.send_text("/trogiup")
        poller.send_content(UNREADABLE_POLL)
        last.send_text("/trogiup")
        poller.send_content(UNREADABLE_POLL)  # the batch's last update: the offset still moves past it
        unreadable = emulator.pending_update_ids()[1::2]
        caplog.clear()
        bot.start()
        try:
            first.wait_for(timeout=10)
            last.wait_for(timeout=10)
            deadline = time.monotonic() + 5
            while emulator.updates_pending() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert emulator.updates_pending() == 0
            first.send_text("/trogiup")  # and the next poll is answered too
            first.wait_for(lambda u: len(u.messages) == 2, timeout=10)
        finally:
            bot.stop()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "cannot read" in r.getMessage()]
    assert [any(str(i) in w for w in warned) for i in unreadable] == [True, True]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_kept_message_the_bot_cannot_read_does_not_stop_the_restart(province, caplog):
    """A kept batch holding an update python-telegram-bot cannot parse (kept before it was checked): the start
    skips it, with a warning, and answers the rest, instead of dying at every start for ten minutes."""
    from bot.emulators.telegram import TelegramEmulator
    from tests.conftest import BotProcess

    with TelegramEmulator(self_check=False) as emulator:
        bot = BotProcess(province, emulator)
        poller, member = emulator.user(9611), emulator.user(9612)
        poller.send_content(UNREADABLE_POLL)
        member.send_text("/trogiup")
        [unreadable, _] = emulator.pending_update_ids()
        fetch_as_a_killed_poller(emulator, province, confirm=True)
        caplog.clear()
        bot.start()
        try:
            member.wait_for(timeout=10)
        finally:
            bot.stop()
    assert any(str(unreadable) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_command_with_a_broken_emoji_lone_surrogate_is_answered_when_polling(telegram_bot, emulator, invite, caplog):
    """JSON allows "\ud800", which no encoder takes: a reply quoting the member's text could not be sent (a
    traceback, no answer); polled updates are read with it replaced by U+FFFD, as webhooks are."""
    member = link(emulator, invite, "DV004", 9701)
    caplog.clear()
    member.send_text("/ngonngu x\ud800")
    member.wait_for(lambda u: "Chưa có tài liệu nào được dịch sang 'x\ufffd'" in u.messages[-1]["text"], timeout=10)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
