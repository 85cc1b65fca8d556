"""Roster import: all-or-nothing, every bad row named, updates by code, deactivation not deletion."""

from __future__ import annotations

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from bot.storage.models import Member, Unit
from tests.conftest import SAMPLES, windows_1258

UNITS = "code,name,parent_code\nP,Tỉnh,\nD,Huyện,P\nB1,Chi bộ 1,D\nB2,Chi bộ 2,D\n"
MEMBERS = (
    "member_code,full_name,unit_code,phone,role\n"
    "M1,Nguyễn Văn An,B1,0912 345 678,secretary\n"
    "M2,Trần Thị Bình,B1,+84912345679,member\n"
    "M3,Lê Văn Cường,B2,84912345680,member\n"
)


def write(folder, name, text):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def counts(db):
    with db.session() as s:
        return s.scalar(select(func.count(Unit.id))), s.scalar(select(func.count(Member.id)))


def test_sample_roster_imports_and_lists(cli):
    assert cli("units", "import", SAMPLES / "units.csv").out.strip() == "units: 11 created, 0 updated, 0 unchanged"
    assert cli("members", "import", SAMPLES / "members.csv").out.strip() == "members: 63 created, 0 updated, 0 unchanged"
    listed = cli("members", "list", "--unit", "DP-TT")
    assert listed.code == 0 and len(listed.lines) == 30
    assert cli("members", "list").lines.__len__() == 63
    unknown = cli("members", "list", "--unit", "XX")
    assert (unknown.code, unknown.err.strip()) == (1, "error: không có đơn vị mã 'XX'; xem các đơn vị bằng "
                                                      "'hoctap units list'")


def test_phones_are_shown_to_secretaries_as_they_are_dialled_not_in_the_stored_form():
    from bot.domain.phones import display_phone

    assert display_phone("+84912345678") == "0912 345 678"  # a mobile: 4-3-3
    assert display_phone("+842438251234") == "024 3825 1234"  # a Hà Nội landline: 3-4-4
    assert display_phone("+842713888999") == "0271 388 8999"  # Bình Phước's: a four-digit area code
    assert display_phone(None) == "" and display_phone("+84 abc") == "+84 abc"  # nothing to mend: as stored


def test_a_mobile_number_with_a_digit_too_many_is_refused_not_stored():
    from bot.domain.phones import normalize_phone

    assert normalize_phone("09123450099") is None  # 11 digits: only landlines (02x) are that long
    assert normalize_phone("+84 9123450099") is None
    assert normalize_phone("024 3825 1234") == "+842438251234" and normalize_phone("0912 345 678") == "+84912345678"


def test_phones_in_any_written_form_are_stored_alike(cli, workdir, db):
    cli("units", "import", write(workdir, "u.csv", UNITS))
    assert cli("members", "import", write(workdir, "m.csv", MEMBERS)).code == 0
    with db.session() as s:
        phones = s.scalars(select(Member.phone).order_by(Member.code)).all()
    assert phones == ["+84912345678", "+84912345679", "+84912345680"]


def test_bad_unit_rows_are_all_listed_and_nothing_is_imported(cli, workdir, db):
    bad = "code,name,parent_code\nP,Tỉnh,\nD,,P\nB1,Chi bộ 1,X\nP,Lặp,\nB 2,Chi bộ,P\n"
    result = cli("units", "import", write(workdir, "u.csv", bad))
    assert result.code == 1
    assert result.lines == [
        "u.csv:3: name: trống; hãy ghi tên đơn vị",
        "u.csv:4: parent_code: không có đơn vị mã 'X'; hãy thêm đơn vị vào tệp hoặc nhập danh sách đơn vị trước",
        "u.csv:5: code: 'P' đã có ở dòng 2; mỗi đơn vị chỉ ghi một lần",
        "u.csv:6: code: 'B 2' có ký tự không dùng được; hãy chỉ dùng chữ cái không dấu, chữ số và '.', '-', '_', '/'",
    ]
    assert counts(db) == (0, 0)


def test_unknown_parent_is_refused(cli, workdir, db):
    result = cli("units", "import", write(workdir, "u.csv", "code,name,parent_code\nP,Tỉnh,\nB1,Chi bộ 1,X\n"))
    assert result.code == 1
    assert result.lines == ["u.csv:3: parent_code: không có đơn vị mã 'X'; hãy thêm đơn vị vào tệp hoặc nhập danh "
                            "sách đơn vị trước"]
    assert counts(db) == (0, 0)


def test_a_cycle_is_refused(cli, workdir, db):
    cli("units", "import", write(workdir, "u.csv", UNITS))
    result = cli("units", "import", write(workdir, "u2.csv", "code,name,parent_code\nD,Huyện,B1\n"))
    assert result.code == 1
    assert result.lines == ["u2.csv:2: parent_code: các đơn vị làm cấp trên của nhau (D → B1 → D); "
                            "hãy sửa lại mã đơn vị cấp trên"]
    with db.session() as s:
        assert s.scalar(select(Unit).where(Unit.code == "D")).parent.code == "P"


def test_bad_member_rows_are_all_listed_and_the_database_is_untouched(cli, workdir, db):
    cli("units", "import", write(workdir, "u.csv", UNITS))
    cli("members", "import", write(workdir, "m.csv", MEMBERS))
    bad = (
        "Mã đảng viên,Họ và tên,Mã đơn vị,Số điện thoại,Vai trò\n"
        "M1,Nguyễn Văn An (đổi),B2,0912 345 678,Bí thư\n"
        "M4,Phạm Văn Dũng,B9,0912345681,Đảng viên\n"
        "M5,,B1,12345,Chủ tịch\n"
        "M6,Hồ Thị Em,B1,0912345679,Đảng viên\n"
    )
    result = cli("members", "import", write(workdir, "bad.csv", bad))
    assert result.code == 1
    assert result.lines == [
        "bad.csv:3: Mã đơn vị: không có đơn vị mã 'B9'; hãy kiểm tra lại mã hoặc nhập danh sách đơn vị trước",
        "bad.csv:4: Họ và tên: trống; hãy ghi họ và tên đảng viên",
        "bad.csv:4: Số điện thoại: '12345' không phải số điện thoại Việt Nam; hãy ghi số như 0912 345 678",
        "bad.csv:4: Vai trò: không có vai trò 'Chủ tịch'; hãy ghi Đảng viên, Bí thư, Cán bộ hoặc Quản trị "
        "(hay member, secretary, cadre, admin)",
        "bad.csv:5: Số điện thoại: số 0912345679 đang là số của đảng viên M2; mỗi đảng viên cần một số riêng, hãy kiểm tra lại",
    ]
    with db.session() as s:
        m1 = s.scalar(select(Member).where(Member.code == "M1"))
        assert (m1.full_name, m1.unit.code) == ("Nguyễn Văn An", "B1")
        assert s.scalar(select(func.count(Member.id))) == 3


def test_reimport_updates_by_code_and_full_deactivates_the_missing(cli, workdir, db):
    cli("units", "import", write(workdir, "u.csv", UNITS))
    cli("members", "import", write(workdir, "m.csv", MEMBERS))
    again = "member_code,full_name,unit_code,phone,role\nM1,Nguyễn Văn An,B2,0912 345 678,cadre\nM2,Trần Thị Bình,B1,+84912345679,member\n"
    result = cli("members", "import", "--full", write(workdir, "m2.csv", again))
    assert result.out.strip() == "members: 0 created, 1 updated, 1 unchanged, 1 deactivated"
    with db.session() as s:
        by_code = {m.code: (m.unit.code, m.role, m.active) for m in s.scalars(select(Member))}
    assert by_code["M1"] == ("B2", "cadre", True)
    assert by_code["M3"] == ("B2", "member", False)  # kept, not deleted
    assert cli("members", "list").lines.__len__() == 2
    assert cli("members", "list", "--all").lines.__len__() == 3
    # a later import that lists M3 again brings them back
    result = cli("members", "import", write(workdir, "m3.csv", MEMBERS))
    assert "1 reactivated" in result.out


def test_a_reimport_that_writes_codes_in_another_case_updates_the_same_units_and_members(cli, workdir, db):
    """Excel users retype codes: ``m1`` and ``b2`` are the member M1 and the branch B2, not new ones, and a
    full list written in lower case stops nobody it names."""
    cli("units", "import", write(workdir, "u.csv", UNITS))
    cli("members", "import", write(workdir, "m.csv", MEMBERS))
    units_again = "code,name,parent_code\nb1,Chi bộ Một,d\np,Tỉnh,\n"
    assert cli("units", "import", write(workdir, "u2.csv", units_again)).out.strip() == "units: 0 created, 1 updated, 1 unchanged"
    again = ("member_code,full_name,unit_code,phone,role\nm1,Nguyễn Văn An,b2,0912 345 678,secretary\n"
             "m2,Trần Thị Bình,b1,+84912345679,member\nm3,Lê Văn Cường,B2,84912345680,member\n")
    result = cli("members", "import", "--full", write(workdir, "m2.csv", again))
    assert result.out.strip() == "members: 0 created, 1 updated, 2 unchanged"
    with db.session() as s:
        assert s.scalars(select(Unit.code).order_by(Unit.code)).all() == ["B1", "B2", "D", "P"]
        assert s.scalar(select(Unit.name).where(Unit.code == "B1")) == "Chi bộ Một"
        by_code = {m.code: (m.unit.code, m.active) for m in s.scalars(select(Member))}
    assert by_code == {"M1": ("B2", True), "M2": ("B1", True), "M3": ("B2", True)}


def test_a_code_stored_exactly_as_written_is_itself_even_beside_a_twin_in_another_case(cli, workdir, db):
    """Twins ``M1`` and ``m1`` from before codes matched whatever their case: a row ``M1`` is M1, never m1."""
    cli("units", "import", write(workdir, "u.csv", UNITS))
    cli("members", "import", write(workdir, "m.csv", MEMBERS))
    with db.session() as s:
        unit = s.scalar(select(Unit.id).where(Unit.code == "B1"))
        s.add(Member(code="m1", full_name="Người trùng mã", unit_id=unit, role="member", active=True))
    again = "member_code,full_name,unit_code,phone,role\nM1,Nguyễn Văn Anh,B1,0912 345 678,secretary\n"
    assert cli("members", "import", "--full", write(workdir, "m2.csv", again)).code == 0
    with db.session() as s:
        by_code = {m.code: (m.full_name, m.active) for m in s.scalars(select(Member))}
    assert by_code["M1"] == ("Nguyễn Văn Anh", True) and by_code["m1"] == ("Người trùng mã", False)


def test_one_code_written_twice_in_different_cases_is_refused_by_row(cli, workdir, db):
    cli("units", "import", write(workdir, "u.csv", UNITS))
    twice = "member_code,full_name,unit_code,phone,role\nM9,Nguyễn Văn An,B1,,member\nm9,Nguyễn Văn Án,B1,,member\n"
    result = cli("members", "import", write(workdir, "m.csv", twice))
    assert (result.code, result.lines) == (1, ["m.csv:3: member_code: 'M9' đã có ở dòng 2; mỗi đảng viên chỉ ghi "
                                               "một lần"])
    assert counts(db) == (4, 0)


def test_member_whose_unit_is_missing_is_refused(cli, workdir, db):
    result = cli("members", "import", write(workdir, "m.csv", MEMBERS))
    assert result.code == 1
    assert result.lines[0] == ("m.csv:2: unit_code: không có đơn vị mã 'B1'; hãy kiểm tra lại mã hoặc nhập danh "
                               "sách đơn vị trước")
    assert counts(db) == (0, 0)


def test_xlsx_with_vietnamese_headers_imports(cli, workdir, db):
    cli("units", "import", write(workdir, "u.csv", UNITS))
    wb = Workbook()
    ws = wb.active
    ws.append(["Mã đảng viên", "Họ và tên", "Mã đơn vị", "Số điện thoại", "Vai trò"])
    ws.append(["M1", "Nguyễn Văn An", "B1", 912345678, "Bí thư"])  # Excel ate the leading zero
    ws.append(["M2", "Trần Thị Bình", "B2", "0912 345 679", "Cán bộ"])
    wb.save(workdir / "m.xlsx")
    assert cli("members", "import", "m.xlsx").code == 0
    with db.session() as s:
        rows = s.execute(select(Member.code, Member.phone, Member.role).order_by(Member.code)).all()
    assert [tuple(r) for r in rows] == [("M1", "+84912345678", "secretary"), ("M2", "+84912345679", "cadre")]


def test_a_unit_merged_down_its_members_rows_belongs_to_each_and_a_hidden_first_sheet_is_passed_over(cli, workdir,
                                                                                                       db):
    """As Excel shows the file: a merged "Mã đơn vị" is every row's unit; the sheet read is the first one shown."""
    cli("units", "import", write(workdir, "u.csv", UNITS))
    wb = Workbook()
    wb.active.title, wb.active.sheet_state = "Nháp", "hidden"
    ws = wb.create_sheet("Danh sách")
    ws.append(["Mã đảng viên", "Họ và tên", "Mã đơn vị", "Số điện thoại", "Vai trò"])
    ws.append(["M1", "Nguyễn Văn An", "B1", "0912345678", "Bí thư"])
    ws.append(["M2", "Trần Thị Bình", None, "0912345679", "Đảng viên"])
    ws.append(["M3", "Lê Văn Cường", "B2", "0912345680", "Đảng viên"])
    ws.merge_cells("C2:C3")
    wb.save(workdir / "m.xlsx")
    result = cli("members", "import", "m.xlsx")
    assert result.code == 0, result.out + result.err
    with db.session() as s:
        rows = s.execute(select(Member.code, Unit.code).join(Unit).order_by(Member.code)).all()
    assert [tuple(r) for r in rows] == [("M1", "B1"), ("M2", "B1"), ("M3", "B2")]


def test_a_formula_never_computed_is_named_by_its_cell_not_reported_empty(cli, workdir, db):
    """A workbook written by a program holds formulas without their values (Excel computes them when it opens
    the file): the cell reads empty, while Excel shows a name there. The import says which cell and why."""
    cli("units", "import", write(workdir, "u.csv", UNITS))
    wb = Workbook()
    ws = wb.active
    ws.title = "Danh sách"
    ws.append(["Mã đảng viên", "Họ và tên", "Mã đơn vị", "Số điện thoại", "Vai trò"])
    ws.append(["M1", '=UPPER("nguyễn văn an")', "B1", "0912345678", "Bí thư"])  # openpyxl stores no value
    wb.save(workdir / "m.xlsx")
    result = cli("members", "import", "m.xlsx")
    assert result.code != 0
    assert "ô B2 (trang «Danh sách») chứa công thức chưa được tính ra giá trị" in result.out
    assert "trống" not in result.out
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Member)) == 0


def test_a_header_merged_over_two_rows_is_one_header_and_a_field_given_twice_is_refused(cli, workdir, db):
    cli("units", "import", write(workdir, "u.csv", UNITS))
    wb = Workbook()
    ws = wb.active
    ws.append(["Mã đảng viên", "Họ và tên", "Mã đơn vị", "Số điện thoại", "Vai trò"])
    ws.append([None] * 5)
    for column in "ABCDE":
        ws.merge_cells(f"{column}1:{column}2")  # as government sheets lay out their headers
    ws.append(["M1", "Nguyễn Văn An", "B1", "0912345678", "Bí thư"])
    wb.save(workdir / "m.xlsx")
    assert cli("members", "import", "m.xlsx").code == 0
    with db.session() as s:
        assert s.execute(select(Member.code, Member.full_name)).all() == [("M1", "Nguyễn Văn An")]
    twice = Workbook()
    twice.active.append(["Mã đảng viên", "Họ và tên", "Họ tên", "Mã đơn vị"])
    twice.active.append(["M2", "Trần Thị", "Trần Thị Bình", "B1"])
    twice.save(workdir / "twice.xlsx")
    result = cli("members", "import", "twice.xlsx")
    assert result.code == 1 and result.lines[0].startswith("twice.xlsx:1: Họ tên: cột Họ và tên có hai lần; ")


def test_unknown_header_names_the_column(cli, workdir):
    result = cli("units", "import", write(workdir, "u.csv", "code,name,cha\nP,Tỉnh,\n"))
    assert result.code == 1
    assert result.lines == ["u.csv:1: cha: không nhận ra tên cột này; hãy dùng các cột Mã đơn vị, Tên đơn vị, "
                            "Mã đơn vị cấp trên"]



@pytest.mark.parametrize("name, data, message", [
    ("u.doc", b"code,name\n", "u.doc: không đọc được tệp loại '.doc'; hãy dùng tệp .csv hoặc .xlsx"),
    ("u.csv", b"", "u.csv:1: tệp trống; dòng đầu tiên phải là dòng tiêu đề (tên các cột)"),
    ("u.csv", b"code,parent_code\nP,\n", "u.csv:1: Tên đơn vị: thiếu cột; dòng tiêu đề cần có các cột Mã đơn vị, Tên đơn vị, "
     "Mã đơn vị cấp trên"),
    ("u.csv", b"code,name,parent_code\nP,T\xe1\xbb\x89nh,\nD,Hu\xffy\xe1\xbb\x87n,P\n",  # UTF-8 with a damaged byte
     "u.csv:3: tệp không ở bảng mã UTF-8 (byte 36); trong Excel hãy chọn Lưu thành (Save As) dạng 'CSV UTF-8'"),
    ("u.xlsx", b"not a workbook", "u.xlsx: không mở được dưới dạng bảng tính Excel; "
                                  "hãy mở tệp bằng Excel và lưu lại dưới dạng .xlsx"),
], ids=["unsupported", "empty", "missing-column", "damaged-utf8", "broken-xlsx"])
def test_a_file_that_cannot_be_read_as_a_table_says_what_to_do(cli, workdir, db, name, data, message):
    (workdir / name).write_bytes(data)
    result = cli("units", "import", name)
    assert (result.code, result.lines) == (1, [message])
    assert counts(db) == (0, 0)


def test_a_missing_file_is_named(cli, workdir):
    result = cli("units", "import", "khong-co.csv")
    assert (result.code, result.lines) == (1, ["khong-co.csv: không tìm thấy tệp; hãy kiểm tra lại tên và đường dẫn "
                                               "của tệp"])


QUOTED_NAMES = ['Tên "có" ngoặc', 'Nguyễn, Văn; An', 'Lê\tThị "Ba"', '"Trích dẫn"']


@pytest.mark.parametrize("delimiter, encoding", [(",", "utf-8-sig"), (";", "utf-8-sig"), ("\t", "utf-8"),
                                                 ("\t", "utf-16")], ids=["comma-bom", "semicolon-bom", "tab", "tab-utf16"])
def test_quoted_fields_are_read_as_rfc_4180_says_whatever_the_delimiter(cli, workdir, db, delimiter, encoding):
    """Names with quotes written the way Excel writes them ("" for a quote) come back exactly."""
    import csv
    import io

    cli("units", "import", write(workdir, "u.csv", UNITS))
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(["Mã đảng viên", "Họ và tên", "Mã đơn vị", "Số điện thoại", "Vai trò"])
    for i, name in enumerate(QUOTED_NAMES):
        writer.writerow([f"M{i}", name, "B1", "", "Đảng viên"])
    assert '"Tên ""có"" ngoặc"' in out.getvalue()
    (workdir / "m.csv").write_bytes(out.getvalue().encode(encoding))
    result = cli("members", "import", "m.csv")
    assert result.code == 0, result.out
    with db.session() as s:
        assert s.scalars(select(Member.full_name).order_by(Member.code)).all() == QUOTED_NAMES


def test_a_csv_saved_by_excel_in_the_windows_code_page_imports_with_every_diacritic(cli, workdir, db):
    (workdir / "u.csv").write_bytes(windows_1258(UNITS.replace(",", ";")))
    (workdir / "m.csv").write_bytes(windows_1258(MEMBERS.replace(",", ";")))
    assert b"Nguy\xea\xden" in (workdir / "m.csv").read_bytes()  # ê, then the tilde as a mark of its own
    assert cli("units", "import", "u.csv").code == 0
    result = cli("members", "import", "m.csv")
    assert result.code == 0, result.out
    with db.session() as s:
        assert s.scalars(select(Unit.name).order_by(Unit.code)).all() == ["Chi bộ 1", "Chi bộ 2", "Huyện", "Tỉnh"]
        assert s.scalars(select(Member.full_name).order_by(Member.code)).all() == [
            "Nguyễn Văn An", "Trần Thị Bình", "Lê Văn Cường"]


def test_a_windows_1258_csv_with_typographic_quotes_and_dashes_after_a_tone_imports(cli, workdir, db):
    """In Windows-1258 a tone mark (0xCC, 0xD2, 0xDE, 0xEC) before ” … – makes a well-formed UTF-8 pair: the file is
    still read as written, not refused as damaged UTF-8."""
    names = ["Khẩu hiệu “Tất cả vì nhà”", "Xóm Hoà…", "Ấp Ở–Tổ 3"]
    rows = "".join(f"U{i},{name},\n" for i, name in enumerate(names))
    (workdir / "u.csv").write_bytes(windows_1258("Mã đơn vị;Tên đơn vị;Mã đơn vị cấp trên\n".replace(";", ",") + rows))
    result = cli("units", "import", "u.csv")
    assert result.code == 0, result.out
    with db.session() as s:
        assert s.scalars(select(Unit.name).order_by(Unit.code)).all() == names


def test_a_csv_with_a_nul_byte_is_refused_with_its_line(cli, workdir, db):
    (workdir / "u.csv").write_bytes(b"code,name,parent_code\nP,T\x00nh,\n")
    result = cli("units", "import", "u.csv")
    assert result.code == 1
    assert result.lines == ["u.csv:2: có ký tự NUL, có lẽ đây không phải tệp văn bản CSV; "
                            "hãy lưu lại dưới dạng 'CSV UTF-8'"]
    assert counts(db) == (0, 0)


@pytest.mark.parametrize("body, line", [
    ("code,name,parent_code\nP,Tỉnh,\nD," + "x" * 200_000 + ",P\n", 3),  # a field too long for CSV
    # a quote left open: refused where it opens, not one cell swallowing every row after it
    ('code,name,parent_code\nT,"Tỉnh Đồng Nai,\nX1,Xã 1,T\nX2,Xã 2,T\n', 2),
], ids=["field-too-long", "quote-left-open"])
def test_a_csv_that_cannot_be_read_is_refused_at_the_row_where_it_breaks(cli, workdir, db, body, line):
    write(workdir, "u.csv", body)
    result = cli("units", "import", "u.csv")
    assert result.code == 1
    assert result.lines == [f"u.csv:{line}: không đọc được theo dạng CSV từ dòng này; "
                            "hãy kiểm tra dấu ngoặc kép chưa đóng hoặc ô quá dài"]
    assert counts(db) == (0, 0)


def test_a_space_typed_after_a_closing_quote_is_read_as_excel_reads_it(cli, workdir, db):
    write(workdir, "u.csv", 'code,name,parent_code\nP,"Tỉnh" ,\nB1,"Chi bộ 1" ,P\n')
    result = cli("units", "import", "u.csv")
    assert result.code == 0, result.out + result.err
    with db.session() as s:
        assert s.scalars(select(Unit.name).order_by(Unit.code)).all() == ["Chi bộ 1", "Tỉnh"]


def test_a_folder_named_like_a_roster_file_is_refused_without_a_traceback(cli, workdir, db):
    (workdir / "u.csv").mkdir()
    result = cli("units", "import", "u.csv")
    assert (result.code, result.lines) == (1, ["u.csv: đây là một thư mục, không phải tệp; hãy ghi tên tệp .csv hoặc .xlsx"])


def test_a_name_with_a_control_character_pasted_from_word_is_refused_by_row_and_nothing_is_imported(cli, workdir,
                                                                                                   db):
    cli("units", "import", write(workdir, "u.csv", UNITS))
    cli("members", "import", write(workdir, "m.csv", MEMBERS))
    pasted = ("Mã đảng viên,Họ và tên,Mã đơn vị,Số điện thoại,Vai trò\n"
              "M7,Lê Văn Tám,B1,,Đảng viên\n"
              "M8,Lê\x0bVăn\x01Tám,B1,,Đảng viên\n")  # a vertical tab and a start-of-heading: Excel and XML cannot hold them
    result = cli("members", "import", write(workdir, "pasted.csv", pasted))
    assert result.code == 1
    assert result.lines == ["pasted.csv:3: Họ và tên: có ký tự điều khiển ẩn (thường do dán từ Word); "
                            "hãy gõ lại ô này"]
    with db.session() as s:
        assert s.scalar(select(func.count(Member.id))) == 3


def test_excel_s_sep_line_and_a_row_number_column_are_read_past(cli, workdir, db):
    """Excel writes ``sep=;`` as the first line of a semicolon CSV (and does not show it); sheets often have an
    STT column. Both import; row numbers stay as Excel shows them."""
    (workdir / "u.csv").write_text("sep=;\nSTT;Mã đơn vị;Tên đơn vị;Mã đơn vị cấp trên\n1;P;Tỉnh;\n2;C;Xã;Q\n",
                                   encoding="utf-8")
    result = cli("units", "import", "u.csv")
    assert (result.code, result.lines) == (1, ["u.csv:3: Mã đơn vị cấp trên: không có đơn vị mã 'Q'; hãy thêm đơn "
                                               "vị vào tệp hoặc nhập danh sách đơn vị trước"])
    (workdir / "u.csv").write_text("sep=;\nSTT;Mã đơn vị;Tên đơn vị;Mã đơn vị cấp trên\n1;P;Tỉnh;\n2;C;Xã;P\n",
                                   encoding="utf-8")
    assert cli("units", "import", "u.csv").code == 0
    assert counts(db)[0] == 2
