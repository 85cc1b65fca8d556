"""Which questions of a round to look at again, from their facility and discrimination, and why.

Thresholds follow common item-analysis practice (and the issue): facility above 95% (nearly everyone
right: it tests nothing), below 20% (nearly everyone wrong: a wrong key or an unclear question),
discrimination below 10 (good readers do no better on it than others). Judged on first attempts
only, and only from ``MIN_FIRST_ATTEMPTS`` of them: a handful of answers says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.services.stats import QuestionStat

EASY, HARD, DISCRIMINATION = 95.0, 20.0, 10.0
MIN_FIRST_ATTEMPTS = 10


@dataclass(frozen=True)
class Flag:
    position: int
    text: str
    reason: str  # English, for the operator's terminal
    suggestion_vi: str  # Vietnamese, for the cadre's workbook


def flag_question(q: QuestionStat) -> Flag | None:
    """One flag per question, the most telling first (a too-easy question also discriminates badly)."""
    if q.first_attempts < MIN_FIRST_ATTEMPTS or q.facility is None:
        return None
    facility = f"{q.facility:.0f}%"
    if q.facility > EASY:
        return Flag(q.position, q.text,
                    f"facility {facility}: nearly everyone is right; make the wrong options plausible or ask what "
                    "only reading the document tells",
                    f"Gần như ai cũng đúng (chỉ số dễ {facility}): làm các phương án sai hợp lý hơn, hoặc hỏi điều "
                    "phải đọc tài liệu mới biết.")
    if q.facility < HARD:
        return Flag(q.position, q.text,
                    f"facility {facility}: few are right; check the answer key and the wording, and whether the "
                    "summary says it",
                    f"Rất ít người đúng (chỉ số dễ {facility}): kiểm tra lại đáp án, cách hỏi và xem tóm tắt đã nêu "
                    "rõ nội dung này chưa.")
    if q.discrimination is not None and q.discrimination < DISCRIMINATION:
        d = f"{q.discrimination:.1f}"
        return Flag(q.position, q.text,
                    f"discrimination {d}: good scorers do no better on it; look for an ambiguous wording or a "
                    "second defensible answer",
                    f"Người làm bài tốt không đúng nhiều hơn (chỉ số phân biệt {d.replace('.', ',')}): xem câu hỏi có "
                    "mơ hồ hoặc có hơn một đáp án đúng không.")
    return None


def flagged(questions: list[QuestionStat]) -> list[Flag]:
    return [f for q in questions if (f := flag_question(q)) is not None]
