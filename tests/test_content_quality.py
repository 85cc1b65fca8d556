"""`hoctap content check` warns about quizzes that can be passed by guessing; `--strict` refuses them."""

from __future__ import annotations

import textwrap

import pytest

HEAD = """\
id: nq-test
code: "01-NQ/TW"
title: "Nghị quyết thử"
kind: nghi-quyet
summary: "Tóm tắt."
questions:
"""


def doc(*questions: tuple[str, list[str], str]) -> str:
    body = HEAD
    for text, options, answer in questions:
        opts = ", ".join(f'"{o}"' for o in options)
        body += f'  - text: "{text}"\n    options: [{opts}]\n    answer: {answer}\n'
    return body


def check(cli, workdir, body, *flags):
    (workdir / "nq-test.yaml").write_text(textwrap.dedent(body), encoding="utf-8")
    return cli("content", "check", *flags, "nq-test.yaml")


EVEN = ("Đảng viên học tập ở đâu?", ["Tại chi bộ", "Tại tổ dân phố", "Tại nhà văn hóa"], "A")


def test_a_document_without_flaws_has_no_warning_even_under_strict(cli, workdir):
    result = check(cli, workdir, doc(EVEN, ("Mỗi năm đối thoại mấy lần?", ["Một lần", "Hai lần", "Ba lần"], "A")),
                   "--strict")
    assert result.code == 0, result.out
    assert result.lines == ["nq-test.yaml: nq-test: 2 questions, 0 guessable by length alone"]


def test_answer_longest_in_most_questions_is_counted_and_refused_under_strict(cli, workdir):
    long_answer = [(f"Câu {i}: cơ quan nào chủ trì việc số {i}?", ["Ban Tuyên giáo Tỉnh ủy", "Sở Nội vụ", "Ban Dân vận"], "A")
                   for i in range(1, 4)]
    body = doc(*long_answer, EVEN, ("Câu năm?", ["Chi bộ", "Đảng bộ", "Tổ đảng"], "B"))
    result = check(cli, workdir, body)
    assert result.code == 0, "warnings alone do not fail the check"
    assert ("nq-test.yaml:1: questions: warning: đáp án là phương án dài nhất ở 3 trên 5 câu hỏi "
            "(60%, quá 40%); luôn chọn phương án dài nhất là đạt chừng ấy điểm mà không cần đọc; "
            "hãy viết các phương án dài xấp xỉ nhau") in result.lines
    assert "nq-test.yaml: nq-test: 5 questions, 3 guessable by length alone" in result.lines
    strict = check(cli, workdir, body, "--strict")
    assert strict.code == 1
    assert "nq-test.yaml:1: questions: đáp án là phương án dài nhất ở 3 trên 5 câu hỏi" in strict.out
    assert "(--strict)" in strict.err


@pytest.mark.parametrize(
    "question, expected",
    [
        (("Ai chủ trì xây dựng App?", ["Ban Tuyên giáo Tỉnh ủy, phối hợp với Sở Thông tin và Truyền thông",
                                       "Sở Nội vụ", "Trường Chính trị tỉnh"], "A"),
         "nq-test.yaml:7: questions[1].options: warning: đáp án (65 ký tự) dài ít nhất 1.5 lần mọi phương án khác "
         "(dài nhất 21 ký tự); người làm bài chọn được mà không cần đọc; hãy viết dài thêm các phương án khác "
         "hoặc rút gọn đáp án"),
        (("Giải báo chí nào được tuyên truyền trong năm 2023?",
          ["Giải Búa liềm vàng năm 2023", "Giải Báo chí quốc gia", "Giải Diên Hồng lần I"], "A"),
         "nq-test.yaml:7: questions[1].options: warning: '2023' của câu hỏi có trong đáp án mà không có trong "
         "phương án nào khác, nên làm lộ đáp án; hãy dùng cả trong các phương án khác, hoặc bỏ khỏi câu hỏi"),
        (("Ý nào đúng?", ["Học tập nghị quyết", "Sinh hoạt chi bộ", "Tất cả các đáp án trên"], "C"),
         "nq-test.yaml:7: questions[1].options[C]: warning: 'Tất cả các đáp án trên' nói đến các phương án khác; "
         "thứ tự phương án được xáo trộn và phương án kiểu này bị đoán chứ không được đọc; "
         "hãy viết một phương án có nội dung riêng"),
        (("Ý nào đúng?", ["Học tập nghị quyết", "Sinh hoạt chi bộ", "Cả A và B"], "C"),
         "nq-test.yaml:7: questions[1].options[C]: warning: 'Cả A và B' nói đến các phương án khác; "),
        (("Ý nào đúng?", ["Học tập, quán triệt", "Quán triệt học tập", "Sinh hoạt chi bộ"], "C"),
         "nq-test.yaml:7: questions[1].options: warning: phương án A và B gần như giống nhau; "
         "hãy để mỗi phương án là một câu trả lời khác"),
    ],
)
def test_each_item_writing_flaw_is_located_by_line_and_field(cli, workdir, question, expected):
    result = check(cli, workdir, doc(question, EVEN))
    assert result.code == 0
    assert any(line.startswith(expected) for line in result.lines), result.out
    assert check(cli, workdir, doc(question, EVEN), "--strict").code == 1


def test_a_question_asked_twice_in_other_words_is_named_with_the_first(cli, workdir):
    first = ("Theo Kế hoạch, đảng viên dự họp chi bộ nơi cư trú bao lâu một lần?", ["Một quý", "Một năm", "Một tháng"], "A")
    again = ("Theo kế hoạch, đảng viên dự họp chi bộ ở nơi cư trú bao lâu một lần?", ["Một quý", "Một năm", "Một tuần"], "A")
    result = check(cli, workdir, doc(first, EVEN, again))
    assert ("nq-test.yaml:13: questions[3].text: warning: gần giống questions[1] (dòng 7); "
            "mỗi ý chỉ nên hỏi một lần") in result.lines, result.out


def test_numbers_differing_options_are_not_taken_for_repeats(cli, workdir):
    question = ("Đại hội lần thứ mấy?", ["Lần thứ XX", "Lần thứ XXI", "Lần thứ XXII"], "B")
    result = check(cli, workdir, doc(question, EVEN), "--strict")
    assert result.code == 0, result.out
