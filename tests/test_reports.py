"""The XLSX report (opened back with openpyxl) and the rate chart PNG."""

from __future__ import annotations

import io
import struct
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from bot.domain.phones import display_phone
from bot.reports.chart import rate_chart_png
from bot.reports.xlsx import (
    HEADER_ROW, MEMBER_HEADERS, NOT_FINISHED_SHEET, QUESTION_HEADERS, UNIT_HEADERS, build_workbook,
    report_data, sheet_title,
)
from bot.services.stats import Figures, child_figures, question_stats, unit_figures
from bot.storage.models import Unit
from bot.timeutil import utcnow
from tests.test_stats import build_scenario

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _unit(s, code):
    return s.scalar(select(Unit).where(Unit.code == code))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _table(ws, headers):
    rows = []
    for row in ws.iter_rows(min_row=HEADER_ROW + 1, max_col=len(headers), values_only=True):
        if all(v is None for v in row):
            break
        rows.append(dict(zip(headers, row)))
    return rows


def test_workbook_has_unit_member_and_question_sheets_with_vietnamese_headers_and_exact_values(province):
    sc = build_scenario(province)
    with province.session() as s:
        dp = _unit(s, "DP")
        data = report_data(s, [sc.round_id, sc.other_round_id], dp.id, sc.now)
        total = unit_figures(s, sc.round_id, dp.id, sc.now)
        children = child_figures(s, sc.round_id, dp.id, sc.now)
        questions = question_stats(s, sc.round_id, dp.id)
    wb = load_workbook(io.BytesIO(build_workbook(data)))
    assert wb.sheetnames == ["Đợt 1 - Đơn vị", "Đợt 2 - Đơn vị", NOT_FINISHED_SHEET,
                             "Đợt 1 - Câu hỏi", "Đợt 2 - Câu hỏi"]
    assert all(len(name) <= 31 for name in wb.sheetnames)

    ws = wb["Đợt 1 - Đơn vị"]
    assert [c.value for c in ws[HEADER_ROW]] == UNIT_HEADERS
    assert ws["B3"].value == "Đảng bộ xã Đồng Phú"
    assert ws["B4"].number_format == "dd/mm/yyyy" and ws["B4"].value.date() == (sc.now - timedelta(hours=1)).astimezone(
        data.tz).date()
    assert ws["B5"].value == pytest.approx(0.98) and ws["B5"].number_format == "0%"
    rows = _table(ws, UNIT_HEADERS)
    assert [r["Mã đơn vị"] for r in rows] == ["DP"] + [f.unit_code for f in children]
    top = rows[0]
    assert top["Đơn vị"] == "Tổng cộng: Đảng bộ xã Đồng Phú"
    assert (top["Số đảng viên"], top["Đã hoàn thành"], top["Đạt yêu cầu"]) == (
        total.audience, total.finished, total.passed)
    assert top["Tỷ lệ hoàn thành"] == pytest.approx(total.finished / total.audience)
    assert top["Điểm trung bình"] == pytest.approx(total.average_score / 100)
    assert (top["Đang làm dở"], top["Chưa làm"], top["Còn thiếu để đạt mục tiêu"]) == (
        total.in_progress, total.not_started, total.needed)
    assert top["Đạt mục tiêu"] == ("Đạt" if total.target_met else "Chưa đạt")
    assert ws.cell(row=HEADER_ROW + 1, column=5).number_format == "0.0%"
    for column in ("Số đảng viên", "Đã hoàn thành", "Đang làm dở", "Chưa làm"):  # the rows add up to the total
        assert sum(r[column] for r in rows[1:]) == top[column], column
    assert ws["E4"].value == "Trạng thái" and ws["F4"].value == "đang mở"
    assert ws.cell(row=HEADER_ROW + 2, column=2).alignment.wrap_text  # a long unit name wraps in its column

    ws = wb[NOT_FINISHED_SHEET]
    assert [c.value for c in ws[HEADER_ROW]] == MEMBER_HEADERS
    listed = _table(ws, MEMBER_HEADERS)
    assert len(listed) == sum(r.not_finished_total for r in data.rounds)
    assert [r["Đợt"] for r in listed] == sorted(r["Đợt"] for r in listed)
    first = data.rounds[0].not_finished[0]
    assert listed[0]["Họ và tên"] == first.member.full_name and listed[0]["Số điện thoại"] == display_phone(first.member.phone)
    assert {r["Tình trạng"] for r in listed} <= {"Chưa làm", "Đang làm dở"}
    unit_column = MEMBER_HEADERS.index("Đơn vị") + 1
    assert ws.cell(row=HEADER_ROW + 1, column=unit_column).alignment.wrap_text

    ws = wb["Đợt 1 - Câu hỏi"]
    assert [c.value for c in ws[HEADER_ROW]] == QUESTION_HEADERS
    qrows = _table(ws, QUESTION_HEADERS)
    assert [r["Câu số"] for r in qrows] == [q.position for q in questions]
    q0, r0 = questions[0], qrows[0]
    assert r0["Tỷ lệ trả lời đúng"] == pytest.approx(q0.share_correct / 100)
    assert r0["Phương án sai chọn nhiều nhất"] == (q0.wrong_letter or "")
    assert r0["Chỉ số dễ (facility)"] == pytest.approx(q0.facility / 100)
    assert ws.cell(row=HEADER_ROW + 1, column=5).number_format == "0.0%"


def test_workbook_without_phones_has_no_phone_column(province):
    with province.session() as s:
        data = report_data(s, 1, _unit(s, "HQ-TH-01").id, utcnow(), include_phones=False)
    ws = load_workbook(io.BytesIO(build_workbook(data)))[NOT_FINISHED_SHEET]
    headers = [c.value for c in ws[HEADER_ROW] if c.value]
    assert "Số điện thoại" not in headers and "Họ và tên" in headers


def test_sheet_titles_are_short_unique_and_free_of_forbidden_characters():
    used: set[str] = set()
    names = [sheet_title("Đợt 12 - Đơn vị: Đảng bộ [huyện] Đồng Phú / Hớn Quản?*", used) for _ in range(3)]
    assert len(set(names)) == 3
    for name in names:
        assert len(name) <= 31
        assert not set(name) & set("[]:*?/\\")
    assert sheet_title("'quoted'", set()) == "quoted"


def _fig(code, name, finished, audience, target=98.0):
    from bot.services.stats import needed_of, rate_of

    return Figures(round_id=1, unit_id=0, unit_code=code, unit_name=name, audience=audience, finished=finished,
                   passed=finished, in_progress=0, not_started=audience - finished, average_score=None,
                   rate=rate_of(finished, audience), target=target, needed=needed_of(target, audience, finished),
                   time_left=None, status="open")


def test_rate_chart_is_a_phone_sized_png():
    figures = [_fig("A", "Chi bộ ấp 1 (Tân Tiến)", 52, 60), _fig("B", "Đảng bộ xã Đồng Phú", 59, 60),
               _fig("C", "Chi bộ Khu phố Tân Đồng", 3, 30)]
    data = rate_chart_png(figures, 98, subtitle="64-KH/TU · Đảng bộ tỉnh Đồng Nai · 15/12/2026")
    width, height = _png_size(data)
    assert width == 1080
    assert 500 <= height <= 1400


def test_rate_chart_caps_the_number_of_bars_and_draws_an_empty_chart():
    many = [_fig(f"U{i:03}", f"Chi bộ số {i}", i % 30, 30) for i in range(200)]
    width, height = _png_size(rate_chart_png(many, 98))
    assert width == 1080 and height <= 2600
    width, height = _png_size(rate_chart_png([], 98))
    assert width == 1080 and 300 <= height <= 800


def test_chart_bars_of_units_whose_long_names_shorten_alike_carry_their_codes_and_dollars_stay_text():
    from bot.reports.chart import bar_labels

    long = "Chi bộ Trường Trung học phổ thông chuyên Quang Trung số {}"
    figures = [_fig(f"TH{i}", long.format(i), i, 30) for i in range(1, 4)] + [_fig("X", "Chi bộ $A$ và x_1^2 $\\frac{a$", 1, 9)]
    labels = bar_labels(figures)
    assert len(set(labels)) == 4 and all(f"(TH{i})" in labels[i - 1] for i in range(1, 4))
    assert "\\$A\\$" in labels[3]  # drawn as written, not as a formula
    assert _png_size(rate_chart_png(figures, 98, title="Báo cáo $x$", subtitle="$\\frac{a$"))[0] == 1080


def test_report_chart_from_database_children(province):
    with province.session() as s:
        rows = child_figures(s, 1, _unit(s, "BP").id, utcnow())
    assert [f.unit_code for f in rows] == ["DP", "HQ"] and all(f.rate == 0 for f in rows)
    assert _png_size(rate_chart_png(rows, 98))[0] == 1080


@pytest.mark.parametrize("name", ['=HYPERLINK("http://x","Bấm")', "+1+1", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1+1"])
def test_a_member_name_that_looks_like_a_formula_is_text_in_the_not_finished_sheet(province, name):
    from bot.storage.models import Member

    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV032"))
        member.full_name = name
        data = report_data(s, 1, _unit(s, "HQ-TH-01").id, utcnow())
    ws = load_workbook(io.BytesIO(build_workbook(data)))[NOT_FINISHED_SHEET]
    headers = [c.value for c in ws[HEADER_ROW]]
    code, column = headers.index("Mã đảng viên"), headers.index("Họ và tên")
    cells = {row[code].value: row[column] for row in ws.iter_rows(min_row=HEADER_ROW + 1)}
    assert cells["DV032"].data_type == "s" and cells["DV032"].quotePrefix
    assert cells["DV032"].value.strip() == name.strip()  # XML turns a lone CR into LF
    assert cells["DV033"].value == "Mai Thị Loan" and not cells["DV033"].quotePrefix


def test_the_workbook_of_a_round_closed_early_says_so_and_when_it_ended(province):
    from bot.services.rounds import close_round
    from bot.storage.models import Round

    now = utcnow()
    with province.session() as s:
        ended = close_round(s, 1, now).closed_at
        planned = s.get(Round, 1).closes_at
        data = report_data(s, 1, _unit(s, "DP").id, now)
    ws = load_workbook(io.BytesIO(build_workbook(data))).worksheets[0]
    assert ws["D4"].value.date() == ended.astimezone(data.tz).date() != planned.astimezone(data.tz).date()
    assert ws["F4"].value == "đã kết thúc"
