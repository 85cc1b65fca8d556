"""Does a quiz test reading, or can it be passed by guessing? Item-writing checks on checked documents.

Each finding is a warning (``content check --strict`` makes them errors), located like the
validator's problems. The checks follow the classic item-writing flaws: the answer is the longest
option (or far longer than the others), the answer repeats a word of the question that no
distractor has, "all of the above" options (meaningless once options are shuffled), options that
say the same thing, and questions asked twice.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from bot.content.validate import LETTERS, DocumentSpec, Problem, QuestionSpec

LONGEST_SHARE = 0.40  # the answer may be the longest option in at most this share of questions
LENGTH_RATIO = 1.5  # an answer this many times longer than every distractor gives itself away
NEAR_DUPLICATE = 0.85  # similarity of two questions' texts (0-1) from which they count as one question

# "all of the above", "both A and B", "none of the above" in the ways Vietnamese quizzes write them
_ABOUT_OTHER_OPTIONS = re.compile(
    r"(tất cả|cả|các) (các )?(đáp án|phương án|ý|câu|lựa chọn|nội dung)( nêu)? (trên|đều)"
    r"|\bcả (hai|ba|bốn)\b.*\b(đáp án|phương án|ý|câu|đều)"
    r"|\bcả [a-f] (và|lẫn|,) ?[a-f]\b"
    r"|\b[a-f] (và|,) [a-f] (đều|đúng)\b"
    r"|không có (đáp án|phương án|ý|câu|lựa chọn) nào"
    r"|\b(all|none) of the above\b",
)
# syllables too common in Vietnamese to give an answer away when shared with the question
_COMMON = frozenset("""
của và các cho với trong theo được là có không những này đó về từ đến khi thì mà một hai ba
nào gì ai sao bao nhiêu mấy đâu hay hoặc như để tại trên dưới ra vào lại đã đang sẽ phải cần
""".split())
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NUMBER = re.compile(r"\w*\d[\w./-]*")  # a number with what is glued to it: 2023, 17/5/2023, II.5, 04-NQ/TU


@dataclass
class QualityReport:
    """Findings on one document, and how many of its questions the longest option answers."""

    document: DocumentSpec
    warnings: list[Problem] = field(default_factory=list)
    longest_correct: int = 0  # questions whose answer is the single longest option

    @property
    def questions(self) -> int:
        return len(self.document.questions)


def check_quality(doc: DocumentSpec) -> QualityReport:
    report = QualityReport(doc)
    warn = report.warnings

    def add(line: int, fld: str, message: str) -> None:
        warn.append(Problem(doc.source_file, line, fld, message))

    for i, q in enumerate(doc.questions, start=1):
        fld = f"questions[{i}]"
        lengths = [_length(o) for o in q.options]
        answer = lengths[q.answer_index]
        others = [n for j, n in enumerate(lengths) if j != q.answer_index]
        if others and answer > max(others):
            report.longest_correct += 1
            if answer >= LENGTH_RATIO * max(others):
                add(q.line, f"{fld}.options",
                    f"đáp án ({answer} ký tự) dài ít nhất {LENGTH_RATIO:g} lần mọi phương án khác "
                    f"(dài nhất {max(others)} ký tự); người làm bài chọn được mà không cần đọc; hãy viết dài "
                    "thêm các phương án khác hoặc rút gọn đáp án")
        for word in _giveaway_words(q):
            add(q.line, f"{fld}.options",
                f"'{word}' của câu hỏi có trong đáp án mà không có trong phương án nào khác, nên làm lộ "
                "đáp án; hãy dùng cả trong các phương án khác, hoặc bỏ khỏi câu hỏi")
        for j, option in enumerate(q.options):
            if _ABOUT_OTHER_OPTIONS.search(_plain(option)):
                add(q.line, f"{fld}.options[{_letter(j)}]",
                    f"'{option}' nói đến các phương án khác; thứ tự phương án được xáo trộn và phương án "
                    "kiểu này bị đoán chứ không được đọc; hãy viết một phương án có nội dung riêng")
        for j, k in _near_same_options(q):
            add(q.line, f"{fld}.options",
                f"phương án {_letter(j)} và {_letter(k)} gần như giống nhau; "
                "hãy để mỗi phương án là một câu trả lời khác")
    for earlier, later, i_earlier, i_later in _near_duplicate_questions(doc.questions):
        add(later.line, f"questions[{i_later}].text",
            f"gần giống questions[{i_earlier}] (dòng {earlier.line}); mỗi ý chỉ nên hỏi một lần")
    n = len(doc.questions)
    if n and report.longest_correct > LONGEST_SHARE * n:
        add(doc.id_line, "questions",
            f"đáp án là phương án dài nhất ở {report.longest_correct} trên {n} câu hỏi "
            f"({round(100 * report.longest_correct / n)}%, quá {LONGEST_SHARE:.0%}); luôn chọn phương án dài nhất "
            "là đạt chừng ấy điểm mà không cần đọc; hãy viết các phương án dài xấp xỉ nhau")
    warn.sort(key=lambda p: p.line)
    return report


def _plain(text: str) -> str:
    """Casefolded, NFC, single spaces, no punctuation: what a reader compares."""
    text = unicodedata.normalize("NFC", text).casefold()
    return " ".join(_WORD.findall(text))


def _length(option: str) -> int:
    return len(" ".join(option.split()))


def _letter(i: int) -> str:
    return LETTERS[i] if i < len(LETTERS) else str(i + 1)


def _giveaway_words(q: QuestionSpec) -> list[str]:
    """Numbers (whole, as written) and two-syllable words of the question found in the answer and in no
    distractor."""
    def terms(text: str) -> set[str]:
        words = _plain(text).split()
        numbers = {n.rstrip("./-") for n in _NUMBER.findall(unicodedata.normalize("NFC", text).casefold())}
        pairs = {f"{a} {b}" for a, b in zip(words, words[1:]) if a not in _COMMON and b not in _COMMON}
        return numbers | pairs

    shared = terms(q.text) & terms(q.options[q.answer_index])
    if not shared:
        return []
    for j, option in enumerate(q.options):
        if j != q.answer_index:
            shared -= terms(option)
    return sorted(shared)


def _near_same_options(q: QuestionSpec) -> list[tuple[int, int]]:
    """Options with the same words, whatever their order, case and punctuation."""
    words = [sorted(_plain(o).split()) for o in q.options]
    return [(j, k) for j in range(len(words)) for k in range(j + 1, len(words)) if words[j] == words[k]]


def _near_duplicate_questions(questions: list[QuestionSpec]):
    plain = [_plain(q.text) for q in questions]
    for k in range(len(questions)):
        for j in range(k):
            matcher = SequenceMatcher(None, plain[j], plain[k])
            if matcher.real_quick_ratio() >= NEAR_DUPLICATE and matcher.ratio() >= NEAR_DUPLICATE:
                yield questions[j], questions[k], j + 1, k + 1
                break
