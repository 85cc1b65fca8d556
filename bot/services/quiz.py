"""Study and quiz use cases: open rounds of a member, start or resume an attempt, record answers.

Everything about a quiz is in the database (drawn questions, option order, answers), so a restart
or another process continues exactly where the member was. The unique key on (attempt, position)
makes a double tap count once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from bot.services.question_texts import QuestionContent, question_texts
from bot.storage.db import insert_if_new
from bot.storage.models import (
    Answer, Attempt, AttemptQuestion, Document, Member, Question, Round, RoundUnit, StudyView, UnitAncestor,
)

_rng = random.SystemRandom()


def _unit_in_audience(unit_id):
    """The round's audience (its units and everything below them) includes unit ``unit_id``."""
    return exists().where(RoundUnit.round_id == Round.id, UnitAncestor.ancestor_id == RoundUnit.unit_id,
                          UnitAncestor.descendant_id == unit_id)


def _open_rounds_statement():
    """Rounds open at ``now`` whose audience includes unit ``unit_id``, with their documents (one statement)."""
    now = bindparam("now")
    return (select(Round).options(joinedload(Round.document, innerjoin=True))
            .where(Round.opens_at <= now, Round.closes_at > now, Round.closed_at.is_(None),
                   _unit_in_audience(bindparam("unit_id")))
            .order_by(Round.closes_at, Round.id))


# Built once: /lambai and the study page read these on every visit, and building an ORM statement (and its
# cache key) cost more than running it.
_OPEN_ROUNDS = _open_rounds_statement()
_ATTEMPTS_OF = (select(Attempt).where(Attempt.round_id == bindparam("round_id"),
                                      Attempt.member_id == bindparam("member_id")).order_by(Attempt.number))
_ATTEMPTS_USED = (select(func.count()).select_from(Attempt.__table__)
                  .where(Attempt.__table__.c.round_id == bindparam("round_id"),
                         Attempt.__table__.c.member_id == bindparam("member_id")))
_ROUND_WITH_DOCUMENT = (select(Round).options(joinedload(Round.document, innerjoin=True))
                        .where(Round.id == bindparam("round_id")))
_IN_PROGRESS = (select(Attempt).join(Round, Round.id == Attempt.round_id)
                .where(Attempt.member_id == bindparam("member_id"), Attempt.submitted_at.is_(None),
                       Round.closed_at.is_(None), Round.closes_at > bindparam("now"))
                .order_by(Attempt.started_at.desc()))


def open_rounds_for(session: Session, member: Member, now: datetime) -> list[Round]:
    """Rounds open now whose audience includes the member's unit, soonest deadline first."""
    return list(session.scalars(_OPEN_ROUNDS, {"unit_id": member.unit_id, "now": now}))


def round_for_member(session: Session, member: Member, round_id: int, now: datetime) -> Round | None:
    """The round if it is open and the member is in its audience; None otherwise (no peeking)."""
    return next((r for r in open_rounds_for(session, member, now) if r.id == round_id), None)


def round_over_for(session: Session, member: Member, round_id: int, now: datetime) -> bool:
    """The round has ended (closed or past its deadline) and the member was in its audience: a page of it
    opened late says so rather than "not found"; anyone else learns nothing of it."""
    return session.scalar(select(Round.id).where(
        Round.id == round_id, Round.opens_at <= now, (Round.closed_at.is_not(None)) | (Round.closes_at <= now),
        _unit_in_audience(member.unit_id))) is not None


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

    attempt: Attempt | AttemptState
    position: int | None  # 1-based position of the next unanswered question; None when submitted
    answered: int

    @property
    def current(self) -> AttemptQuestion | None:
        return None if self.position is None else self.attempt.questions[self.position - 1]


def attempts_of(session: Session, round_id: int, member_id: int) -> list[Attempt]:
    return list(session.scalars(_ATTEMPTS_OF, {"round_id": round_id, "member_id": member_id}))


def attempts_used(session: Session, round_id: int, member_id: int) -> int:
    return session.connection().execute(_ATTEMPTS_USED, {"round_id": round_id, "member_id": member_id}).scalar()


def round_with_document(session: Session, round_id: int) -> Round | None:
    """A round and its document in one statement (a result screen needs both)."""
    return session.scalars(_ROUND_WITH_DOCUMENT, {"round_id": round_id}).first()


def in_progress_attempt(session: Session, member_id: int, now: datetime) -> Attempt | None:
    """The member's unsubmitted attempt in a still-open round (at most one is started at a time)."""
    return session.scalars(_IN_PROGRESS, {"member_id": member_id, "now": now}).first()


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
    """Resume the open attempt, or draw a new one; None when no attempt is left. A new attempt is
    written with Core statements (``INSERT ... ON CONFLICT DO NOTHING``, no SAVEPOINT) and comes
    back as an ``AttemptState``, not an ORM ``Attempt``."""
    attempts = attempts_of(session, rnd.id, member.id)
    for attempt in attempts:
        if attempt.submitted_at is None:
            return position_of(session, attempt)
    doc: Document = rnd.document
    if len(attempts) >= doc.max_attempts:
        return None
    pool = session.connection().execute(_POOL, {"document_id": doc.id}).all()
    texts = question_texts(session.connection(), pool)
    count = min(doc.questions_per_attempt or len(pool), len(pool))
    drawn = _rng.sample(pool, count) if count < len(pool) else pool
    bind = session.get_bind().dialect.name
    attempt_id = session.connection().execute(
        insert_if_new(bind, Attempt.__table__, _ATTEMPT_COLUMNS, returning="id",
                      conflict=("round_id", "member_id", "number")),
        {"round_id": rnd.id, "member_id": member.id, "number": len(attempts) + 1, "started_at": now,
         "question_count": len(drawn)}).scalar()
    if attempt_id is None:  # another process started it a moment ago: resume theirs
        return start_or_resume(session, rnd, member, now)
    questions = []
    for pos, q in enumerate(drawn, start=1):
        order = list(range(len(texts[q.id].options)))
        if doc.shuffle_options:
            _rng.shuffle(order)
        questions.append(DrawnQuestion(pos, q.id, order, texts[q.id], None, None))
    if questions:
        session.connection().execute(insert(AttemptQuestion.__table__), [
            {"attempt_id": attempt_id, "position": d.position, "question_id": d.question_id,
             "option_order": d.option_order} for d in questions])
    attempt = AttemptState(attempt_id, rnd.id, member.id, len(attempts) + 1, len(drawn), None, None, None, None,
                           rnd.closes_at, rnd.closed_at, doc.pass_score, questions)
    return QuizPosition(attempt, 1, 0)


@dataclass
class AnswerResult:
    status: str  # recorded | duplicate | stale | closed | missing
    quiz: QuizPosition | None = None
    shown_letter: str | None = None  # the letter recorded (also for a duplicate, when known)


@dataclass
class DrawnQuestion:
    """One position of an attempt as read on the answer path: the fields of ``AttemptQuestion`` the
    messages use, and the member's answer if any."""

    position: int
    question_id: int
    option_order: list[int]
    question: QuestionContent
    chosen_index: int | None
    correct: bool | None


@dataclass
class AttemptState:
    """An attempt as the answer path reads it (one statement) and a new attempt is drawn, without ORM
    objects (answers are the busiest path of the bot): the fields of ``Attempt`` the messages use,
    its questions, and its round's window and pass mark."""

    id: int
    round_id: int
    member_id: int
    number: int
    question_count: int
    submitted_at: datetime | None
    correct_count: int | None
    score: float | None
    passed: bool | None
    closes_at: datetime
    closed_at: datetime | None
    pass_score: int
    questions: list[DrawnQuestion]


def _answer_state_statement():
    """The attempt, its round, its drawn questions and their answers: built once, ids bound per call."""
    a, r, d = Attempt.__table__, Round.__table__, Document.__table__
    aq, q, ans = AttemptQuestion.__table__, Question.__table__, Answer.__table__
    return (
        select(a.c.id, a.c.round_id, a.c.member_id, a.c.number, a.c.question_count, a.c.submitted_at,
               a.c.correct_count, a.c.score, a.c.passed, r.c.closes_at, r.c.closed_at, d.c.pass_score,
               aq.c.position, aq.c.question_id, aq.c.option_order, q.c.content_hash, ans.c.chosen_index, ans.c.correct)
        .join(r, r.c.id == a.c.round_id).join(d, d.c.id == r.c.document_id)
        .join(aq, aq.c.attempt_id == a.c.id).join(q, q.c.id == aq.c.question_id)
        .outerjoin(ans, (ans.c.attempt_id == a.c.id) & (ans.c.position == aq.c.position))
        .where(a.c.id == bindparam("attempt_id"), a.c.member_id == bindparam("member_id"))
        .order_by(aq.c.position)
    )


_ANSWER_STATE = _answer_state_statement()
_POOL = (select(Question.__table__.c["id", "content_hash"])
         .where(Question.__table__.c.document_id == bindparam("document_id"), Question.__table__.c.current)
         .order_by(Question.__table__.c.position))
_SUBMIT = (update(Attempt.__table__).where(Attempt.__table__.c.id == bindparam("attempt_id"))
           .values({c: bindparam(f"new_{c}") for c in ("correct_count", "score", "passed", "submitted_at")}))
_ATTEMPT_COLUMNS = ("round_id", "member_id", "number", "started_at", "question_count")
_ANSWER_COLUMNS = ("attempt_id", "position", "question_id", "chosen_index", "correct", "answered_at")


def answer_state(session: Session, attempt_id: int, member_id: int) -> AttemptState | None:
    """The member's attempt as the answer path needs it; None when it is not theirs (or not there)."""
    rows = session.connection().execute(_ANSWER_STATE, {"attempt_id": attempt_id, "member_id": member_id}).all()
    if not rows:
        return None
    first = rows[0]
    texts = question_texts(session.connection(), ((row.question_id, row.content_hash) for row in rows))
    return AttemptState(
        *first[:12],
        questions=[DrawnQuestion(row.position, row.question_id, row.option_order, texts[row.question_id],
                                 row.chosen_index, row.correct) for row in rows])


def answer(session: Session, member_id: int, attempt_id: int, position: int, shown_index: int,
           now: datetime) -> AnswerResult:
    """Record the option shown at ``shown_index`` for ``position``; submit after the last question.

    The common case is two statements, both built once: the attempt with its round, questions and
    answers so far, and one ``INSERT ... ON CONFLICT DO NOTHING`` (no SAVEPOINT); the new position
    is worked out from what was read, not read again. The result's ``quiz.attempt`` is an
    ``AttemptState``, not an ORM ``Attempt``."""
    attempt = answer_state(session, attempt_id, member_id)
    if attempt is None or not 1 <= position <= len(attempt.questions):
        return AnswerResult("missing")
    answered = {q.position for q in attempt.questions if q.chosen_index is not None}
    quiz = _position(attempt, answered)
    if attempt.submitted_at is None and (attempt.closed_at is not None or now >= attempt.closes_at):
        return AnswerResult("closed", quiz)
    aq = attempt.questions[position - 1]
    if quiz.position != position:
        if position not in answered:
            return AnswerResult("stale", quiz)
        # the letter recorded, as the member saw it
        return AnswerResult("duplicate", quiz, "ABCDEF"[aq.option_order.index(aq.chosen_index)])
    if not 0 <= shown_index < len(aq.option_order):
        return AnswerResult("stale", quiz)
    original = aq.option_order[shown_index]
    correct = original == aq.question.answer_index
    stmt = insert_if_new(session.get_bind().dialect.name, Answer.__table__, _ANSWER_COLUMNS, returning="id",
                         conflict=("attempt_id", "position"))
    added = session.connection().execute(stmt, {
        "attempt_id": attempt.id, "position": position, "question_id": aq.question_id,
        "chosen_index": original, "correct": correct, "answered_at": now}).first()
    if added is None:  # the same tap arrived twice at once
        return AnswerResult("duplicate", position_of(session, attempt))
    aq.chosen_index, aq.correct = original, correct
    quiz = _position(attempt, answered | {position})
    if quiz.position is None:
        _submit(session, attempt, now)
        quiz = _position(attempt, answered | {position})
    return AnswerResult("recorded", quiz, "ABCDEF"[shown_index])


def _submit(session: Session, attempt: AttemptState, now: datetime) -> None:
    """Score the attempt from the answers read with it (all of them: each position is answered once)."""
    correct = sum(1 for q in attempt.questions if q.correct)
    attempt.correct_count = correct
    attempt.score = round(100.0 * correct / attempt.question_count, 1) if attempt.question_count else 0.0
    attempt.passed = attempt.score >= attempt.pass_score
    attempt.submitted_at = now
    values = {"correct_count": correct, "score": attempt.score, "passed": attempt.passed, "submitted_at": now}
    session.connection().execute(_SUBMIT, {"attempt_id": attempt.id} | {f"new_{k}": v for k, v in values.items()})
    loaded = session.identity_map.get(identity_key(Attempt, attempt.id))
    if loaded is not None:  # an Attempt this session already holds (the web pages) sees the new values
        for name, value in values.items():
            set_committed_value(loaded, name, value)


@dataclass
class Review:
    """One answered question of a submitted attempt, as the member saw it."""

    position: int
    question: Question
    option_order: list[int]
    chosen_index: int
    correct: bool


def review(session: Session, attempt: Attempt | AttemptState) -> list[Review]:
    """The attempt's answered questions in order; an ``AttemptState`` (the answer path's, read with
    its questions and answers) needs no statement."""
    if isinstance(attempt, AttemptState):
        return [Review(q.position, q.question, q.option_order, q.chosen_index, q.correct)
                for q in attempt.questions if q.chosen_index is not None]
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
