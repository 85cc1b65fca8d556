"""Spreadsheets the product writes (reports, invitation lists): people's text is never a formula.

A member imported as ``=HYPERLINK("http://x")`` must show as that text in the secretary's Excel, not
run. Text that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is what Excel and
LibreOffice read as a formula, so every XLSX is saved through ``save_workbook`` and every CSV row
goes through ``csv_row``. The product writes no formulas of its own.
"""

from __future__ import annotations

import zipfile
from typing import IO, Any

from openpyxl import Workbook

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def fill_merged(ws, from_row: int = 1) -> None:
    """Merged cells read as the value they show in every cell of the merge (Excel shows it across them all);
    merges starting above ``from_row`` (a header's) are left as they are."""
    for merged in list(ws.merged_cells.ranges):
        if merged.min_row < from_row:
            continue
        top_left = ws.cell(merged.min_row, merged.min_col)
        value, number_format = top_left.value, top_left.number_format
        ws.unmerge_cells(str(merged))
        for row in ws.iter_rows(min_row=merged.min_row, max_row=merged.max_row, min_col=merged.min_col,
                                max_col=merged.max_col):
            for cell in row:
                cell.value, cell.number_format = value, number_format


def unpacked_size(path) -> int:
    """Bytes an .xlsx's parts take unpacked (``zipfile.BadZipFile`` if it is not a zip)."""
    with zipfile.ZipFile(path) as packed:
        return sum(part.file_size for part in packed.infolist())


def first_visible_sheet(wb):
    """The sheet Excel opens on for someone who never saw the hidden ones."""
    return next((ws for ws in wb.worksheets if ws.sheet_state == "visible"), wb.worksheets[0])


def reads_as_formula(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_STARTS)


def save_workbook(wb: Workbook, target: str | IO[bytes]) -> None:
    """Save ``wb`` with every such text cell stored as text (an inline string, not a formula) and
    marked with Excel's quote prefix, so that editing the cell does not turn it into a formula either."""
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if cell.data_type == "f" or reads_as_formula(cell.value):  # openpyxl made "=..." a formula
                    cell.data_type = "s"
                    cell.quotePrefix = True
    wb.save(target)


def csv_row(values: list[Any]) -> list[Any]:
    """A CSV row in which such text starts with an apostrophe (OWASP's advice: CSV has no cell types)."""
    return [f"'{v}" if reads_as_formula(v) else v for v in values]
