"""Cadres write questions in Excel, Aiken or GIFT: `hoctap content import / template / export`."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from bot.content.validate import check_file
from tests.conftest import QUIZZES, windows_1258

HEADER = ["Câu hỏi", "A", "B", "C", "D", "E", "F", "Đáp án", "Giải thích", "Mục"]


@pytest.fixture
def content(workdir, monkeypatch) -> Path:
    """A content folder of the operator's own, holding the two sample documents."""
    folder = workdir / "quizzes"
    folder.mkdir()
    for f in QUIZZES.glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    monkeypatch.setenv("HOCTAP_CONTENT_DIR", str(folder))
    return folder


def sheet(path: Path, rows: list[list], meta: list[list] | None = None) -> Path:
    wb = Workbook()
    ws = wb.active
    ws.title = "Câu hỏi"
    ws.append(HEADER)
    for row in rows:
        ws.append(row)
    if meta is not None:
        m = wb.create_sheet("Văn bản")
        m.append(["Trường", "Giá trị"])
        for row in meta:
            m.append(row)
    wb.save(path)
    return path


GOOD_ROWS = [
    ["Đảng viên học tập nghị quyết ở đâu?", "Tại chi bộ", "Tại tổ dân phố", "Tại nhà văn hóa", None, None, None,
     "A", "sinh hoạt tại chi bộ.", "Mục II.4"],
    ["Mỗi năm đối thoại mấy lần?", "Một lần", "Hai lần", "Ba lần", "Bốn lần", None, None, "a", None, None],
]
META = [["Số hiệu", "01-NQ/TW"], ["Tiêu đề", "Nghị quyết thử"], ["Loại văn bản", "Nghị quyết"],
        ["Ngày ban hành", "15/02/2022"], ["Tóm tắt", "Tóm tắt ngắn."], ["Điểm chính", "Điểm một"],
        ["Điểm chính", "Điểm hai"]]


def test_an_excel_sheet_becomes_a_document_that_passes_check(cli, workdir, content):
    sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS, META)
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu", "--issued-by", "Ban Chấp hành Trung ương")
    assert result.code == 0, result.out + result.err
    assert result.lines == [f"{content / 'nq-thu.yaml'}: 2 questions from cau-hoi.xlsx (xlsx)"]
    doc, problems = check_file(content / "nq-thu.yaml")
    assert problems == []
    assert (doc.code, doc.title, doc.kind, doc.issued_by, doc.issued_on.isoformat()) == (
        "01-NQ/TW", "Nghị quyết thử", "nghi-quyet", "Ban Chấp hành Trung ương", "2022-02-15")
    assert doc.key_points == ["Điểm một", "Điểm hai"]
    first, second = doc.questions
    assert first.options == ["Tại chi bộ", "Tại tổ dân phố", "Tại nhà văn hóa"] and first.answer_index == 0
    assert first.explanation == "Mục II.4: sinh hoạt tại chi bộ."
    assert len(second.options) == 4 and second.answer_index == 0


def test_missing_metadata_is_written_as_fields_that_check_then_names(cli, workdir, content):
    sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS)
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu", "--title", "Nghị quyết thử")
    assert result.code == 0
    assert any(line.startswith("to fill in: ") and ": code: đang để trống; hãy viết nội dung" in line
               for line in result.lines)
    assert any(": summary: đang để trống" in line for line in result.lines)
    assert "kind: ''" in (content / "nq-thu.yaml").read_text(encoding="utf-8")
    assert cli("content", "check", str(content / "nq-thu.yaml")).code == 1


def test_every_problem_of_a_sheet_is_located_and_nothing_is_written(cli, workdir, content):
    rows = [
        ["Câu một?", "Một", "Hai", None, None, None, None, "C", None, None],         # row 2: C is empty
        ["Câu hai?", "Một", None, "Ba", None, None, None, "A", None, None],          # row 3: gap at B
        [None, "Một", "Hai", None, None, None, None, "A", None, None],               # row 4: no question
        ["Câu bốn?", "Một", "một ", None, None, None, None, "B", None, None],        # row 5: repeated option
        ["Câu năm?", "=1+1", "Hai", None, None, None, None, "A", None, None],        # row 6: a formula
        ["Câu sáu?", "Một", "Hai", None, None, None, None, None, None, None],        # row 7: no answer
    ]
    sheet(workdir / "cau-hoi.xlsx", rows)
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu")
    assert result.code == 1
    assert result.lines == [
        "cau-hoi.xlsx: trang tính 'Câu hỏi', dòng 2, cột H (Đáp án): đáp án 'C' không phải chữ cái của một phương án; "
        "hãy ghi một trong: A, B",
        "cau-hoi.xlsx: trang tính 'Câu hỏi', dòng 3, cột D (C): phương án B đang trống; hãy điền các phương án liền nhau từ A",
        "cau-hoi.xlsx: trang tính 'Câu hỏi', dòng 4, cột A (Câu hỏi): câu hỏi đang trống; hãy viết câu hỏi",
        "cau-hoi.xlsx: trang tính 'Câu hỏi', dòng 5, cột B (A): phương án B trùng với phương án A; "
        "hãy viết các phương án khác nhau",
        "cau-hoi.xlsx: trang tính 'Câu hỏi', dòng 6, cột B (A): đang là công thức; hãy gõ trực tiếp nội dung",
        "cau-hoi.xlsx: trang tính 'Câu hỏi', dòng 7, cột H (Đáp án): chưa có đáp án; hãy ghi chữ cái của phương án đúng",
    ]
    assert "nothing was written" in result.err
    assert not (content / "nq-thu.yaml").exists()


def test_a_sheet_without_the_header_says_what_the_header_is(cli, workdir, content):
    wb = Workbook()
    wb.active.append(["Nội dung", "Phương án 1"])
    wb.save(workdir / "khac.xlsx")
    result = cli("content", "import", "khac.xlsx", "--id", "nq-thu")
    assert result.code == 1
    assert result.lines == ["khac.xlsx: trang tính 'Sheet', dòng 1: thiếu cột Câu hỏi, A, B, Đáp án; dòng tiêu đề cần là "
                            "Câu hỏi | A | B | C | D | E | F | Đáp án | Giải thích | Mục"]


def test_an_existing_document_is_replaced_only_with_force(cli, workdir, content):
    sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS, META)
    before = (content / "kh-64-tu-binh-phuoc.yaml").read_text(encoding="utf-8")
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "kh-64-tu-binh-phuoc")
    assert result.code == 1
    assert f"{content / 'kh-64-tu-binh-phuoc.yaml'} đã có; hãy thêm --force để ghi đè" in result.lines
    assert (content / "kh-64-tu-binh-phuoc.yaml").read_text(encoding="utf-8") == before


def test_export_then_import_gives_back_the_same_document(cli, workdir, content):
    for doc_id in ("kh-64-tu-binh-phuoc", "kh-83-hu-tuy-phuoc"):
        assert cli("content", "export", doc_id, "--xlsx", f"{doc_id}.xlsx").code == 0
        original, _ = check_file(content / f"{doc_id}.yaml")
        result = cli("content", "import", f"{doc_id}.xlsx", "--id", doc_id, "--force")
        assert result.code == 0, result.out
        again, problems = check_file(content / f"{doc_id}.yaml")
        assert problems == []
        for name in ("code", "title", "note", "kind", "issued_by", "issued_on", "summary", "key_points",
                     "questions_per_attempt", "pass_score", "max_attempts"):
            assert getattr(again, name) == getattr(original, name), name
        assert [(q.text, q.options, q.answer_index, q.explanation) for q in again.questions] == [
            (q.text, q.options, q.answer_index, q.explanation) for q in original.questions]


def test_exported_text_that_looks_like_a_formula_stays_text(cli, workdir, content):
    sheet(workdir / "cau-hoi.xlsx", [["Câu một?", "'=HYPERLINK(\"x\")", "Hai", None, None, None, None, "B", None, None]],
          META)
    assert cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu").code == 0
    text = (content / "nq-thu.yaml").read_text(encoding="utf-8")
    (content / "nq-thu.yaml").write_text(text.replace("'''=HYPERLINK", "'=HYPERLINK"), encoding="utf-8")
    doc, problems = check_file(content / "nq-thu.yaml")
    assert problems == [] and doc.questions[0].options[0] == '=HYPERLINK("x")'
    assert cli("content", "export", "nq-thu", "--xlsx", "out.xlsx").code == 0
    cell = load_workbook(workdir / "out.xlsx")["Câu hỏi"]["B2"]
    assert cell.data_type == "s" and cell.value == '=HYPERLINK("x")'


def test_the_template_has_the_header_and_imports_as_its_example(cli, workdir, content):
    result = cli("content", "template", "mau.xlsx")
    assert result.code == 0
    wb = load_workbook(workdir / "mau.xlsx")
    assert [c.value for c in wb["Câu hỏi"][1]][:10] == HEADER
    assert [c.value for c in wb["Văn bản"]["A"]][:4] == ["Trường", "Số hiệu", "Tiêu đề", "Loại văn bản"]
    assert cli("content", "import", "mau.xlsx", "--id", "mau").code == 0
    doc_text = (content / "mau.yaml").read_text(encoding="utf-8")
    assert "ít nhất bao nhiêu phần trăm đảng viên" in doc_text


def test_the_shipped_template_is_what_the_command_writes(cli, workdir):
    shipped = QUIZZES.parent / "samples" / "content" / "mau-cau-hoi.xlsx"
    assert cli("content", "template", "mau.xlsx").code == 0
    fresh, old = load_workbook(workdir / "mau.xlsx"), load_workbook(shipped)
    for name in fresh.sheetnames:
        assert [[c.value for c in r] for r in fresh[name].iter_rows()] == [[c.value for c in r] for r in old[name].iter_rows()]


AIKEN = """\
Đảng viên học tập nghị quyết ở đâu?
A. Tại chi bộ
B) Tại tổ dân phố
C. Tại nhà văn hóa
ANSWER: A

Mỗi năm đối thoại mấy lần?
A. Một lần
B. Hai lần
ANSWER: B
"""


def test_aiken_text_is_imported(cli, workdir, content):
    (workdir / "cau-hoi.txt").write_text(AIKEN, encoding="utf-8")
    result = cli("content", "import", "cau-hoi.txt", "--id", "nq-thu", "--code", "01-NQ/TW", "--title", "Thử",
                 "--kind", "nghi-quyet")
    assert result.code == 0
    assert result.lines[0].endswith("2 questions from cau-hoi.txt (aiken)")
    doc_text = (content / "nq-thu.yaml").read_text(encoding="utf-8")
    assert "options: [Tại chi bộ, Tại tổ dân phố, Tại nhà văn hóa]" in doc_text


def test_aiken_questions_and_a_summary_saved_by_notepad_in_the_windows_code_page_keep_their_diacritics(
        cli, workdir, content):
    (workdir / "cau-hoi.txt").write_bytes(windows_1258(AIKEN))
    (workdir / "tom-tat.txt").write_bytes(windows_1258("Đảng viên học tập nghị quyết tại chi bộ."))
    result = cli("content", "import", "cau-hoi.txt", "--id", "nq-thu", "--code", "01-NQ/TW", "--title", "Thử",
                 "--kind", "nghi-quyet", "--summary", "tom-tat.txt")
    assert result.code == 0, result.out
    doc, problems = check_file(content / "nq-thu.yaml")
    assert problems == []
    assert doc.summary == "Đảng viên học tập nghị quyết tại chi bộ."
    assert [q.text for q in doc.questions] == ["Đảng viên học tập nghị quyết ở đâu?", "Mỗi năm đối thoại mấy lần?"]
    assert doc.questions[0].options == ["Tại chi bộ", "Tại tổ dân phố", "Tại nhà văn hóa"]


def test_aiken_mistakes_are_named_by_line(cli, workdir, content):
    broken = AIKEN.replace("ANSWER: A", "ANSWER: D").replace("B. Hai lần\n", "C. Hai lần\n")
    (workdir / "cau-hoi.txt").write_text(broken, encoding="utf-8")
    result = cli("content", "import", "cau-hoi.txt", "--id", "nq-thu")
    assert result.code == 1
    assert result.lines == [
        "cau-hoi.txt:5: đáp án 'D' không phải chữ cái của một phương án; hãy ghi một trong: A, B, C",
        "cau-hoi.txt:9: phương án C không đúng thứ tự; phương án này phải là B",
    ]
    assert not (content / "nq-thu.yaml").exists()


GIFT = """\
// Câu hỏi Kế hoạch 64
::Câu 1:: Mỗi đợt học tập phấn đấu có ít nhất bao nhiêu đảng viên tham gia? {
  =98% #Mục II.4: ít nhất từ 98% trở lên.
  ~95%
  ~90%
}

::Câu 2:: Ai chủ trì theo dõi việc thực hiện Kế hoạch? {
  ~Văn phòng Tỉnh ủy
  =Ban Tuyên giáo Tỉnh ủy
  ~Ban Tổ chức Tỉnh ủy
  ####Mục III.3 của Kế hoạch.
}

Tỷ lệ 98% là bắt buộc. {T}
"""


def test_gift_multiple_choice_is_imported_with_feedback_as_explanation(cli, workdir, content):
    (workdir / "cau-hoi.gift").write_text(GIFT.split("Tỷ lệ")[0], encoding="utf-8")
    result = cli("content", "import", "cau-hoi.gift", "--id", "nq-thu")
    assert result.code == 0, result.out
    doc_text = (content / "nq-thu.yaml").read_text(encoding="utf-8")
    assert "explanation: 'Mục II.4: ít nhất từ 98% trở lên.'" in doc_text
    assert "explanation: Mục III.3 của Kế hoạch." in doc_text
    assert "answer: B" in doc_text


def test_gift_questions_of_other_types_are_refused_by_line(cli, workdir, content):
    (workdir / "cau-hoi.gift").write_text(GIFT, encoding="utf-8")
    result = cli("content", "import", "cau-hoi.gift", "--id", "nq-thu")
    assert result.code == 1
    assert result.lines == ["cau-hoi.gift:15: không phải câu hỏi trắc nghiệm nhiều lựa chọn (đúng/sai, điền số hay "
                            "tự luận); chỉ nhập được câu hỏi có một phương án đúng (=) và các phương án sai (~)"]
    assert not (content / "nq-thu.yaml").exists()


def test_summary_comes_from_a_word_file(cli, workdir, content):
    sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS, META)
    body = ('<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            "<w:body><w:p><w:r><w:t>Đoạn một </w:t></w:r><w:r><w:t>của tóm tắt.</w:t></w:r></w:p>"
            "<w:p></w:p><w:p><w:r><w:t>Đoạn hai.</w:t></w:r></w:p></w:body></w:document>")
    with zipfile.ZipFile(workdir / "tom-tat.docx", "w") as z:
        z.writestr("word/document.xml", body)
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu", "--summary", "tom-tat.docx")
    assert result.code == 0, result.out
    doc, problems = check_file(content / "nq-thu.yaml")
    assert problems == [] and doc.summary == "Đoạn một của tóm tắt.\n\nĐoạn hai."


def test_a_kind_of_document_not_on_the_list_is_named_by_its_sheet_row_and_cell(cli, workdir, content):
    meta = [row if row[0] != "Loại văn bản" else ["Loại văn bản", "Công văn"] for row in META]
    sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS, meta)
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu")
    assert result.code == 1
    assert result.lines == ["cau-hoi.xlsx: trang tính 'Văn bản', dòng 4, cột B (Loại văn bản): không có loại văn bản "
                            "'Công văn'; hãy dùng một trong: Nghị quyết, Chỉ thị, Kết luận, Quy định, Kế hoạch, "
                            "Hướng dẫn, Khác"]
    assert not (content / "nq-thu.yaml").exists()


def test_a_damaged_or_bloated_word_summary_is_refused_in_words_and_nothing_is_written(cli, workdir, content):
    """A broken document.xml, or a small file unpacking to gigabytes: a traceback, or all the memory, before."""
    sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS, META)
    with zipfile.ZipFile(workdir / "hong.docx", "w") as z:
        z.writestr("word/document.xml", "<w:document><w:body><w:p>unclosed")
    with zipfile.ZipFile(workdir / "phong.docx", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            for _ in range(21):  # 21 MB of spaces: a few KB packed
                f.write(b" " * (1 << 20))
    damaged = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu", "--summary", "hong.docx")
    assert (damaged.code, damaged.lines) == (1, ["hong.docx: không phải tệp Word .docx; "
                                                 "hãy lưu lại dưới dạng .docx hoặc .txt"])
    bloated = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu", "--summary", "phong.docx")
    assert bloated.code == 1 and "Traceback" not in bloated.out + bloated.err
    assert bloated.lines == ["phong.docx: phần văn bản của tệp Word quá lớn (hơn 20 MB khi giải nén); phần tóm tắt "
                             "chỉ cần vài trang: hãy chép nó sang tệp mới"]
    assert not (content / "nq-thu.yaml").exists()


def test_percentages_typed_in_excel_read_as_typed_and_a_pass_score_of_80_percent_is_80(cli, workdir, content):
    """Excel stores "95%" as 0.95 with a percent format: members read "95%", and "Điểm đạt (%)" typed "80%" is 80."""
    path = sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS + [
        ["Tỷ lệ đảng viên tham gia học tập tối thiểu?", 0.9, 0.95, 0.98, 1, None, None, "C", None, None]],
        META + [["Điểm đạt (%)", 0.8]])
    wb = load_workbook(path)
    for cell in (*wb["Câu hỏi"]["B4":"E4"][0], wb["Văn bản"]["B9"]):
        cell.number_format = "0%"
    wb["Câu hỏi"]["B4"].number_format = "0.0%"
    wb.save(path)
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu", "--issued-by", "Ban Chấp hành Trung ương")
    assert result.code == 0, result.out + result.err
    doc, problems = check_file(content / "nq-thu.yaml")
    assert problems == [] and doc.pass_score == 80
    assert doc.questions[2].options == ["90%", "95%", "98%", "100%"]


def test_the_visible_sheet_is_read_not_a_hidden_old_copy_and_a_merged_section_belongs_to_every_row(
        cli, workdir, content):
    path = sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS + [
        ["Câu thứ ba?", "Một", "Hai", None, None, None, None, "B", "giải thích ba", None]], META)
    wb = load_workbook(path)
    questions = wb["Câu hỏi"]
    questions.title = "Sheet1"
    questions["J3"] = None
    questions.merge_cells("J2:J4")  # "Mục II.4" for the three questions
    old = wb.create_sheet("Bản cũ", 0)
    old.append(HEADER)
    old.append(["Câu hỏi cũ đã bỏ?", "Có", "Không", None, None, None, None, "A", None, None])
    old.sheet_state = "hidden"
    wb.save(path)
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu", "--issued-by", "Ban Chấp hành Trung ương")
    assert result.code == 0, result.out + result.err
    doc, _ = check_file(content / "nq-thu.yaml")
    assert [q.text for q in doc.questions] == ["Đảng viên học tập nghị quyết ở đâu?", "Mỗi năm đối thoại mấy lần?",
                                               "Câu thứ ba?"]
    assert doc.questions[2].explanation == "Mục II.4: giải thích ba"


def test_a_sheet_reaching_far_beyond_its_questions_is_refused_at_once_not_read(cli, workdir, content):
    """One formatted empty cell at the bottom of the sheet (row 1,048,576) would make every row up to it read."""
    import time

    path = sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS, META)
    wb = load_workbook(path)
    wb["Câu hỏi"]["J1048576"].number_format = "0%"
    wb.save(path)
    started = time.monotonic()
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu")
    assert result.code == 1 and "dùng tới dòng 1048576" in result.out and "quá lớn cho một bộ câu hỏi" in result.out
    assert time.monotonic() - started < 20 and not (content / "nq-thu.yaml").exists()


@pytest.mark.parametrize("field, value, shown", [("pass_score", "0x50", "0x50"), ("max_attempts", "1:30", "1:30")])
def test_yaml_integers_in_hex_or_base_60_are_refused_by_line_not_taken_nor_a_crash(workdir, field, value, shown):
    text = (QUIZZES / "kh-64-tu-binh-phuoc.yaml").read_text(encoding="utf-8")
    path = workdir / "kh-64-tu-binh-phuoc.yaml"
    path.write_text(text.replace("quiz:\n", f"quiz:\n  {field}: {value}\n", 1) if "quiz:\n" in text
                    else text + f"\nquiz:\n  {field}: {value}\n", encoding="utf-8")
    _doc, problems = check_file(path)
    assert any(p.field == f"quiz.{field}" and "cần một số nguyên" in p.message and shown in p.message
               for p in problems), problems


def test_yaml_nested_thousands_deep_is_refused_not_a_crash(workdir):
    path = workdir / "nq-sau.yaml"
    path.write_text("code: 1-NQ/TW\nnote: " + "[" * 20_000 + "]" * 20_000 + "\n", encoding="utf-8")
    _doc, problems = check_file(path)
    assert [(p.line, p.field) for p in problems] == [(1, "yaml")] and "lồng nhau quá sâu" in problems[0].message


def test_a_small_workbook_that_unpacks_to_a_huge_one_is_refused_before_it_is_read(cli, workdir, content):
    path = sheet(workdir / "cau-hoi.xlsx", GOOD_ROWS, META)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as packed:
        packed.writestr("xl/media/padding.bin", b"\0" * (60 * 1024 * 1024))
    assert path.stat().st_size < 1024 * 1024
    result = cli("content", "import", "cau-hoi.xlsx", "--id", "nq-thu")
    assert result.code == 1 and "tệp Excel chứa quá nhiều dữ liệu (60 MB khi giải nén)" in result.out
