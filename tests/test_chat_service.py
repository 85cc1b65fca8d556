"""The conversation rules below the channels: permissions, de-duplication, typed answers."""

from __future__ import annotations

import unicodedata
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bot.services.chat import ChannelTraits, ChatService, parse_command
from bot.services.linking import create_invites
from bot.storage.models import Answer, Attempt, Member
from bot.timeutil import utcnow

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


@pytest.fixture
def service(province):
    return ChatService(province, ChannelTraits("telegram", 4096), TZ)


def linked(service, db, member_code: str, external_id: str):
    with db.session() as s:
        member = s.scalar(select(Member).where(Member.code == member_code))
        code = create_invites(s, [member], utcnow(), channel=service.traits.name)[member.id]
    out = service.on_text(external_id, f"/start {code}", utcnow())
    assert "Liên kết thành công" in out.replies[0].text


def test_a_forged_action_on_someone_elses_attempt_records_nothing(service, province):
    linked(service, province, "DV012", "1")
    linked(service, province, "DV013", "2")
    question = service.on_text("1", "/lambai", utcnow()).replies[0]
    action = question.all_choices()[0].action  # a:<attempt>:1:0, owned by DV012
    outcome = service.on_action("2", action, utcnow())
    assert outcome.replies == [] and outcome.notice == "Bài làm không còn tồn tại."
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 0


def test_a_forged_button_for_a_choice_the_current_question_does_not_have_says_which_it_has(service, province):
    linked(service, province, "DV012", "1")
    question = service.on_text("1", "/lambai", utcnow()).replies[0]
    attempt = question.all_choices()[0].action.split(":")[1]
    outcome = service.on_action("1", f"a:{attempt}:1:9", utcnow())
    assert outcome.replies == []  # the pressed message stays as it is, still answerable
    assert outcome.notice == "Câu này chỉ có các lựa chọn từ A đến D. Đồng chí vui lòng chọn lại."
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 0


def test_reading_a_round_outside_ones_audience_shows_nothing(service, province):
    from datetime import timedelta

    from bot.services.rounds import open_round

    now = utcnow()
    with province.session() as s:
        other = open_round(s, "kh-83-hu-tuy-phuoc", ["DP-TT-02"], now - timedelta(hours=1), now + timedelta(days=1), 98, now)
    linked(service, province, "DV001", "1")  # DP-TT-01: not in round 2's audience
    outcome = service.on_action("1", f"r:{other.id}:1", now)
    assert "không còn mở hoặc không dành cho đơn vị của đồng chí" in outcome.replies[0].text
    assert "83-KH/HU" not in outcome.replies[0].text


def test_a_redelivered_update_is_processed_once(service, province):
    linked(service, province, "DV002", "1")
    first = service.on_text("1", "/lambai", utcnow(), update_key="42")
    choice = first.replies[0].all_choices()[0].action
    answered = service.on_action("1", choice, utcnow(), update_key="43")
    again = service.on_action("1", choice, utcnow(), update_key="43")  # its reply may have been lost: shown again
    assert again.redelivered and [r.text for r in again.replies] == [answered.replies[-1].text]
    assert again.replies[0].edit and "Câu 2/10" in again.replies[0].text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 1


def test_a_redelivered_text_is_answered_again_only_where_the_answer_hands_out_nothing_stored(province):
    """Telegram delivers a text again when its handling did not finish: /lambai is shown again (the member may
    have nothing), but a link code's outcome or a console link, which a replay would get wrong or hand out dead,
    are not (a chat a link code linked is told it is linked)."""
    from bot.channels.telegram import TRAITS
    from bot.services import console_access

    service = ChatService(province, TRAITS, TZ, console_url="https://hoctap.example.vn")
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "CB002"))
        code = create_invites(s, [member], utcnow(), channel="telegram")[member.id]
    first = service.on_text("9", f"/start {code}", utcnow(), update_key="1")
    assert "Liên kết thành công" in first.replies[0].text
    again = service.on_text("9", f"/start {code}", utcnow(), update_key="1")
    assert [r.text.split(" Xin chào")[0] for r in again.replies] == ["Tài khoản đã được liên kết từ trước."]
    console = service.on_text("9", "/quantri", utcnow(), update_key="2")
    assert "/quantri/vao/" in console.replies[0].text
    assert service.on_text("9", "/quantri", utcnow(), update_key="2").replies == []
    with province.session() as s:  # the link that went out still opens
        token = console.replies[0].text.split("/quantri/vao/")[1].split()[0]
        assert console_access.redeem_login(s, token, utcnow(), "127.0.0.1") is not None
    linked(service, province, "DV002", "1")
    shown = service.on_text("1", "/lambai", utcnow(), update_key="3")
    again = service.on_text("1", "/lambai", utcnow(), update_key="3")
    assert again.redelivered and [r.text for r in again.replies] == [r.text for r in shown.replies]
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 1


def test_a_redelivered_hoc_brings_a_study_link_that_opens(province):
    """/hoc handled by a process that died before replying: Telegram delivers it again, and the member gets a
    study link of their own that opens, not silence (a replay rolled back would hand out a dead link)."""
    from bot.channels.telegram import TRAITS
    from bot.services import web_links
    from bot.services.web_links import StudyLinks
    from tests.conftest import WEB_SECRET

    service = ChatService(province, TRAITS, TZ, study_links=StudyLinks("https://hoc.example.vn", WEB_SECRET))
    linked(service, province, "DV002", "1")
    first = service.on_text("1", "/hoc", utcnow(), update_key="5")
    again = service.on_text("1", "/hoc", utcnow(), update_key="5")
    assert again.redelivered and again.replies[0].text == first.replies[0].text
    assert again.replies[0].link.url != first.replies[0].link.url
    with province.session() as s:
        for reply in (first, again):
            token = reply.replies[0].link.url.rsplit("/", 1)[1]
            checked = web_links.check(s, WEB_SECRET, token, utcnow())
            assert checked.ok and checked.member.code == "DV002"


def test_a_tap_long_after_the_quiz_was_handed_in_shows_the_whole_result_a_quick_second_tap_only_its_top(
        service, province):
    """A second tap as the quiz is handed in would repeat the long review the first tap is sending; a tap a
    minute later comes from a member whose result never arrived, and gets all of it."""
    from datetime import timedelta

    from bot.services import quiz
    from bot.storage.models import AttemptQuestion

    linked(service, province, "DV003", "3")
    question = service.on_text("3", "/lambai", utcnow()).replies[0]
    for _ in range(10):
        with province.session() as s:  # a wrong answer each time: the review explains every question
            attempt = s.scalar(select(Attempt).where(Attempt.submitted_at.is_(None)))
            position = quiz.position_of(s, attempt)
            aq = s.get(AttemptQuestion, (attempt.id, position.position))
            wrong = next(i for i, o in enumerate(aq.option_order) if o != aq.question.answer_index)
        last = f"a:{attempt.id}:{position.position}:{wrong}"
        result = service.on_action("3", last, utcnow())
    assert question and len(result.replies) >= 2  # the result took more than one message
    quick = service.on_action("3", last, utcnow() + timedelta(seconds=2))
    late = service.on_action("3", last, utcnow() + timedelta(minutes=1))
    assert len(quick.replies) == 1 and quick.replies[0].edit
    assert [r.text.split("\n")[-1] for r in late.replies[1:]] == [r.text.split("\n")[-1] for r in result.replies[1:]]


@pytest.mark.parametrize("typed", ["A", "b", " c. ", "4", "d.", "đáp án a", "Đáp án: B", "câu C", "Chọn 4", "(b)", "A)",
                                   "a,"])
def test_answers_can_be_typed_as_letters_or_numbers(service, province, typed):
    linked(service, province, "DV003", "1")
    service.on_text("1", "/lambai", utcnow())
    reply = service.on_text("1", typed, utcnow()).replies[0]
    assert reply.text.startswith("✔️ Đã ghi nhận câu 1")
    assert "Câu 2/10" in reply.text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 1


def test_a_letter_beyond_the_options_is_explained(service, province):
    linked(service, province, "DV003", "1")
    service.on_text("1", "/lambai", utcnow())
    assert service.on_text("1", "F", utcnow()).replies[0].text == (
        "Câu này chỉ có các lựa chọn từ A đến D. Đồng chí vui lòng chọn lại.")


@pytest.mark.parametrize(
    "text, expected",
    [("/hoc", ("hoc", "")), ("/lambai@hoctap_bot", ("lambai", "")), ("làm bài", ("lambai", "")),
     ("Lam Bai", ("lambai", "")), ("học", ("hoc", "")), ("/start abc", ("start", "abc")),
     ("KẾT QUẢ", ("ketqua", "")), ("xin chào", (None, "xin chào")),
     ("/thống kê", ("thongke", "")), ("/làm bài", ("lambai", "")), ("/Chưa làm 2", ("chualam", "2")),
     ("\u200b/thongke", ("thongke", "")), ("/thongke\u200b", ("thongke", "")), ("／ＴＨＯＮＧＫＥ", ("thongke", "")),
     ("/hoc tài liệu", ("hoc", "tài liệu")), ("làm bài kiểm tra", ("lambai", "")), ("xem tiếp", ("tiep", "")),
     ("Tiếp theo", ("tiep", ""))],
)
def test_commands_are_understood_with_or_without_slash_and_diacritics(text, expected):
    assert parse_command(text) == expected


def test_a_long_summary_is_paged_within_the_channel_limit(province):
    service = ChatService(province, ChannelTraits("zalo", 2000, has_buttons=False), TZ)
    linked(service, province, "DV004", "z1")
    listing = service.on_text("z1", "/hoc", utcnow()).replies[0]
    page = service.on_action("z1", listing.all_choices()[0].action, utcnow()).replies
    assert len(page) == 1 and "(Trang 1/" in page[0].text
    assert all(len(r.text) <= 2000 for r in page)
    pages = [page[0].text]
    while True:
        replies = service.on_text("z1", "tiếp", utcnow()).replies
        pages.append(replies[0].text)
        if len(replies) == 2:
            assert "Những điểm chính" in replies[1].text
            break
    assert all(len(p) <= 2000 for p in pages) and len(pages) >= 2


def test_attempt_survives_in_the_database_not_in_the_service(province):
    first = ChatService(province, ChannelTraits("telegram", 4096), TZ)
    linked(first, province, "DV005", "1")
    first.on_text("1", "/lambai", utcnow())
    first.on_text("1", "A", utcnow())
    fresh = ChatService(province, ChannelTraits("telegram", 4096), TZ)  # another process
    reply = fresh.on_text("1", "/lambai", utcnow()).replies[0]
    assert "Câu 2/10" in reply.text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 1


def test_an_update_that_fails_is_not_remembered_as_processed(service, province, monkeypatch):
    """The update id is recorded with its work: if the work fails, a redelivery is handled."""
    from bot.storage.models import ProcessedUpdate

    linked(service, province, "DV006", "1")

    def broken(*args, **kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(service, "_quiz_entry", broken)
    with pytest.raises(RuntimeError):
        service.on_text("1", "/lambai", utcnow(), update_key="77")
    with province.session() as s:
        assert s.get(ProcessedUpdate, ("telegram", "77")) is None
    monkeypatch.undo()
    assert "Câu 1/10" in service.on_text("1", "/lambai", utcnow(), update_key="77").replies[0].text


@pytest.mark.parametrize("said", ["ạ", "À!", "Ê", "ạ\u200b", "\u2060ạ", "À ."])
def test_an_interjection_with_a_diacritic_is_never_taken_for_an_answer(service, province, said):
    """"ạ" after a question is politeness, not answer A: nothing is recorded, on Telegram or Zalo."""
    zalo = ChatService(province, ChannelTraits("zalo", 2000, has_buttons=False), TZ)
    linked(service, province, "DV003", "t3")
    linked(zalo, province, "DV004", "z4")
    for chat, who in ((service, "t3"), (zalo, "z4")):
        chat.on_text(who, "/lambai", utcnow())
        reply = chat.on_text(who, said, utcnow()).replies[0].text
        assert not reply.startswith("✔️"), (who, reply)
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 0


@pytest.fixture
def zalo(province):
    return ChatService(province, ChannelTraits("zalo", 2000, has_buttons=False), TZ)


@pytest.mark.parametrize("typed", ["đáp án b", "(B)", "câu b", "b,"])
def test_on_zalo_an_answer_written_as_people_write_it_picks_the_offered_letter(zalo, province, typed):
    linked(zalo, province, "DV003", "z3")
    assert "Câu 1/10" in zalo.on_text("z3", "làm bài", utcnow()).replies[-1].text
    assert zalo.on_text("z3", typed, utcnow()).replies[0].text.startswith("✔️ Đã ghi nhận câu 1")


def test_on_zalo_a_stray_message_between_steps_keeps_the_offered_numbers_working(zalo, province):
    linked(zalo, province, "DV004", "z4")
    listing = zalo.on_text("z4", "học", utcnow()).replies[-1]
    assert [c.typed for c in listing.all_choices()][:1] == ["1"]  # "Gõ 1: Đọc 64-KH/TU"
    assert "chưa hiểu" in zalo.on_text("z4", "ok cảm ơn", utcnow()).replies[0].text
    assert "chưa hiểu" in zalo.on_text("z4", "5", utcnow()).replies[0].text  # a number not on the list: a hint
    assert "64-KH/TU" in zalo.on_text("z4", "1", utcnow()).replies[0].text  # the list is still the one on screen


def test_on_zalo_the_last_answer_typed_twice_is_told_the_quiz_is_handed_in_not_puzzled(zalo, province):
    linked(zalo, province, "DV005", "z5")
    zalo.on_text("z5", "làm bài", utcnow())
    for _ in range(10):
        last = zalo.on_text("z5", "A", utcnow())
    assert any("Kết quả bài kiểm tra" in r.text for r in last.replies)
    again = zalo.on_text("z5", "A", utcnow()).replies
    assert len(again) == 1 and again[0].text.startswith("Đồng chí không có bài kiểm tra nào đang làm dở")
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 10


def test_on_zalo_a_letter_for_a_quiz_handed_in_elsewhere_answers_the_attempt_started_since(zalo, province):
    """"ok" at question 10 keeps its letters on screen; question 10 is then answered and a new attempt started on
    the study page: a typed "B" is for the new attempt's question, not lost on the old one."""
    from bot.services import quiz
    from bot.storage.models import Round

    linked(zalo, province, "DV009", "z9")
    zalo.on_text("z9", "làm bài", utcnow())
    for _ in range(9):
        zalo.on_text("z9", "A", utcnow())
    zalo.on_text("z9", "ok", utcnow())
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV009"))
        first = quiz.in_progress_attempt(s, member.id, utcnow())
        quiz.answer(s, member.id, first.id, 10, 0, utcnow())  # answered on the study page, and handed in
        quiz.start_or_resume(s, s.get(Round, 1), member, utcnow())  # a second attempt, there too
    assert zalo.on_text("z9", "B", utcnow()).replies[0].text.startswith("✔️ Đã ghi nhận câu 1")
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 11


def test_on_zalo_an_old_quizs_letters_do_not_answer_after_its_result_was_shown(zalo, province):
    """The result clears the offer: a later "B" is not taken for the handed-in quiz's question 10."""
    linked(zalo, province, "DV008", "z8")
    zalo.on_text("z8", "làm bài", utcnow())
    for _ in range(10):
        zalo.on_text("z8", "A", utcnow())
    zalo.on_text("z8", "kết quả", utcnow())
    from bot.services import quiz
    from bot.storage.models import Round

    with province.session() as s:  # a second attempt started on the study page, not in this chat
        member = s.scalar(select(Member).where(Member.code == "DV008"))
        quiz.start_or_resume(s, s.get(Round, 1), member, utcnow())
    assert zalo.on_text("z8", "B", utcnow()).replies[0].text.startswith("✔️ Đã ghi nhận câu 1")


def test_on_the_oa_a_replayed_tap_that_answered_the_quiz_under_way_shows_that_quiz_not_the_old_result(province):
    """An old quiz's button answers the quiz under way (no buttons to edit on Zalo). Its reply lost in a kill and
    the tap taken up again after the restart, the member is shown that quiz's next question, not the old result
    with a receipt, and nothing is recorded twice."""
    from bot.channels.zalo_oa import TRAITS as OA
    from bot.services import quiz
    from bot.storage.models import Round

    oa = ChatService(province, OA, TZ)
    linked(oa, province, "DV010", "o10")
    reply = oa.on_text("o10", "/lambai", utcnow()).replies[-1]
    for _ in range(10):
        old_button = reply.all_choices()[0].action
        reply = oa.on_action("o10", old_button, utcnow()).replies[-1]
    with province.session() as s:  # a second attempt, started on the study page
        member = s.scalar(select(Member).where(Member.code == "DV010"))
        quiz.start_or_resume(s, s.get(Round, 1), member, utcnow())
    first = oa.on_action("o10", old_button, utcnow(), update_key="k1")
    assert first.replies[-1].text.startswith("✔️ Đã ghi nhận câu 1") and "Câu 2/10" in first.replies[-1].text
    assert oa.on_action("o10", old_button, utcnow(), update_key="k1").replies == []  # Zalo's retry: sent already
    again = oa.on_action("o10", old_button, utcnow(), update_key="k1", taken_up=True)
    assert "Câu 2/10" in again.replies[-1].text and "Đã ghi nhận câu 10" not in again.replies[-1].text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer)) == 11


def test_a_used_or_foreign_code_counts_as_a_try_and_does_not_start_the_count_afresh(zalo, province):
    """Three wrong codes, then a real but used one (told so), then another wrong one: five tries, the chat pauses;
    typing a used code over and over cannot spend the bot's monthly messages either."""
    from bot.services.linking import format_code

    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV006"))
        used = format_code(create_invites(s, [member], utcnow(), channel="zalo")[member.id])
    assert "Liên kết thành công" in zalo.on_text("owner", used, utcnow()).replies[0].text
    for wrong in ("AAAA-AAAA", "BBBB-BBBB", "CCCC-CCCC"):
        zalo.on_text("guesser", wrong, utcnow())
    assert "đã được sử dụng" in zalo.on_text("guesser", used, utcnow()).replies[0].text
    assert "thử lại sau" in zalo.on_text("guesser", "EEEE-EEEE", utcnow()).replies[0].text
    assert "thử lại sau" in zalo.on_text("guesser", used, utcnow()).replies[0].text  # told once more while paused,
    assert zalo.on_text("guesser", used, utcnow()).replies == []  # then nothing: no reply spends a message


def test_on_telegram_every_try_while_paused_is_told_when_to_retry_and_a_linked_member_stays_told_linked(
        service, province):
    """Telegram replies cost nothing: during the pause after wrong codes, the right code too is told when to try
    again (silence reads as a dead bot); a linked member whose /start carries a code that links nobody is told
    the account is still linked, not offered to share a phone as a stranger would be."""
    from bot.services.linking import format_code

    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV008"))
        good = format_code(create_invites(s, [member], utcnow(), channel="telegram")[member.id])
    for wrong in ("AAAA-AAAA", "BBBB-BBBB", "CCCC-CCCC", "DDDD-DDDD", "EEEE-EEEE", "FFFF-FFFF"):
        service.on_text("guesser", f"/start {wrong}", utcnow())
    for _ in range(2):
        assert "thử lại sau" in service.on_text("guesser", f"/start {good}", utcnow()).replies[0].text
    assert "Liên kết thành công" in service.on_text("owner", f"/start {good}", utcnow()).replies[0].text
    again = service.on_text("owner", "/start ZZZZ-ZZZZ", utcnow()).replies[0]
    assert "Tài khoản đã được liên kết từ trước" in again.text and not again.ask_contact


@pytest.mark.parametrize("said", ["Mã của tôi là {code}", "Đồng chí Lê Văn A: mở bot học tập trên Zalo và gõ mã {code}",
                                  unicodedata.normalize("NFD", "Mã của tôi là {code}")])  # as "Unicode tổ hợp" types it
def test_on_zalo_a_code_quoted_in_a_sentence_or_the_invitations_own_message_links(zalo, province, said):
    from bot.services.linking import format_code

    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV007"))
        code = format_code(create_invites(s, [member], utcnow(), channel="zalo")[member.id])
    assert "Liên kết thành công" in zalo.on_text("z7", said.format(code=code), utcnow()).replies[0].text


def test_typed_numbers_mean_the_last_messages_choices_only(province):
    """With two rounds' figures in one answer, only the last message offers numbers to type."""
    from datetime import timedelta

    from bot.services.rounds import open_round

    now = utcnow()
    with province.session() as s:
        open_round(s, "kh-83-hu-tuy-phuoc", ["DP"], now - timedelta(hours=1), now + timedelta(days=2), 98, now)
    service = ChatService(province, ChannelTraits("zalo", 2000, has_buttons=False), TZ)
    linked(service, province, "CB002", "z9")
    replies = service.on_text("z9", "thống kê", utcnow()).replies
    assert len(replies) == 2 and replies[0].choices == [] and replies[1].choices
    last_round = replies[1].text.split(" — ")[0].split()[-1]
    drilled = service.on_text("z9", "1", utcnow()).replies[0].text
    assert drilled.startswith(f"📊 {last_round} — Đảng bộ bộ phận Tân Tiến")


def test_the_documents_note_is_shown_under_its_title_when_listing_and_reading(service, province):
    linked(service, province, "DV001", "1")
    listing = service.on_text("1", "/hoc", utcnow()).replies[0].text
    assert "64-KH/TU — Kế hoạch nâng cao hiệu quả" in listing
    assert "ℹ️ Kế hoạch giai đoạn 2022 - 2025 của Tỉnh ủy Bình Phước, ban hành trước khi sắp xếp" in listing
    page = service.on_action("1", "r:1:1", utcnow()).replies[0].text
    title, note = page.splitlines()[:2]
    assert title.startswith("📖 64-KH/TU: Kế hoạch nâng cao hiệu quả")
    assert note.startswith("ℹ️ Kế hoạch giai đoạn 2022 - 2025")


def test_a_link_code_with_a_nul_or_other_stray_characters_is_an_unknown_code_on_every_database(service, province):
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV012"))
        code = create_invites(s, [member], utcnow())[member.id]
    for text in ("/start abc\x00def", f"/start {code}\x00", "ABCD\x00EFGH", f"/start {code[:-1]}é"):
        reply = service.on_text("7", text, utcnow()).replies[0].text
        assert "Mã liên kết hoặc số điện thoại không đúng" in reply, text
    assert "Liên kết thành công" in service.on_text("7", f"/start {code}", utcnow()).replies[0].text


def test_a_question_rewritten_in_the_database_is_shown_rewritten_at_the_next_tap_of_a_quiz_under_way(service, province):
    """Question texts are kept in memory once read (a row is never edited: an edit is a new row), but only
    while the row's content hash is the one read with them: a row rewritten with its hash is read again."""
    from sqlalchemy import update

    from bot.storage.models import Question

    linked(service, province, "DV006", "1")
    first = service.on_text("1", "/lambai", utcnow()).replies[0]
    assert "Câu 1/10" in first.text and "(đã sửa)" not in first.text
    with province.session() as s:
        s.execute(update(Question).values(text=Question.text + " (đã sửa)", content_hash=func.upper(Question.content_hash)))
    second = service.on_action("1", first.all_choices()[0].action, utcnow()).replies[-1]
    assert "Câu 2/10" in second.text and "(đã sửa)" in second.text
