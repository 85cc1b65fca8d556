"""The XLSX report of one or more rounds for a unit: figures per unit, who has not finished,
and how each question fared.

Numbers are stored as numbers with Excel number formats, so Excel and LibreOffice show them in the
reader's locale (``86,7%`` and ``15/12/2026`` on a Vietnamese system): rates and scores as
fractions with a percent format, dates as real dates formatted ``dd/mm/yyyy``.

Sheets, in order: ``Đợt N - Đơn vị`` (one per round), ``Chưa hoàn thành``, ``Đợt N - Câu hỏi``
(one per round). Each round sheet starts with a title block; the table header is row
``HEADER_ROW``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from sqlalchemy.orm import Session

from bot.domain.oversight_messages import IN_PROGRESS, LEFT_UNFINISHED
from bot.domain.phones import display_phone
from bot.reports.question_review import flag_question
from bot.services.stats import (
    Figures, NotFinished, QuestionStat, StatsError, not_finished_members, question_stats, unit_rollup,
)
from bot.sheets import save_workbook
from bot.storage.models import Round, Unit

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
HEADER_ROW = 7
PERCENT = "0.0%"
DATE = "dd/mm/yyyy"
NOT_FINISHED_SHEET = "Chưa hoàn thành"

UNIT_HEADERS = [
    "Mã đơn vị", "Đơn vị", "Số đảng viên", "Đã hoàn thành", "Tỷ lệ hoàn thành", "Đạt yêu cầu",
    "Điểm trung bình", "Đang làm dở", "Chưa làm", "Còn thiếu để đạt mục tiêu", "Đạt mục tiêu",
    "Miễn sinh hoạt (không tính)",
]
MEMBER_HEADERS = ["Đợt", "Tài liệu", "Họ và tên", "Mã đảng viên", "Đơn vị", "Số điện thoại", "Tình trạng"]
QUESTION_HEADERS = [
    "Câu số", "Nội dung câu hỏi", "Số lượt gặp", "Số lượt trả lời", "Tỷ lệ trả lời đúng",
    "Phương án sai chọn nhiều nhất", "Số lượt chọn phương án sai đó", "Số bài làm lần đầu",
    "Chỉ số dễ (facility)", "Chỉ số phân biệt (Moodle)", "Chỉ số phân biệt nhóm 27%", "Gợi ý xem lại câu hỏi",
]


# -- data ----------------------------------------------------------------------------------------
@dataclass
class RoundReport:
    round_id: int
    document_code: str
    document_title: str
    opens_at: datetime
    closes_at: datetime  # when it ended, if closed before its deadline; else its deadline
    target: float
    status: str
    total: Figures  # the report's unit, rolled up over its subtree
    units: list[Figures]  # its direct children, furthest from target first (empty for a branch)
    questions: list[QuestionStat]
    not_finished: list[NotFinished]
    not_finished_total: int


@dataclass
class ReportData:
    unit_id: int
    unit_code: str
    unit_name: str
    generated_at: datetime
    rounds: list[RoundReport] = field(default_factory=list)
    tz: ZoneInfo = TZ
    include_phones: bool = True


def report_data(
    session: Session, round_id: int | Sequence[int], unit_id: int, now: datetime, *,
    tz: ZoneInfo = TZ, include_phones: bool = True, max_members: int | None = None,
) -> ReportData:
    """Everything the workbook and chart show, for one round (or several) and a unit's subtree.

    A fixed number of statements per round (figures, children, questions, not-finished list).
    ``max_members`` caps the not-finished list (None: everyone). Permission checks belong to the
    caller (``bot.domain.permissions.require_report``).
    """
    ids = [round_id] if isinstance(round_id, int) else list(round_id)
    unit = session.get(Unit, unit_id)
    if unit is None:
        raise StatsError(f"no unit {unit_id}")
    data = ReportData(unit.id, unit.code, unit.name, now, tz=tz, include_phones=include_phones)
    for rid in ids:
        rnd = session.get(Round, rid)
        if rnd is None:
            raise StatsError(f"no round {rid}")
        total, children = unit_rollup(session, rid, unit_id, now)
        count, rows = not_finished_members(session, rid, unit_id, 0, max_members)
        data.rounds.append(RoundReport(
            round_id=rid, document_code=rnd.document.code, document_title=rnd.document.title,
            opens_at=rnd.opens_at, target=float(rnd.target_rate),
            closes_at=rnd.ended_at,
            status=total.status, total=total, units=children,
            questions=question_stats(session, rid, unit_id), not_finished=rows, not_finished_total=count,
        ))
    return data


# -- workbook ------------------------------------------------------------------------------------
_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")


def sheet_title(text: str, used: set[str]) -> str:
    """A valid, unique sheet name: no ``[]:*?/\\``, no leading/trailing apostrophe, ≤ 31 chars."""
    base = _FORBIDDEN.sub("-", text).strip().strip("'") or "Sheet"
    base = base[:31].rstrip()
    name, n = base, 2
    while name.casefold() in used:
        suffix = f" ({n})"
        name = base[: 31 - len(suffix)].rstrip() + suffix
        n += 1
    used.add(name.casefold())
    return name


def _local_date(dt: datetime, tz: ZoneInfo) -> date:
    return dt.astimezone(tz).date()


_BOLD = Font(bold=True)
_TITLE = Font(bold=True, size=14)
_HEAD_FILL = PatternFill("solid", fgColor="DDEBF7")
_TOTAL_FILL = PatternFill("solid", fgColor="F2F2F2")
_WRAP = Alignment(wrap_text=True, vertical="top")


def _header(ws, row: int, headers: list[str], widths: list[int]) -> None:
    for col, (text, width) in enumerate(zip(headers, widths), start=1):
        cell = ws.cell(row=row, column=col, value=text)
        cell.font, cell.fill = _BOLD, _HEAD_FILL
        cell.alignment = Alignment(wrap_text=True, vertical="center", horizontal="center")
        ws.column_dimensions[get_column_letter(col)].width = width
    ws.freeze_panes = ws.cell(row=row + 1, column=1)


STATUS_WORDS = {"scheduled": "chưa mở", "open": "đang mở", "closed": "đã kết thúc"}


def in_progress_word(status: str) -> str:
    """A quiz begun and not handed in: under way while the round runs, left unfinished once it is over."""
    return (LEFT_UNFINISHED if status == "closed" else IN_PROGRESS).capitalize()


def _title_block(ws, title: str, data: ReportData, rr: RoundReport) -> None:
    ws["A1"] = title
    ws["A1"].font = _TITLE
    ws["A2"] = f"{rr.document_code} — {rr.document_title}"
    ws["A3"], ws["B3"] = "Đơn vị", data.unit_name
    ws["A4"], ws["B4"], ws["C4"], ws["D4"] = "Mở đợt", _local_date(rr.opens_at, data.tz), "Kết thúc", \
        _local_date(rr.closes_at, data.tz)
    ws["A5"], ws["B5"], ws["C5"], ws["D5"] = "Mục tiêu", rr.target / 100, "Ngày lập", \
        _local_date(data.generated_at, data.tz)
    ws["E4"], ws["F4"] = "Trạng thái", STATUS_WORDS.get(rr.status, rr.status)
    ws["E4"].font = _BOLD
    for ref in ("B4", "D4", "D5"):
        ws[ref].number_format = DATE
    ws["B5"].number_format = "0%" if float(rr.target).is_integer() else PERCENT
    for ref in ("A3", "A4", "C4", "A5", "C5"):
        ws[ref].font = _BOLD


def _unit_row(ws, row: int, f: Figures, label: str | None = None) -> None:
    values = [
        f.unit_code, label or f.unit_name, f.audience, f.finished, f.rate / 100, f.passed,
        None if f.average_score is None else f.average_score / 100, f.in_progress, f.not_started,
        f.needed, "Đạt" if f.target_met else "Chưa đạt", f.exempt,
    ]
    for col, value in enumerate(values, start=1):
        ws.cell(row=row, column=col, value=value)
    ws.cell(row=row, column=2).alignment = _WRAP  # a long unit name wraps, not hidden under the next column
    ws.cell(row=row, column=5).number_format = PERCENT
    ws.cell(row=row, column=7).number_format = PERCENT


def _units_sheet(wb: Workbook, used: set[str], data: ReportData, rr: RoundReport) -> None:
    ws = wb.create_sheet(sheet_title(f"Đợt {rr.round_id} - Đơn vị", used))
    _title_block(ws, "KẾT QUẢ HỌC TẬP THEO ĐƠN VỊ", data, rr)
    headers = [in_progress_word(rr.status) if h == "Đang làm dở" else h for h in UNIT_HEADERS]
    _header(ws, HEADER_ROW, headers, [12, 40, 12, 12, 12, 12, 12, 12, 12, 14, 12, 14])
    row = HEADER_ROW + 1
    _unit_row(ws, row, rr.total, f"Tổng cộng: {rr.total.unit_name}")
    for col in range(1, len(UNIT_HEADERS) + 1):
        ws.cell(row=row, column=col).font = _BOLD
        ws.cell(row=row, column=col).fill = _TOTAL_FILL
    for f in rr.units:
        row += 1
        _unit_row(ws, row, f)
    ws.auto_filter.ref = f"A{HEADER_ROW}:{get_column_letter(len(UNIT_HEADERS))}{row}"


def _members_sheet(wb: Workbook, used: set[str], data: ReportData) -> None:
    ws = wb.create_sheet(sheet_title(NOT_FINISHED_SHEET, used))
    headers = MEMBER_HEADERS if data.include_phones else [h for h in MEMBER_HEADERS if h != "Số điện thoại"]
    ws["A1"] = "DANH SÁCH ĐẢNG VIÊN CHƯA HOÀN THÀNH BÀI KIỂM TRA"
    ws["A1"].font = _TITLE
    ws["A3"], ws["B3"] = "Đơn vị", data.unit_name
    ws["A4"], ws["B4"] = "Ngày lập", _local_date(data.generated_at, data.tz)
    ws["B4"].number_format = DATE
    ws["A5"] = "; ".join(
        f"Đợt {rr.round_id}: {rr.not_finished_total} đảng viên"
        + (f" (liệt kê {len(rr.not_finished)})" if len(rr.not_finished) < rr.not_finished_total else "")
        for rr in data.rounds)
    for ref in ("A3", "A4"):
        ws[ref].font = _BOLD
    widths = {"Đợt": 8, "Tài liệu": 14, "Họ và tên": 28, "Mã đảng viên": 14, "Đơn vị": 36,
              "Số điện thoại": 16, "Tình trạng": 14}
    _header(ws, HEADER_ROW, headers, [widths[h] for h in headers])
    row = HEADER_ROW
    for rr in data.rounds:
        for nf in rr.not_finished:
            row += 1
            values = {"Đợt": rr.round_id, "Tài liệu": rr.document_code, "Họ và tên": nf.member.full_name,
                      "Mã đảng viên": nf.member.code, "Đơn vị": nf.unit_name,
                      "Số điện thoại": display_phone(nf.member.phone),
                      "Tình trạng": in_progress_word(rr.status) if nf.in_progress else "Chưa làm"}
            for col, h in enumerate(headers, start=1):
                cell = ws.cell(row=row, column=col, value=values[h])
                if h == "Số điện thoại":
                    cell.number_format = "@"  # text: keep leading zeros
                elif h in ("Đơn vị", "Họ và tên"):
                    cell.alignment = _WRAP
    ws.auto_filter.ref = f"A{HEADER_ROW}:{get_column_letter(len(headers))}{max(row, HEADER_ROW)}"


def _questions_sheet(wb: Workbook, used: set[str], data: ReportData, rr: RoundReport) -> None:
    ws = wb.create_sheet(sheet_title(f"Đợt {rr.round_id} - Câu hỏi", used))
    _title_block(ws, "THỐNG KÊ THEO CÂU HỎI", data, rr)
    ws["F3"] = ("Chỉ số dễ, chỉ số phân biệt: chỉ tính lần làm bài đầu tiên (cách tính của Moodle); "
                "nhóm 27%: tỷ lệ đúng của 27% bài điểm cao nhất trừ 27% bài điểm thấp nhất.")
    _header(ws, HEADER_ROW, QUESTION_HEADERS, [8, 60, 10, 10, 12, 14, 12, 12, 12, 12, 12, 50])
    row = HEADER_ROW
    for q in rr.questions:
        row += 1
        values = [
            q.position, q.text, q.seen, q.answered,
            None if q.share_correct is None else q.share_correct / 100,
            q.wrong_letter or "", q.wrong_count, q.first_attempts,
            None if q.facility is None else q.facility / 100,
            None if q.discrimination is None else round(q.discrimination, 1),
            None if q.upper_lower is None else round(q.upper_lower, 1),
            flag.suggestion_vi if (flag := flag_question(q)) else None,
        ]
        for col, value in enumerate(values, start=1):
            ws.cell(row=row, column=col, value=value)
        ws.cell(row=row, column=2).alignment = _WRAP
        ws.cell(row=row, column=12).alignment = _WRAP
        for col in (5, 9):
            ws.cell(row=row, column=col).number_format = PERCENT
        for col in (10, 11):
            ws.cell(row=row, column=col).number_format = "0.0"
    ws.auto_filter.ref = f"A{HEADER_ROW}:{get_column_letter(len(QUESTION_HEADERS))}{max(row, HEADER_ROW)}"


def build_workbook(data: ReportData) -> bytes:
    """The .xlsx file as bytes (openpyxl)."""
    wb = Workbook()
    wb.remove(wb.active)
    used: set[str] = set()
    for rr in data.rounds:
        _units_sheet(wb, used, data, rr)
    _members_sheet(wb, used, data)
    for rr in data.rounds:
        _questions_sheet(wb, used, data, rr)
    wb.properties.title = f"Báo cáo học tập nghị quyết — {data.unit_name}"
    wb.properties.creator = "hoctap-bot"
    out = io.BytesIO()
    save_workbook(wb, out)
    return out.getvalue()
