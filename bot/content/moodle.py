"""Moodle's plain-text question formats, the multiple-choice part: Aiken and GIFT.

Aiken: the question on its own line(s), options ``A.`` or ``A)`` one a line, then ``ANSWER: B``;
questions separated by blank lines. GIFT: ``::title:: question { =right #feedback ~wrong ... }``,
``//`` comments; a single right answer (``=``) among wrong ones (``~``); the right answer's feedback
or the general feedback (``####``) becomes the explanation. Other GIFT types are refused by line.
"""

from __future__ import annotations

import re
from pathlib import Path

from bot.content.authoring import ANSWER_WORD, Draft, DraftQuestion, check_question, nfc
from bot.text_files import decode_text

_AIKEN_OPTION = re.compile(r"^([A-Fa-f])\s*[.)]\s*(.+)$")
_AIKEN_ANSWER = re.compile(r"^ANSWER\s*:\s*(.*)$", re.I)


def read_text_file(path: Path) -> tuple[list[str], list[str]]:
    """(lines, problems): the file's lines, NFC, or why it cannot be read."""
    try:
        text = decode_text(path.read_bytes())  # Notepad's "ANSI" is Windows-1258 on a Vietnamese Windows
    except UnicodeDecodeError as exc:
        return [], [f"{path.name}: không phải văn bản UTF-8 (lỗi ở byte {exc.start}); "
                    "hãy lưu lại tệp với bảng mã UTF-8"]
    except OSError as exc:
        return [], [f"{path.name}: không đọc được tệp ({exc.strerror})"]
    return nfc(text).splitlines(), []


def looks_like_gift(lines: list[str]) -> bool:
    return any("{" in line and not line.lstrip().startswith("//") for line in lines)


def read_aiken(path: Path) -> Draft:
    lines, problems = read_text_file(path)
    draft = Draft(problems=problems)
    name = path.name
    block: list[tuple[int, str]] = []

    def finish() -> None:
        if block:
            _aiken_question(block, name, draft)
            block.clear()

    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            if block and _AIKEN_ANSWER.match(block[-1][1]):
                finish()
            continue
        block.append((n, line))
        if _AIKEN_ANSWER.match(line):
            finish()
    if block:
        finish()
    return draft


def _aiken_question(block: list[tuple[int, str]], name: str, draft: Draft) -> None:
    first = block[0][0]
    text_lines, options, answer, answer_line = [], [], None, first
    for n, line in block:
        if (m := _AIKEN_ANSWER.match(line)):
            answer, answer_line = m.group(1).strip(), n
        elif (m := _AIKEN_OPTION.match(line)) and (options or text_lines):
            expected = "ABCDEF"[len(options)] if len(options) < 6 else None
            if m.group(1).upper() != expected:
                draft.problems.append(f"{name}:{n}: phương án {m.group(1).upper()} không đúng thứ tự; "
                                      + (f"phương án này phải là {expected}" if expected else
                                         "chỉ được tối đa 6 phương án"))
                return
            options.append(m.group(2).strip())
        elif options:
            draft.problems.append(f"{name}:{n}: '{line[:40]}' không phải phương án (A. ...) cũng không phải "
                                  "dòng ANSWER: X; hãy sửa dòng này")
            return
        else:
            text_lines.append(line)
    if answer is None:
        draft.problems.append(f"{name}:{block[-1][0]}: câu hỏi ở dòng {first} thiếu dòng 'ANSWER: X'; "
                              "hãy thêm dòng đáp án")
        return
    q = DraftQuestion(" ".join(text_lines), options, answer, where=f"{name}:{first}")
    problems = check_question(q, "")
    draft.problems.extend(f"{name}:{answer_line if ANSWER_WORD in p else first}{p}" for p in problems)
    if not problems:
        draft.questions.append(q)


# -- GIFT ----------------------------------------------------------------------------------------
_ESCAPES = {"\\~": "~", "\\=": "=", "\\#": "#", "\\{": "{", "\\}": "}", "\\:": ":", "\\n": "\n"}
_FORMAT = re.compile(r"^\[(html|moodle|plain|markdown)\]", re.I)


def read_gift(path: Path) -> Draft:
    lines, problems = read_text_file(path)
    draft = Draft(problems=problems)
    name = path.name
    text, starts = _strip_comments(lines)
    for start_line, item in _gift_items(text, starts, name, draft):
        _gift_question(item, start_line, name, draft)
    return draft


def _strip_comments(lines: list[str]) -> tuple[str, list[int]]:
    """The text without ``//`` comment lines, and the line number where each character came from."""
    out, where = [], []
    for n, line in enumerate(lines, start=1):
        if line.lstrip().startswith("//") or line.lstrip().startswith("$CATEGORY"):
            line = ""
        out.append(line + "\n")
        where.extend([n] * (len(line) + 1))
    return "".join(out), where


def _gift_items(text: str, where: list[int], name: str, draft: Draft):
    """(line, question text up to and including its {...}) for each question; blank lines separate."""
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return
        start = i
        depth, j = 0, i
        while j < n:
            c = text[j]
            if c == "\\":
                j += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            elif c == "\n" and depth == 0 and text[j + 1: j + 2] == "\n" and "{" not in text[start:j]:
                break
            j += 1
        if depth != 0 or j >= n or text[j] != "}":
            draft.problems.append(f"{name}:{where[start]}: câu hỏi không có phương án trong {{ }} hoặc thiếu "
                                  "dấu '}' đóng; hãy viết các phương án dạng { =đúng ~sai ~sai }")
            if depth != 0:
                return  # an unclosed brace swallows the rest of the file
            i = j + 1
            continue
        end = j + 1
        # the question's text may continue after the answer block (GIFT allows "{...} rest")
        k = end
        while k < n and text[k] != "\n":
            k += 1
        yield where[start], text[start:k]
        i = k


def _unescape(s: str) -> str:
    for k, v in _ESCAPES.items():
        s = s.replace(k, v)
    return nfc(_FORMAT.sub("", s.strip()))


def _split_unescaped(s: str, marks: str) -> list[tuple[str, str]]:
    """Split at unescaped marks; returns (mark, text) pairs."""
    parts, current, mark, i = [], [], "", 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            current.append(s[i:i + 2])
            i += 2
            continue
        if c in marks:
            if current or mark:
                parts.append((mark, "".join(current)))
            mark, current = c, []
        else:
            current.append(c)
        i += 1
    if current or mark:
        parts.append((mark, "".join(current)))
    return parts


def _find_unescaped(s: str, target: str) -> int:
    i = 0
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s.startswith(target, i):
            return i
        i += 1
    return -1


def _gift_question(item: str, line: int, name: str, draft: Draft) -> None:
    where = f"{name}:{line}"
    body = item.strip()
    if body.startswith("::"):
        close = body.find("::", 2)
        body = body[close + 2:] if close > 0 else body
    open_at = _find_unescaped(body, "{")
    close_at = body.rfind("}")
    stem = (body[:open_at] + " " + body[close_at + 1:]).strip()
    answers = body[open_at + 1: close_at]
    general = None
    g = _find_unescaped(answers, "####")
    if g >= 0:
        answers, general = answers[:g], _unescape(answers[g + 4:])
    stripped = answers.strip()
    if not stripped or stripped.upper() in ("T", "F", "TRUE", "FALSE") or stripped.startswith("#"):
        draft.problems.append(f"{where}: không phải câu hỏi trắc nghiệm nhiều lựa chọn (đúng/sai, điền số hay "
                              "tự luận); chỉ nhập được câu hỏi có một phương án đúng (=) và các phương án sai (~)")
        return
    parts = [p for p in _split_unescaped(answers, "=~") if p[0] or p[1].strip()]
    if any(not mark for mark, _ in parts):
        draft.problems.append(f"{where}: có chữ trước phương án đầu tiên trong {{ }}; "
                              "hãy bắt đầu mỗi phương án bằng = hoặc ~")
        return
    options, answer, feedback = [], None, None
    for mark, raw in parts:
        text = raw
        fb = None
        h = _find_unescaped(text, "#")
        if h >= 0:
            text, fb = text[:h], _unescape(text[h + 1:]) or None
        text = text.strip()
        if re.match(r"^%-?\d+(\.\d+)?%", text):
            draft.problems.append(f"{where}: không nhập được phương án tính điểm theo tỷ lệ (~%50%...); hãy "
                                  "đánh dấu một phương án đúng bằng = và các phương án khác bằng ~")
            return
        if mark == "=" and "->" in text:
            draft.problems.append(f"{where}: đây là câu hỏi ghép đôi; "
                                  "chỉ nhập được câu hỏi trắc nghiệm nhiều lựa chọn")
            return
        if mark == "=":
            if answer is not None:
                draft.problems.append(f"{where}: có nhiều hơn một phương án đúng (=); "
                                      "hãy giữ một dấu = và đổi các dấu còn lại thành ~")
                return
            answer, feedback = "ABCDEF"[len(options)] if len(options) < 6 else "?", fb
        options.append(_unescape(text))
    if answer is None:
        draft.problems.append(f"{where}: chưa có phương án đúng; "
                              "hãy đánh dấu phương án đúng bằng = (các phương án sai bằng ~)")
        return
    if len(options) == 1:
        draft.problems.append(f"{where}: đây là câu hỏi trả lời ngắn (một =đáp án, không có ~phương án sai); "
                              "chỉ nhập được câu hỏi trắc nghiệm nhiều lựa chọn")
        return
    q = DraftQuestion(_unescape(stem), options, answer, general or feedback, where=where)
    problems = check_question(q, where)
    draft.problems.extend(problems)
    if not problems:
        draft.questions.append(q)
