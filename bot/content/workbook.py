"""The Excel question sheet cadres fill in: the template, reading it back, and exporting a document.

Sheet ``Câu hỏi``: header ``Câu hỏi | A | B | C | D | E | F | Đáp án | Giải thích | Mục``, one question a
row. Sheet ``Văn bản`` (optional): ``Trường | Giá trị`` rows for the document's metadata; ``Điểm chính``
may repeat, one key point a row. Cells written from user text are stored as text, never as formulas.
"""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime
from pathlib import Path

from openpyxl import Workbook, load_workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

from bot.content.authoring import (
    ANSWER_WORD, KIND_NAMES, META_LABELS, OPTION_WORD, QUESTION_HEADER, Draft, DraftQuestion, check_question,
    kind_slug, nfc,
)
from bot.content.validate import KINDS
from bot.domain.messages import percent
from bot.sheets import fill_merged, first_visible_sheet, save_workbook, unpacked_size

QUESTION_SHEET = "Câu hỏi"
META_SHEET = "Văn bản"
MAX_ROWS, MAX_COLUMNS = 2_000, 40  # far more than a question pool needs; a sheet beyond is refused, not read
MAX_UNPACKED = 50 * 1024 * 1024  # bytes of the .xlsx's parts unpacked: a small file that unpacks to more is refused
META_HEADER = ["Trường", "Giá trị"]
EXAMPLE = DraftQuestion(
    "Theo Kế hoạch, mỗi đợt học tập nghị quyết phấn đấu có ít nhất bao nhiêu phần trăm đảng viên tham gia?",
    ["90%", "95%", "98%", "100%"], "C", "số lượng đảng viên tham gia phấn đấu đạt ít nhất 98%.", "Mục II.4",
)
GUIDE = [
    "Mỗi dòng một câu hỏi; từ 2 đến 6 phương án (A–F), điền liền nhau từ A.",
    "Đáp án: một chữ cái (A–F) của phương án đúng. Mục: phần của văn bản mà lời giải thích dẫn.",
    "Tránh để đáp án đúng luôn dài nhất; tránh phương án \"tất cả các đáp án trên\" (thứ tự phương án được xáo trộn).",
]


def _text_cell(ws, row: int, col: int, value) -> None:
    """Write user text as a cell; ``bot.sheets.save_workbook`` keeps '=...' text, not a formula."""
    cell = ws.cell(row=row, column=col)
    if value is None or value == "":
        return
    if isinstance(value, (date, datetime, int, float)):
        cell.value = value
        return
    cell.value = str(value)


def workbook_bytes(draft: Draft) -> bytes:
    """A workbook with the question sheet (and the metadata sheet) filled from a draft."""
    wb = Workbook()
    ws = wb.active
    ws.title = QUESTION_SHEET
    for col, name in enumerate(QUESTION_HEADER, start=1):
        ws.cell(row=1, column=col, value=name).font = Font(bold=True)
    for r, q in enumerate(draft.questions, start=2):
        _text_cell(ws, r, 1, q.text)
        for j, option in enumerate(q.options):
            _text_cell(ws, r, 2 + j, option)
        _text_cell(ws, r, 8, q.answer)
        _text_cell(ws, r, 9, q.explanation)
        _text_cell(ws, r, 10, q.section)
    widths = [60, 30, 30, 30, 30, 20, 20, 8, 50, 14]
    for col, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(col)].width = width
    ws.freeze_panes = "A2"
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")

    meta = wb.create_sheet(META_SHEET)
    for col, name in enumerate(META_HEADER, start=1):
        meta.cell(row=1, column=col, value=name).font = Font(bold=True)
    r = 2
    for label, key in META_LABELS.items():
        values = draft.meta.get(key)
        if key == "key_points":
            values = list(values or []) or [None]
        else:
            values = [values]
        for value in values:
            _text_cell(meta, r, 1, label)
            if isinstance(value, date):
                value = value.strftime("%d/%m/%Y")
            _text_cell(meta, r, 2, value)
            r += 1
    meta.column_dimensions["A"].width = 20
    meta.column_dimensions["B"].width = 100
    for row in meta.iter_rows(min_row=2):
        row[1].alignment = Alignment(wrap_text=True, vertical="top")
    return _save(wb)


def template_bytes() -> bytes:
    """The empty template: header, one example row to overwrite, and a short guide beside it."""
    draft = Draft(questions=[EXAMPLE])
    wb = load_workbook(io.BytesIO(workbook_bytes(draft)))
    ws = wb[QUESTION_SHEET]
    for i, line in enumerate(GUIDE, start=1):
        cell = ws.cell(row=i, column=12, value=line)
        cell.font = Font(italic=True)
    ws.column_dimensions["L"].width = 80
    return _save(wb)


def read_workbook(path: Path) -> Draft:
    """Questions and metadata from a workbook; every problem names its sheet, row and column."""
    draft = Draft()
    name = path.name
    try:
        unpacked = unpacked_size(path)
    except (zipfile.BadZipFile, OSError):
        unpacked = 0  # not a zip: openpyxl says so below
    if unpacked > MAX_UNPACKED:
        draft.problems.append(f"{name}: tệp Excel chứa quá nhiều dữ liệu ({unpacked // 1024 // 1024} MB khi giải nén); "
                              "một bộ câu hỏi chỉ cần vài trăm dòng: hãy chép các câu hỏi sang mẫu Excel mới")
        return draft
    try:
        wb = load_workbook(path)  # not data_only: formulas are refused rather than read as cached values
    except Exception:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
        draft.problems.append(f"{name}: không mở được như một tệp Excel .xlsx; "
                              "hãy mở tệp bằng Excel và lưu lại dưới dạng .xlsx")
        return draft
    ws = wb[QUESTION_SHEET] if QUESTION_SHEET in wb.sheetnames else first_visible_sheet(wb)
    where = f"{name}: trang tính '{ws.title}'"
    for sheet in (ws, *([wb[META_SHEET]] if META_SHEET in wb.sheetnames else [])):
        if sheet.max_row > MAX_ROWS or sheet.max_column > MAX_COLUMNS:
            draft.problems.append(
                f"{name}: trang tính '{sheet.title}' dùng tới dòng {sheet.max_row}, cột "
                f"{get_column_letter(min(sheet.max_column, 16384))}: quá lớn cho một bộ câu hỏi (tối đa "
                f"{MAX_ROWS} dòng, {MAX_COLUMNS} cột); hãy xoá các dòng, cột thừa ở cuối trang (kể cả ô chỉ có định "
                "dạng) hoặc chép các câu hỏi sang mẫu Excel mới")
            return draft
        fill_merged(sheet)  # a "Mục" merged down the rows of its questions belongs to each of them
    header = [_cell_text(c) for c in next(ws.iter_rows(min_row=1, max_row=1), [])]
    columns = {}
    for col, title in enumerate(header, start=1):
        key = _fold(title)
        for wanted in QUESTION_HEADER:
            if key == _fold(wanted):
                columns.setdefault(wanted, col)
    missing = [h for h in ("Câu hỏi", "A", "B", "Đáp án") if h not in columns]
    if missing:
        draft.problems.append(f"{where}, dòng 1: thiếu cột {', '.join(missing)}; dòng tiêu đề cần là "
                              f"{' | '.join(QUESTION_HEADER)}")
        return draft
    for row in ws.iter_rows(min_row=2):
        r = row[0].row
        cells = {h: (row[c - 1] if c - 1 < len(row) else None) for h, c in columns.items()}
        values: dict[str, str] = {}
        bad = False
        for h, cell in cells.items():
            if cell is not None and cell.data_type == "f":
                draft.problems.append(f"{where}, dòng {r}, cột {cell.column_letter} ({h}): đang là công thức; "
                                      "hãy gõ trực tiếp nội dung")
                bad = True
            values[h] = _cell_text(cell) if cell is not None else ""
        if not any(values.values()):
            continue
        if bad:
            continue
        options, gap = [], None
        for letter in "ABCDEF":
            v = values.get(letter, "")
            if v and gap is not None:
                draft.problems.append(f"{where}, dòng {r}, cột {get_column_letter(columns[letter])} ({letter}): "
                                      f"phương án {gap} đang trống; hãy điền các phương án liền nhau từ A")
                bad = True
                break
            if v:
                options.append(v)
            elif gap is None:
                gap = letter
        q = DraftQuestion(values["Câu hỏi"], options, values["Đáp án"],
                          values.get("Giải thích") or None, values.get("Mục") or None, where=f"{where}, dòng {r}")
        for problem in ([] if bad else check_question(q, "")):
            head = "Đáp án" if ANSWER_WORD in problem else "A" if OPTION_WORD in problem else "Câu hỏi"
            col = get_column_letter(columns[head])
            draft.problems.append(f"{where}, dòng {r}, cột {col} ({head}){problem}")
        if not bad:
            draft.questions.append(q)
    if META_SHEET in wb.sheetnames:
        _read_meta(wb[META_SHEET], name, draft)
    return draft


def _read_meta(ws, name: str, draft: Draft) -> None:
    labels = {_fold(k): v for k, v in META_LABELS.items()}
    labels.update({_fold(v): v for v in META_LABELS.values()})  # the file's own field names work too
    for row in ws.iter_rows(min_row=2, max_col=2):
        label = _cell_text(row[0])
        value = _cell_text(row[1]) if len(row) > 1 else ""
        if not label:
            continue
        key = labels.get(_fold(label))
        if key is None:
            draft.problems.append(f"{name}: trang tính '{ws.title}', dòng {row[0].row}, cột A: không có trường "
                                  f"'{label}'; hãy dùng một trong: {', '.join(META_LABELS)}")
            continue
        if len(row) > 1 and row[1].data_type == "f":
            draft.problems.append(f"{name}: trang tính '{ws.title}', dòng {row[0].row}, cột B ({label}): "
                                  "đang là công thức; hãy gõ trực tiếp nội dung")
            continue
        if key == "key_points":
            if value:
                draft.meta.setdefault("key_points", []).append(value)
        elif key == "issued_on" and row[1].is_date:
            draft.meta[key] = row[1].value.date() if isinstance(row[1].value, datetime) else row[1].value
        elif key == "kind" and value:
            if kind_slug(value) not in KINDS:  # said here, where the cell is known
                draft.problems.append(f"{name}: trang tính '{ws.title}', dòng {row[0].row}, cột B ({label}): không có "
                                      f"loại văn bản '{value}'; hãy dùng một trong: "
                                      f"{', '.join(k.capitalize() for k in KIND_NAMES)}")
                continue
            draft.meta[key] = kind_slug(value)
        elif value:
            draft.meta[key] = value


def _cell_text(cell) -> str:
    """What the cell shows: a number Excel formats as a percentage (typed "95%", stored 0.95) reads "95%"."""
    if cell is None or cell.value is None:
        return ""
    value = cell.value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "%" in (cell.number_format or ""):
        return percent(value * 100)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, datetime):
        return value.strftime("%d/%m/%Y")
    return nfc(str(value)).replace("\r\n", "\n")


def _fold(text: str) -> str:
    return " ".join(nfc(text or "").casefold().split())


def _save(wb: Workbook) -> bytes:
    buf = io.BytesIO()
    save_workbook(wb, buf)
    return buf.getvalue()
