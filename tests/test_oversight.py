"""Secretaries and cadres: figures, drill-down, who has not finished, reminders, reports, permissions."""

from __future__ import annotations

import io
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from bot.reports.replies import report_replies
from bot.services.chat import ChannelTraits, ChatService
from bot.services.linking import create_invites
from bot.storage.models import Attempt, Member, OutboxMessage, Unit
from bot.timeutil import utcnow

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


@pytest.fixture
def service(province):
    return ChatService(province, ChannelTraits("telegram", 4096), TZ, reports=report_replies)


def link(service, db, code: str) -> str:
    with db.session() as s:
        member = s.scalar(select(Member).where(Member.code == code))
        invite = create_invites(s, [member], utcnow())[member.id]
    service.on_text(code, f"/start {invite}", utcnow())
    return code


def finish(db, code: str, score: float = 90.0) -> None:
    """Record a submitted attempt for a member (as if they had taken the quiz)."""
    now = utcnow()
    with db.session() as s:
        member = s.scalar(select(Member).where(Member.code == code))
        s.add(Attempt(round_id=1, member_id=member.id, number=1, started_at=now, submitted_at=now,
                      question_count=10, correct_count=int(score // 10), score=score, passed=score >= 80))


def unit_id(db, code: str) -> int:
    with db.session() as s:
        return s.scalar(select(Unit.id).where(Unit.code == code))


def say(service, who: str, text: str) -> list:
    return service.on_text(who, text, utcnow()).replies


def test_secretary_sees_the_branch_rate_against_the_target(service, province):
    link(service, province, "DV001")
    for code in ("DV002", "DV003", "DV004"):
        finish(province, code, 90.0)
    finish(province, "DV005", 50.0)
    text = say(service, "DV001", "/thongke")[0].text
    assert text.startswith("📊 64-KH/TU — Chi bộ ấp 1 (Tân Tiến)")
    assert "Đã hoàn thành: 4/10 — 40% (mục tiêu 98%)" in text
    assert "Đạt yêu cầu: 3 · Điểm trung bình: 80%" in text
    assert "Chưa làm: 6 · Đang làm dở: 0" in text
    assert "Cần thêm 6 đồng chí hoàn thành để đạt mục tiêu." in text


def test_a_round_closed_early_shows_when_it_ended_and_asks_nobody_to_finish_it(service, province):
    from bot.services.rounds import close_round

    link(service, province, "DV001")
    for code in ("DV002", "DV003", "DV004"):
        finish(province, code, 90.0)
    with province.session() as s:
        closed_at = close_round(s, 1, utcnow()).closed_at
    text = say(service, "DV001", "/thongke")[0].text
    assert "Đã hoàn thành: 3/10 — 30% (mục tiêu 98%)" in text
    assert "Không đạt mục tiêu: thiếu 7 đồng chí hoàn thành." in text
    assert "Cần thêm" not in text
    assert f"Thời hạn: đã kết thúc sớm lúc {closed_at.astimezone(TZ):%H:%M ngày %d/%m/%Y} (hạn " in text


def test_a_quiz_begun_but_not_handed_in_by_the_end_of_the_round_is_called_left_unfinished_not_under_way(
        service, province):
    """After the round, "đang làm dở" (still at it) would tell the secretary to wait for a member who can no
    longer finish: the chat, the list and the workbook say "bỏ dở" instead; while it runs they say "đang làm dở"."""
    from bot.reports.xlsx import HEADER_ROW, NOT_FINISHED_SHEET, build_workbook, report_data
    from bot.services.rounds import close_round

    link(service, province, "DV001")
    link(service, province, "DV005")
    assert "Câu 1/" in say(service, "DV005", "/lambai")[-1].text
    running = say(service, "DV001", "/thongke")[0].text
    assert "Chưa làm: 9 · Đang làm dở: 1" in running
    assert "(đang làm dở" in say(service, "DV001", "/chualam")[0].text
    with province.session() as s:
        close_round(s, 1, utcnow())
    assert "Chưa làm: 9 · Bỏ dở: 1" in say(service, "DV001", "/thongke")[0].text
    listed = say(service, "DV001", "/chualam")[0].text  # none open: the round that just ended
    assert listed.startswith("📋 64-KH/TU — Chi bộ ấp 1 (Tân Tiến): 10 đồng chí không hoàn thành (đợt đã kết thúc; trang 1/1)")
    assert "(bỏ dở, chưa nộp bài" in listed and "đang làm dở" not in listed
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV005"))
        data = report_data(s, 1, member.unit_id, utcnow())
    book = load_workbook(io.BytesIO(build_workbook(data)))
    units = book.worksheets[0]
    assert "Bỏ dở, chưa nộp bài" in [c.value for c in units[HEADER_ROW]]
    rows = list(book[NOT_FINISHED_SHEET].iter_rows(min_row=HEADER_ROW, values_only=True))
    status = rows[0].index("Tình trạng")
    assert [r[status] for r in rows[1:] if member.full_name in r] == ["Bỏ dở, chưa nộp bài"]


def test_a_branch_whose_members_are_all_exempt_is_told_so_not_asked_for_zero_more_members(service, province):
    from sqlalchemy import update

    from bot.domain.oversight_messages import closing_text
    from bot.domain.statistics import Figures

    from bot.services import stats
    from bot.storage.models import Round

    link(service, province, "DV001")
    branch = unit_id(province, "DP-TT-01")
    with province.session() as s:
        s.execute(update(Member).where(Member.unit_id == branch).values(exempt=True))
    text = say(service, "DV001", "/thongke")[0].text
    assert "Đã hoàn thành: 0/0" in text and "Cần thêm" not in text
    assert "Tất cả đảng viên của đơn vị được miễn sinh hoạt; không ai cần học trong đợt này." in text
    assert "hãy nạp danh sách" not in text  # the roster is loaded: not the advice to give
    with province.session() as s:
        figures: Figures = stats.unit_figures(s, 1, branch, utcnow())
        final = closing_text(s.get(Round, 1), s.get(Unit, branch), figures, TZ).text
    assert "không có đảng viên nào trong danh sách" in final and "CHƯA ĐẠT" not in final
    from dataclasses import replace

    from bot.domain.oversight_messages import figures_text

    with province.session() as s:  # a unit whose members were never imported: that is the advice then
        empty = figures_text(s.get(Round, 1), replace(figures, exempt=0), TZ)
    assert "Đơn vị chưa có đảng viên nào trong danh sách; hãy nạp danh sách đảng viên." in empty


def test_cadre_drills_down_and_back_up_within_their_subtree(service, province):
    link(service, province, "CB002")  # cadre of xã Đồng Phú
    finish(province, "DV011", 85.0)
    top = say(service, "CB002", "/thongke")[0]
    assert top.text.startswith("📊 64-KH/TU — Đảng bộ xã Đồng Phú")
    assert "Đã hoàn thành: 1/31 — 3,2% (mục tiêu 98%)" in top.text
    commune = top.all_choices()[0]
    assert commune.label == "1. Đảng bộ bộ phận Tân Tiến"
    view = service.on_action("CB002", commune.action, utcnow()).replies[0]
    labels = [c.label for c in view.all_choices()]
    # furthest from target first: branches 1 and 3 (0%) before branch 2 (10%); then back up
    assert labels == ["1. Chi bộ ấp 1 (Tân Tiến)", "2. Chi bộ ấp 3 (Tân Tiến)",
                      "3. Chi bộ ấp 2 (Tân Tiến)", "↑ Đảng bộ xã Đồng Phú"]
    up = service.on_action("CB002", view.all_choices()[-1].action, utcnow()).replies[0]
    assert up.text.startswith("📊 64-KH/TU — Đảng bộ xã Đồng Phú")
    assert not any(c.label.startswith("↑") for c in up.all_choices())  # the province is not theirs
    forged = service.on_action("CB002", f"s:1:{unit_id(province, 'HQ')}", utcnow()).replies[0]
    assert forged.text == "Đồng chí không có quyền xem số liệu của đơn vị này."


def test_not_finished_list_shows_phones_only_to_the_branch_secretary(service, province):
    link(service, province, "DV001")
    link(service, province, "CB002")
    finish(province, "DV002")
    secretary = say(service, "DV001", "/chualam")[0].text
    assert "9 đồng chí chưa hoàn thành (trang 1/1)" in secretary
    assert "Hồ Ngọc Nhung — Chi bộ ấp 1 (Tân Tiến) (0386 020 001)" in secretary  # written as it is dialled
    cadre = say(service, "CB002", "/chualam")[0]
    assert "30 đồng chí chưa hoàn thành (trang 1/2)" in cadre.text and "0386 020 001" not in cadre.text
    page2 = service.on_action("CB002", cadre.all_choices()[-1].action, utcnow()).replies[0]
    assert "(trang 2/2)" in page2.text and page2.text.count("\n2") + page2.text.count("\n3") >= 10


def test_a_page_number_beyond_the_list_shows_its_last_page(service, province):
    """An old "Sau ›" button (members finished since) or a forged one: the last page, never "trang 99999999/1"."""
    link(service, province, "DV001")
    page = service.on_action("DV001", f"c:1:{unit_id(province, 'DP-TT-01')}:99999999", utcnow()).replies[0]
    assert "10 đồng chí chưa hoàn thành (trang 1/1)" in page.text
    assert not any(c.label.startswith("‹") for c in page.all_choices())


def test_reminders_go_once_a_day_and_say_who_was_skipped(service, province):
    link(service, province, "DV001")
    for code in ("DV002", "DV003", "DV004"):
        link(service, province, code)
    finish(province, "DV004")
    first = say(service, "DV001", "/nhacnho")[0].text
    assert "đã gửi nhắc nhở tới 3 đồng chí chưa hoàn thành" in first  # DV001, DV002, DV003
    assert "6 đồng chí chưa liên kết tài khoản" in first
    again = say(service, "DV001", "/nhacnho")[0].text
    assert "đã gửi nhắc nhở tới 0 đồng chí" in again and "3 đồng chí đã được nhắc hoặc thông báo về đợt này trong 20 giờ qua" in again
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 3


def test_a_nudge_dropped_before_it_went_out_can_be_sent_again_the_same_day(service, province):
    """A waiting nudge dropped (the deadline moved overnight, say) told nobody: the secretary's next /nhacnho
    that day sends it, and says so."""
    from sqlalchemy import update

    link(service, province, "DV001")
    link(service, province, "DV002")
    assert "đã gửi nhắc nhở tới 2 đồng chí" in say(service, "DV001", "/nhacnho")[0].text
    with province.session() as s:
        s.execute(update(OutboxMessage).values(status="dropped"))
    again = say(service, "DV001", "/nhacnho")[0].text
    assert "đã gửi nhắc nhở tới 2 đồng chí" in again and "đã được nhắc" not in again
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "pending")) == 2


def test_a_reminder_to_a_member_whose_last_message_was_refused_is_flagged_to_the_secretary(service, province):
    """DV002 blocked the bot (the round's announcement was refused): /nhacnho still tries, and does not let the
    secretary believe it reached everyone."""
    from sqlalchemy import update

    from bot.domain.replies import Reply
    from bot.outbox import queue
    from bot.storage.models import Round

    for code in ("DV001", "DV002", "DV003"):
        link(service, province, code)
    with province.session() as s:
        dv002 = s.scalar(select(Member.id).where(Member.code == "DV002"))
        round_id = s.scalar(select(Round.id).order_by(Round.id))
        queue.enqueue(s, dedupe_key="announce:x", purpose="announce", member_id=dv002, reply=Reply("Thông báo"),
                      now=utcnow(), round_id=round_id)
        s.execute(update(OutboxMessage).values(status="failed", error="Forbidden: bot was blocked by the user"))
    text = say(service, "DV001", "/nhacnho")[0].text
    assert "đã gửi nhắc nhở tới 3 đồng chí" in text
    assert "Trong đó 1 đồng chí chưa nhận được tin nhắn trước của bot" in text and "/chualam" in text


def test_cadre_gets_the_workbook_and_chart(service, province):
    link(service, province, "CB002")
    finish(province, "DV011", 70.0)
    reply = say(service, "CB002", "/baocao")[0]
    assert reply.text.startswith("Báo cáo 64-KH/TU — Đảng bộ xã Đồng Phú: 1/31")
    xlsx, png = reply.files
    assert xlsx.filename.endswith(".xlsx") and png.kind == "photo" and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    wb = load_workbook(io.BytesIO(xlsx.data))
    assert len(wb.sheetnames) >= 3


def test_without_report_files_a_cadre_is_pointed_to_thongke_and_a_secretary_still_refused(province):
    bare = ChatService(province, ChannelTraits("telegram", 4096), TZ)  # a process wired without reports
    link(bare, province, "CB002"), link(bare, province, "DV001")
    reply = say(bare, "CB002", "/baocao")[0]
    assert (reply.text, reply.files) == ("Máy chủ này chưa bật gửi tệp báo cáo; xem số liệu bằng /thongke.", [])
    assert "Chỉ cán bộ phụ trách" in say(bare, "DV001", "/baocao")[0].text


# -- the permission matrix ---------------------------------------------------------------------
PEOPLE = {"member": "DV002", "secretary": "DV001", "cadre": "CB002", "admin": "AD001"}
ALLOWED = {  # command -> roles that get figures rather than a refusal
    "/thongke": {"secretary", "cadre", "admin"},
    "/chualam": {"secretary", "cadre", "admin"},
    "/nhacnho": {"secretary", "cadre", "admin"},
    "/baocao": {"cadre", "admin"},
}
REFUSALS = ("không có quyền", "chỉ xem được kết quả", "Chỉ cán bộ phụ trách")


@pytest.mark.parametrize("command", sorted(ALLOWED))
def test_permission_matrix_for_commands(service, province, command):
    for role, code in PEOPLE.items():
        link(service, province, code)
        text = say(service, code, command)[0].text
        refused = any(r in text for r in REFUSALS)
        assert refused is (role not in ALLOWED[command]), (role, command, text)
    stranger = say(service, "nobody", command)[0].text
    assert "chưa liên kết tài khoản" in stranger and "64-KH" not in stranger


@pytest.mark.parametrize("role", sorted(PEOPLE))
def test_permission_matrix_for_another_units_buttons(service, province, role):
    code = PEOPLE[role]
    link(service, province, code)
    other = unit_id(province, "HQ-TH-01")  # not below DV001's branch nor CB002's district
    own = {"member": "DP-TT-01", "secretary": "DP-TT-01", "cadre": "DP", "admin": "BP"}[role]
    for action in (f"s:1:{other}", f"c:1:{other}:1"):
        text = service.on_action(code, action, utcnow()).replies[0].text
        assert ("không có quyền" in text or "chỉ xem được" in text) is (role != "admin"), (role, action)
    for action in (f"s:1:{unit_id(province, own)}", f"c:1:{unit_id(province, own)}:1"):
        text = service.on_action(code, action, utcnow()).replies[0].text
        assert ("64-KH/TU" in text) is (role != "member"), (role, action, text)


def test_a_reminder_asked_at_night_counts_for_the_morning_it_is_sent(service, province):
    from datetime import timedelta

    link(service, province, "DV001")
    link(service, province, "DV002")
    tomorrow = utcnow() + timedelta(days=1)  # within the open round
    evening = tomorrow.replace(hour=15, minute=30)  # 22:30 in Vietnam: quiet hours
    morning = (tomorrow + timedelta(days=1)).replace(hour=1, minute=0)  # 08:00 the next day
    first = service.on_text("DV001", "/nhacnho", evening).replies[0].text
    sent_on = morning.astimezone(TZ).strftime("%d/%m/%Y")
    assert "đã gửi nhắc nhở tới 2 đồng chí" in first and f"sẽ được gửi lúc 07:00 ngày {sent_on}" in first
    again = service.on_text("DV001", "/nhacnho", morning).replies[0].text
    assert "đã gửi nhắc nhở tới 0 đồng chí" in again and "2 đồng chí đã được nhắc hoặc thông báo về đợt này trong 20 giờ qua" in again
