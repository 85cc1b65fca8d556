"""`hoctap report` flags questions to look at again: too easy, too hard, or not telling readers apart."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from bot.reports.question_review import MIN_FIRST_ATTEMPTS, flag_question, flagged
from bot.reports.xlsx import HEADER_ROW, QUESTION_HEADERS
from bot.services.stats import QuestionStat, question_stats
from bot.storage.models import Answer, Attempt, AttemptQuestion, Member, Question, Round, Unit, UnitAncestor


def stat(facility, discrimination, n=MIN_FIRST_ATTEMPTS) -> QuestionStat:
    return QuestionStat(question_id=1, position=4, text="Câu?", option_count=4, seen=n, answered=n, correct=0,
                        share_correct=facility, wrong_letter=None, wrong_count=0, first_attempts=n,
                        facility=facility, discrimination=discrimination, upper_lower=None)


@pytest.mark.parametrize(
    "facility, discrimination, reason, vi",
    [
        (96.0, 2.0, "facility 96%: nearly everyone is right", "Gần như ai cũng đúng (chỉ số dễ 96%)"),
        (19.0, 30.0, "facility 19%: few are right; check the answer key", "Rất ít người đúng (chỉ số dễ 19%)"),
        (60.0, 9.5, "discrimination 9.5: good scorers do no better", "(chỉ số phân biệt 9,5)"),
    ],
)
def test_each_threshold_gives_one_line_with_its_suggestion(facility, discrimination, reason, vi):
    flag = flag_question(stat(facility, discrimination))
    assert flag.reason.startswith(reason) and "\n" not in flag.reason
    assert vi in flag.suggestion_vi


@pytest.mark.parametrize("facility, discrimination, n", [(95.0, 10.0, 40), (20.0, 50.0, 40), (100.0, 0.0, 9)])
def test_questions_inside_the_bounds_or_with_too_few_attempts_are_not_flagged(facility, discrimination, n):
    assert flag_question(stat(facility, discrimination, n)) is None


def _answer_pattern(position: int, strength: int) -> bool:
    """Question 1 everyone gets right, question 2 only the weakest, question 3 every other member;
    the rest the stronger members."""
    if position == 1:
        return True
    if position == 2:
        return strength == 0
    if position == 3:
        return strength % 2 == 0
    return strength >= 2 + position % 5


def test_report_prints_and_the_workbook_lists_the_questions_to_review(cli, province, workdir):
    with province.session() as s:
        rnd = s.scalar(select(Round).order_by(Round.id))
        dp = s.scalar(select(Unit).where(Unit.code == "DP"))
        members = list(s.scalars(select(Member).join(UnitAncestor, UnitAncestor.descendant_id == Member.unit_id)
                                 .where(UnitAncestor.ancestor_id == dp.id, Member.active).order_by(Member.code)))[:12]
        pool = list(s.scalars(select(Question).where(Question.document_id == rnd.document_id, Question.current)
                              .order_by(Question.position)))
        now = rnd.opens_at + timedelta(minutes=30)
        for strength, m in enumerate(members):
            a = Attempt(round_id=rnd.id, member_id=m.id, number=1, started_at=now, question_count=len(pool),
                        submitted_at=now)
            a.questions = [AttemptQuestion(position=q.position, question_id=q.id,
                                           option_order=list(range(len(q.options)))) for q in pool]
            s.add(a)
            s.flush()
            right = 0
            for q in pool:
                ok = _answer_pattern(q.position, strength)
                right += ok
                s.add(Answer(attempt_id=a.id, position=q.position, question_id=q.id, correct=ok, answered_at=now,
                             chosen_index=q.answer_index if ok else (q.answer_index + 1) % len(q.options)))
            a.correct_count, a.score = right, round(100 * right / len(pool), 1)
            a.passed = a.score >= 80
        s.flush()
        expected = flagged(question_stats(s, rnd.id, dp.id))
    assert [f.position for f in expected] == [1, 2, 3]
    result = cli("report", "1", "--unit", "DP", "--xlsx", "report.xlsx")
    assert result.code == 0, result.err
    review = [line.strip() for line in result.lines if "review question" in line]
    assert review == [f"review question {f.position}: {f.reason}" for f in expected]
    assert review[0].startswith("review question 1: facility 100%")
    ws = load_workbook(workdir / "report.xlsx")["Đợt 1 - Câu hỏi"]
    rows = {r[0]: r[-1] for r in ws.iter_rows(min_row=HEADER_ROW + 1, max_col=len(QUESTION_HEADERS), values_only=True)
            if r[0] is not None}
    assert QUESTION_HEADERS[-1] == "Gợi ý xem lại câu hỏi"
    assert {p: v for p, v in rows.items() if v} == {f.position: f.suggestion_vi for f in expected}
