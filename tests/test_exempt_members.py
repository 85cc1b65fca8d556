"""Members exempt from Party work (miễn sinh hoạt) stay on the roster but count in no audience,
rate or reminder; reports show them apart."""

from __future__ import annotations

import io
from datetime import timedelta

from openpyxl import load_workbook
from sqlalchemy import select

from bot.reports.xlsx import HEADER_ROW, UNIT_HEADERS, build_workbook, report_data
from bot.scheduling.due import Schedule, run_due
from bot.services.rounds import open_round
from bot.services.stats import not_finished_members, unit_figures
from bot.storage.models import ChatAccount, Member, OutboxMessage, Round, Unit
from bot.timeutil import utcnow
from tests.test_scheduled_messages import CLOSES, OPENS, local

HEADER = "Mã đảng viên,Họ và tên,Mã đơn vị,Số điện thoại,Vai trò,Miễn sinh hoạt\n"


def _exempt(db, *codes: str) -> None:
    with db.session() as s:
        for m in s.scalars(select(Member).where(Member.code.in_(codes))):
            m.exempt = True


def test_the_roster_column_marks_members_exempt_and_they_stay_listed(cli, province, workdir):
    (workdir / "m.csv").write_text(HEADER + "DV005,Nguyễn Văn Năm,DP-TT-01,,Đảng viên,x\n"
                                   "DV006,Trần Văn Sáu,DP-TT-01,,Đảng viên,\n", encoding="utf-8")
    result = cli("members", "import", "m.csv")
    assert result.code == 0, result.out
    listing = cli("members", "list", "--unit", "DP-TT-01").lines
    assert any(line.startswith("DV005\t") and line.endswith("(exempt)") for line in listing)
    assert any(line.startswith("DV006\t") and "(exempt)" not in line for line in listing)
    # a file without the column leaves the exemption alone; 'không' lifts it
    (workdir / "n.csv").write_text("member_code,full_name,unit_code,phone,role\nDV005,Nguyễn Văn Năm,DP-TT-01,,member\n",
                                   encoding="utf-8")
    assert cli("members", "import", "n.csv").code == 0
    with province.session() as s:
        assert s.scalar(select(Member.exempt).where(Member.code == "DV005")) is True
    (workdir / "m.csv").write_text(HEADER + "DV005,Nguyễn Văn Năm,DP-TT-01,,Đảng viên,không\n", encoding="utf-8")
    assert cli("members", "import", "m.csv").code == 0
    with province.session() as s:
        assert s.scalar(select(Member.exempt).where(Member.code == "DV005")) is False


def test_an_unclear_exemption_is_named_by_row_and_nothing_is_imported(cli, province, workdir):
    (workdir / "m.csv").write_text(HEADER + "DV005,Nguyễn Văn Năm,DP-TT-01,,Đảng viên,x\n"
                                   "DV006,Trần Văn Sáu,DP-TT-01,,Đảng viên,ốm\n", encoding="utf-8")
    result = cli("members", "import", "m.csv")
    assert result.code == 1
    assert result.lines == ["m.csv:3: Miễn sinh hoạt: 'ốm' không phải là có hoặc không; hãy ghi x (hoặc có) nếu đảng viên "
                            "được miễn sinh hoạt, nếu không thì để trống"]
    with province.session() as s:
        assert s.scalar(select(Member.exempt).where(Member.code == "DV005")) is False


def test_exempt_members_leave_audience_and_not_finished_list_and_are_counted_apart(province):
    now = utcnow()
    with province.session() as s:
        branch = s.scalar(select(Unit).where(Unit.code == "DP-TT-01"))
        dp = s.scalar(select(Unit).where(Unit.code == "DP"))
        before_branch, before_dp = unit_figures(s, 1, branch.id, now), unit_figures(s, 1, dp.id, now)
    _exempt(province, "DV005", "DV006")
    with province.session() as s:
        after = unit_figures(s, 1, branch.id, now)
        after_dp = unit_figures(s, 1, dp.id, now)
        total, rows = not_finished_members(s, 1, branch.id, limit=None)
    assert (after.audience, after.exempt) == (before_branch.audience - 2, 2)
    assert (after_dp.audience, after_dp.exempt) == (before_dp.audience - 2, 2)
    assert total == after.audience and {r.member.code for r in rows}.isdisjoint({"DV005", "DV006"})


def test_report_prints_and_the_workbook_shows_exempt_members_apart(cli, province, workdir):
    _exempt(province, "DV005")
    result = cli("report", "1", "--unit", "DP-TT-01", "--xlsx", "r.xlsx")
    assert result.code == 0
    assert "/9 — " in result.lines[0] and result.lines[0].endswith(", 1 exempt (not counted)")
    ws = load_workbook(workdir / "r.xlsx")["Đợt 1 - Đơn vị"]
    total = dict(zip(UNIT_HEADERS, next(ws.iter_rows(min_row=HEADER_ROW + 1, values_only=True))))
    assert total["Số đảng viên"] == 9 and total["Miễn sinh hoạt (không tính)"] == 1


def test_a_branch_whose_members_are_all_exempt_is_a_row_so_the_exempt_column_adds_up(cli, province, workdir):
    with province.session() as s:
        branch = s.scalar(select(Unit).where(Unit.code == "DP-TT-03")).id
        codes = list(s.scalars(select(Member.code).where(Member.unit_id == branch)))
    _exempt(province, "DV005", *codes)
    assert cli("report", "1", "--unit", "DP-TT", "--xlsx", "r.xlsx").code == 0
    ws = load_workbook(workdir / "r.xlsx")["Đợt 1 - Đơn vị"]
    rows = [dict(zip(UNIT_HEADERS, r)) for r in ws.iter_rows(min_row=HEADER_ROW + 1, values_only=True) if r[0]]
    total, units = rows[0], rows[1:]
    assert total["Miễn sinh hoạt (không tính)"] == len(codes) + 1
    assert sum(r["Miễn sinh hoạt (không tính)"] for r in units) == total["Miễn sinh hoạt (không tính)"]
    assert [(r["Số đảng viên"], r["Miễn sinh hoạt (không tính)"]) for r in units if r["Mã đơn vị"] == "DP-TT-03"] == [
        (0, len(codes))]


def test_no_announcement_or_reminder_goes_to_an_exempt_member(province):
    with province.session() as s:
        s.delete(s.get(Round, 1))
        s.flush()
        rnd = open_round(s, "kh-83-hu-tuy-phuoc", ["DP-TT-01"], OPENS, CLOSES, 98, OPENS - timedelta(days=1))
        for m in s.scalars(select(Member).where(Member.code.between("DV001", "DV010"))):
            s.add(ChatAccount(channel="telegram", external_id=str(60_000 + m.id), member_id=m.id, linked_at=OPENS))
        rid = rnd.id
    _exempt(province, "DV004")
    schedule = Schedule()
    report = run_due(province, local("2026-12-01 07:00"), schedule)
    assert f"announce:{rid}: 9 message(s)" in report.jobs
    run_due(province, local("2026-12-14 08:00"), schedule)
    with province.session() as s:
        dv004 = s.scalar(select(Member.id).where(Member.code == "DV004"))
        to_dv004 = s.scalars(select(OutboxMessage.purpose).where(OutboxMessage.member_id == dv004)).all()
        reminders = s.scalars(select(OutboxMessage.purpose).where(OutboxMessage.purpose == "remind")).all()
    assert to_dv004 == [] and len(reminders) == 9


def test_an_announcement_waiting_for_the_morning_is_dropped_for_a_member_exempted_overnight(province, emulator):
    from tests.test_scheduled_messages import deliver, received

    with province.session() as s:
        s.delete(s.get(Round, 1))
        s.flush()
        rid = open_round(s, "kh-83-hu-tuy-phuoc", ["DP-TT-01"], OPENS, CLOSES, 98, OPENS - timedelta(days=1)).id
        members = list(s.scalars(select(Member).where(Member.code.in_(("DV003", "DV004")))))
        for m in members:
            s.add(ChatAccount(channel="telegram", external_id=str(60_000 + m.id), member_id=m.id, linked_at=OPENS))
        users = {m.code: emulator.user(60_000 + m.id, first_name=m.code) for m in members}
    for user in users.values():
        user.send_text("/start")
    assert f"announce:{rid}: 2 message(s)" in run_due(province, local("2026-12-01 22:00"), Schedule()).jobs
    _exempt(province, "DV004")  # the secretary marks DV004 miễn sinh hoạt overnight
    stats = deliver(province, emulator, local("2026-12-02 07:00"))
    assert (stats.sent, stats.dropped) == (1, 1)
    assert [t[:1] for t in received(users["DV003"])] == ["📢"] and received(users["DV004"]) == []
