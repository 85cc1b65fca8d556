"""Study and quiz use cases: open rounds of a member, start or resume an attempt, record answers.

Everything about a quiz is in the database (drawn questions, option order, answers), so a restart
or another process continues exactly where the member was. The unique key on (attempt, position)
makes a double tap count once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from bot.storage.models import (
    Answer, Attempt, AttemptQuestion, Document, Member, Question, Round, RoundUnit, StudyView, UnitAncestor,
)

_rng = random.SystemRandom()


def open_rounds_for(session: Session, member: Member, now: datetime) -> list[Round]:
    """Rounds open now whose audience includes the member's unit, soonest deadline first."""
    in_audience = exists().where(
        RoundUnit.round_id == Round.id,
        UnitAncestor.ancestor_id == RoundUnit.unit_id,
        UnitAncestor.descendant_id == member.unit_id,
    )
    return list(session.scalars(
        select(Round).options(selectinload(Round.document))
        .where(Round.opens_at <= now, Round.closes_at > now, Round.closed_at.is_(None), in_audience)
        .order_by(Round.closes_at, Round.id)
    ))


def round_for_member(session: Session, member: Member, round_id: int, now: datetime) -> Round | None:
    """The round if it is open and the member is in its audience; None otherwise (no peeking)."""
    return next((r for r in open_rounds_for(session, member, now) if r.id == round_id), None)


def record_view(session: Session, round_id: int, member_id: int, now: datetime) -> None:
    view = session.get(StudyView, (round_id, member_id))
    if view is not None:
        view.last_opened_at = now
        return
    try:
        with session.begin_nested():  # the same member reading on two messengers at once
            session.add(StudyView(round_id=round_id, member_id=member_id, first_opened_at=now, last_opened_at=now))
    except IntegrityError:
        session.get(StudyView, (round_id, member_id)).last_opened_at = now


@dataclass
class QuizPosition:
    """Where an attempt stands: the next question to show, or done."""

    attempt: Attempt
    position: int | None  # 1-based position of the next unanswered question; None when submitted
    answered: int

    @property
    def current(self) -> AttemptQuestion | None:
        return None if self.position is None else self.attempt.questions[self.position - 1]


def attempts_of(session: Session, round_id: int, member_id: int) -> list[Attempt]:
    return list(session.scalars(
        select(Attempt).where(Attempt.round_id == round_id, Attempt.member_id == member_id).order_by(Attempt.number)
    ))


def in_progress_attempt(session: Session, member_id: int, now: datetime) -> Attempt | None:
    """The member's unsubmitted attempt in a still-open round (at most one is started at a time)."""
    return session.scalar(
        select(Attempt).join(Round, Round.id == Attempt.round_id)
        .where(Attempt.member_id == member_id, Attempt.submitted_at.is_(None),
               Round.closed_at.is_(None), Round.closes_at > now)
        .order_by(Attempt.started_at.desc())
    )


def position_of(session: Session, attempt: Attempt) -> QuizPosition:
    return _position(attempt, _answered(session, attempt))


def _answered(session: Session, attempt: Attempt) -> set[int]:
    return set(session.scalars(select(Answer.position).where(Answer.attempt_id == attempt.id)))


def _position(attempt: Attempt, answered: set[int]) -> QuizPosition:
    if attempt.submitted_at is not None:
        return QuizPosition(attempt, None, len(answered))
    nxt = next((q.position for q in attempt.questions if q.position not in answered), None)
    return QuizPosition(attempt, nxt, len(answered))


def start_or_resume(session: Session, rnd: Round, member: Member, now: datetime) -> QuizPosition | None:
    """Resume the open attempt, or draw a new one; None when no attempt is left."""
    attempts = attempts_of(session, rnd.id, member.id)
    for attempt in attempts:
        if attempt.submitted_at is None:
            return position_of(session, attempt)
    doc: Document = rnd.document
    if len(attempts) >= doc.max_attempts:
        return None
    pool = list(session.scalars(
        select(Question).where(Question.document_id == doc.id, Question.current).order_by(Question.position)
    ))
    count = min(doc.questions_per_attempt or len(pool), len(pool))
    drawn = _rng.sample(pool, count) if count < len(pool) else pool
    attempt = Attempt(round_id=rnd.id, member_id=member.id, number=len(attempts) + 1, started_at=now,
                      question_count=len(drawn))
    for pos, q in enumerate(drawn, start=1):
        order = list(range(len(q.options)))
        if doc.shuffle_options:
            _rng.shuffle(order)
        attempt.questions.append(AttemptQuestion(position=pos, question_id=q.id, option_order=order))
    try:
        with session.begin_nested():
            session.add(attempt)
            session.flush()
    except IntegrityError:  # another process started it a moment ago: resume theirs
        return start_or_resume(session, rnd, member, now)
    return QuizPosition(attempt, 1, 0)


@dataclass
class AnswerResult:
    status: str  # recorded | duplicate | stale | closed | missing
    quiz: QuizPosition | None = None
    shown_letter: str | None = None  # the letter recorded (also for a duplicate, when known)


def answer(session: Session, member: Member, attempt_id: int, position: int, shown_index: int,
           now: datetime) -> AnswerResult:
    """Record the option shown at ``shown_index`` for ``position``; submit after the last question.

    The common case is four statements: the attempt with its round and questions, the positions
    answered, and one ``INSERT ... ON CONFLICT DO NOTHING`` (no SAVEPOINT); the new position is
    worked out from what was read, not read again."""
    found = session.execute(
        select(Attempt, Round).join(Round, Round.id == Attempt.round_id)
        .options(joinedload(Attempt.questions).joinedload(AttemptQuestion.question))
        .where(Attempt.id == attempt_id, Attempt.member_id == member.id)
    ).unique().first()
    if found is None or not 1 <= position <= len(found[0].questions):
        return AnswerResult("missing")
    attempt, rnd = found
    answered = _answered(session, attempt)
    quiz = _position(attempt, answered)
    if attempt.submitted_at is None and (rnd.closed_at is not None or now >= rnd.closes_at):
        return AnswerResult("closed", quiz)
    if quiz.position != position:
        if position not in answered:
            return AnswerResult("stale", quiz)
        already = session.scalar(select(Answer.chosen_index).where(Answer.attempt_id == attempt.id,
                                                                   Answer.position == position))
        order = attempt.questions[position - 1].option_order  # the letter recorded, as the member saw it
        return AnswerResult("duplicate", quiz, "ABCDEF"[order.index(already)])
    aq = attempt.questions[position - 1]
    if not 0 <= shown_index < len(aq.option_order):
        return AnswerResult("stale", quiz)
    original = aq.option_order[shown_index]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = Answer.__table__
    added = session.connection().execute(
        insert(table).values(attempt_id=attempt.id, position=position, question_id=aq.question_id,
                             chosen_index=original, correct=original == aq.question.answer_index, answered_at=now)
        .on_conflict_do_nothing(index_elements=["attempt_id", "position"]).returning(table.c.id)).first()
    if added is None:  # the same tap arrived twice at once
        return AnswerResult("duplicate", position_of(session, attempt))
    quiz = _position(attempt, answered | {position})
    if quiz.position is None:
        _submit(session, attempt, now)
        quiz = _position(attempt, answered | {position})
    return AnswerResult("recorded", quiz, "ABCDEF"[shown_index])


def _submit(session: Session, attempt: Attempt, now: datetime) -> None:
    correct = session.scalar(
        select(func.count()).where(Answer.attempt_id == attempt.id, Answer.correct)
    ) or 0
    doc = session.scalar(select(Document).join(Round, Round.document_id == Document.id).where(Round.id == attempt.round_id))
    attempt.correct_count = correct
    attempt.score = round(100.0 * correct / attempt.question_count, 1) if attempt.question_count else 0.0
    attempt.passed = attempt.score >= doc.pass_score
    attempt.submitted_at = now
    session.flush()


@dataclass
class Review:
    """One answered question of a submitted attempt, as the member saw it."""

    position: int
    question: Question
    option_order: list[int]
    chosen_index: int
    correct: bool


def review(session: Session, attempt: Attempt) -> list[Review]:
    rows = session.execute(
        select(AttemptQuestion, Answer)
        .join(Answer, (Answer.attempt_id == AttemptQuestion.attempt_id) & (Answer.position == AttemptQuestion.position))
        .options(selectinload(AttemptQuestion.question))
        .where(AttemptQuestion.attempt_id == attempt.id).order_by(AttemptQuestion.position)
    ).all()
    return [Review(aq.position, aq.question, aq.option_order, ans.chosen_index, ans.correct) for aq, ans in rows]


def member_history(session: Session, member: Member) -> list[tuple[Round, list[Attempt]]]:
    """Every round the member attempted, newest first, with their attempts."""
    attempts = list(session.scalars(
        select(Attempt).where(Attempt.member_id == member.id).order_by(Attempt.round_id, Attempt.number)
    ))
    by_round: dict[int, list[Attempt]] = {}
    for a in attempts:
        by_round.setdefault(a.round_id, []).append(a)
    rounds = session.scalars(
        select(Round).options(selectinload(Round.document)).where(Round.id.in_(by_round)).order_by(Round.opens_at.desc())
    )
    return [(r, by_round[r.id]) for r in rounds]
