"""Read a roster table (CSV or XLSX) into numbered rows keyed by canonical column names."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from bot.paths import display_path
from bot.sheets import csv_row, fill_merged, first_visible_sheet, save_workbook, unpacked_size
from bot.text_files import decode_text


class TableError(Exception):
    """The file cannot be read as a table; the message is ready for the user."""


@dataclass
class Row:
    number: int  # as a spreadsheet shows it: the header is row 1
    values: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)  # column -> its header as written in the file

    def column(self, name: str) -> str:
        """How problems name a column: as the file's header says it (``Họ và tên``), else ``name``."""
        return self.headers.get(name, name)


# columns a sheet often has beside the roster's own (a row number, a remark): read past, not refused
IGNORED_HEADERS = {"stt", "tt", "số thứ tự", "so thu tu", "ghi chú", "ghi chu"}


def _key(header: str) -> str:
    text = unicodedata.normalize("NFC", str(header or "")).strip().casefold()
    return " ".join(text.replace("_", " ").split())


def read_table(path: Path, aliases: dict[str, str], required: tuple[str, ...]) -> list[Row]:
    """Rows of ``path`` with headers mapped through ``aliases`` (lower-cased header → column)."""
    shown = display_path(path)
    if not path.exists():
        raise TableError(f"{shown}: không tìm thấy tệp; hãy kiểm tra lại tên và đường dẫn của tệp")
    if not path.is_file():
        what = "đây là một thư mục, không phải tệp" if path.is_dir() else "không phải một tệp thường"
        raise TableError(f"{shown}: {what}; hãy ghi tên tệp .csv hoặc .xlsx")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        raw_rows = _xlsx_rows(path)
    elif suffix in (".csv", ".txt", ""):
        raw_rows = _csv_rows(path)
    else:
        raise TableError(f"{shown}: không đọc được tệp loại '{suffix}'; hãy dùng tệp .csv hoặc .xlsx")
    if not raw_rows:
        raise TableError(f"{shown}:1: tệp trống; dòng đầu tiên phải là dòng tiêu đề (tên các cột)")
    header = raw_rows[0]
    columns: list[str | None] = []
    written: dict[str, str] = {}
    names = ", ".join(_name(c, aliases) for c in required)
    for cell in header:
        key = _key(cell)
        columns.append(aliases.get(key) if key else None)
        if key and key not in aliases and key not in IGNORED_HEADERS:
            raise TableError(f"{shown}:1: {cell}: không nhận ra tên cột này; hãy dùng các cột {names}")
        if key in aliases:
            if aliases[key] in columns[:-1]:  # two columns for one field: which one holds it?
                raise TableError(f"{shown}:1: {cell}: cột {_name(aliases[key], aliases)} có hai lần; hãy giữ lại "
                                 "một cột (nếu họ và tên nằm ở hai cột, hãy gộp thành một)")
            written.setdefault(aliases[key], " ".join(str(cell).split()))
    missing = [_name(c, aliases) for c in required if c not in columns]
    if missing:
        raise TableError(f"{shown}:1: {', '.join(missing)}: thiếu cột; dòng tiêu đề cần có các cột {names}")
    rows: list[Row] = []
    for number, cells in enumerate(raw_rows[1:], start=2):
        if not any(str(c or "").strip() for c in cells):
            continue  # blank lines are not rows
        values = {col: "" for col in required}
        for col, cell in zip(columns, cells):
            if col:
                values[col] = unicodedata.normalize("NFC", _cell_text(cell)).strip()
        rows.append(Row(number, values, written))
    return rows


def _name(column: str, aliases: dict[str, str]) -> str:
    """A column's Vietnamese header (``Họ và tên``), the first one with diacritics among its aliases."""
    vietnamese = [key for key, col in aliases.items() if col == column and not key.isascii()]
    return vietnamese[0].capitalize() if vietnamese else column


def _cell_text(cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


FULL_READ_UNPACKED = 5 * 1024 * 1024  # bytes unpacked: some thousands of members; above, the workbook is streamed
DELIMITERS = (",", ";", "\t")  # Excel writes ';' where the decimal mark is ','; "Unicode text" is tab-separated


def _csv_rows(path: Path) -> list[list[str]]:
    """Rows as RFC 4180 reads them (quoted fields, ``""`` for a quote, line breaks inside quotes), whatever
    the delimiter; only the delimiter is chosen, as the one that splits the header into the most columns."""
    shown = display_path(path)
    data = path.read_bytes()
    try:
        text = decode_text(data)
    except UnicodeDecodeError as exc:  # neither UTF-8 nor the Windows code page, or UTF-8 with a damaged byte
        line = data[:exc.start].count(b"\n") + 1
        raise TableError(f"{shown}:{line}: tệp không ở bảng mã UTF-8 (byte {exc.start}); trong Excel hãy chọn "
                         "Lưu thành (Save As) dạng 'CSV UTF-8'") from None
    if "\x00" in text:  # a binary file renamed .csv; PostgreSQL cannot store the character either
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise TableError(f"{shown}:{line}: có ký tự NUL, có lẽ đây không phải tệp văn bản CSV; "
                         "hãy lưu lại dưới dạng 'CSV UTF-8'")
    lines = text.splitlines()
    hint = re.fullmatch(r"sep=(.)", lines[0].strip()) if lines else None
    if hint:  # Excel's own first line naming the delimiter; Excel does not show it as a row
        text = text.split("\n", 1)[1] if "\n" in text else ""
        lines = lines[1:]
    header = lines[0] if lines else ""
    delimiter = hint.group(1) if hint else max(
        DELIMITERS, key=lambda d: len(next(csv.reader([header], delimiter=d), [])))
    # strict, to learn of a quote left open (else one cell swallows every row after it); anything else strict
    # refuses that Excel reads (a space after a closing quote) is read as before
    rows, start, error = _csv_read(text, delimiter, strict=True)
    if rows is None and "unexpected end of data" not in error and "field larger" not in error:
        rows, start, error = _csv_read(text, delimiter, strict=False)
    if rows is None:
        raise TableError(f"{shown}:{start}: không đọc được theo dạng CSV từ dòng này; hãy kiểm tra dấu ngoặc kép "
                         "chưa đóng hoặc ô quá dài")
    return rows


def _csv_read(text: str, delimiter: str, *, strict: bool) -> tuple[list[list[str]] | None, int, str]:
    """(rows, _, "") or (None, the line the failing row starts on, the csv module's error)."""
    reader = csv.reader(io.StringIO(text, newline=""), csv.excel, delimiter=delimiter, strict=strict)
    rows, start = [], 1
    try:
        for row in reader:
            rows.append(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        return None, start, str(exc)
    return rows, start, ""


def _xlsx_rows(path: Path) -> list[list]:
    """The first visible sheet's rows. A workbook of up to FULL_READ_UNPACKED bytes unpacked (a commune's
    roster, typed by hand) is read whole, so that a unit merged down its members' rows belongs to each of
    them, as Excel shows it; a larger one (a province's export) is streamed, merges not filled."""
    from openpyxl import load_workbook

    shown = display_path(path)
    try:
        whole = unpacked_size(path) <= FULL_READ_UNPACKED
        wb = load_workbook(path, read_only=not whole, data_only=True)
    except Exception:  # openpyxl raises many types for a damaged file
        raise TableError(f"{shown}: không mở được dưới dạng bảng tính Excel; "
                         "hãy mở tệp bằng Excel và lưu lại dưới dạng .xlsx") from None
    try:
        sheet = first_visible_sheet(wb)
        if whole:
            _refuse_uncomputed(path, shown, sheet)
            fill_merged(sheet, from_row=2)  # the data's merges; a header merged over two rows stays one header
        return [list(r) for r in sheet.iter_rows(values_only=True)]
    finally:
        wb.close()


def _refuse_uncomputed(path: Path, shown: str, sheet) -> None:
    """A formula whose value was never computed (a file written by a program, not saved by Excel) reads as an
    empty cell: name the first such cell, rather than report it empty when Excel shows a value there."""
    from openpyxl import load_workbook

    if not any(cell is None for row in sheet.iter_rows(values_only=True) for cell in row):
        return  # every cell has a value: nothing can be an uncomputed formula
    formulas = load_workbook(path, data_only=False)
    try:
        raw = formulas[sheet.title]
        for row in raw.iter_rows():
            for cell in row:
                if isinstance(cell.value, str) and cell.value.startswith("=") \
                        and sheet[cell.coordinate].value is None:
                    raise TableError(f"{shown}: ô {cell.coordinate} (trang «{sheet.title}») chứa công thức chưa được "
                                     "tính ra giá trị (tệp do một phần mềm khác tạo); hãy mở tệp bằng Excel rồi lưu "
                                     "lại, hoặc ghi giá trị thay cho công thức")
    finally:
        formulas.close()


def write_table(path: Path, header: list[str], rows: list[list]) -> None:
    """Write CSV (UTF-8 with BOM, so Excel shows Vietnamese right) or XLSX, by the file's suffix; text that
    a spreadsheet would run as a formula stays text (bot/sheets.py)."""
    if path.suffix.lower() == ".xlsx":
        from openpyxl import Workbook

        wb = Workbook()
        ws = wb.active
        ws.append(header)
        for row in rows:
            ws.append(row)
        save_workbook(wb, path)
        return
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(csv_row(header))
        writer.writerows(csv_row(row) for row in rows)
