"""Participation figures of a round for a unit and its subtree, and per-question statistics.

Definitions (the numbers a secretary answers for; every function below uses exactly these):

- **Audience** of a round for a unit U: the *active*, *not exempt* members (``counted_member``)
  whose unit is in the round's audience (the round's units and every unit below them,
  ``audience_unit_ids``) and in U's subtree (U and every unit below it), at the moment the figure
  is computed. Deactivated members leave both the numerator and the denominator; a member moved to
  another unit counts where they are now.
- **Exempt** (miễn sinh hoạt): active members of those units exempt from Party work; outside the
  audience, counted apart (``Figures.exempt``).
- **Finished** (đã hoàn thành): audience members with at least one *submitted* attempt
  (``Attempt.submitted_at`` not null) in the round.
- **In progress** (đang làm dở): audience members with an unsubmitted attempt and no submitted one.
- **Not started** (chưa làm): the rest of the audience (no attempt at all).
  ``finished + in_progress + not_started == audience``.
- **Counted attempt** of a finished member: the submitted attempt with the highest score (the
  default rule "best"; among equal scores a passed one wins, which only matters if the document's
  pass score changed between attempts).
- **Passed**: finished members whose counted attempt passed. **Average score**: the mean of the
  counted scores over finished members (``None`` when nobody finished).
- **Rate** = finished ÷ audience × 100 (0 when the audience is 0).
- **Needed** = max(0, ⌈target × audience ÷ 100⌉ − finished): how many more members must finish to
  reach the target; computed with ``Decimal`` on the target's decimal text, because floats are
  off by one at times (64.4 × 250 ÷ 100 is 161.00000000000003 in floats, which would ask for 162).
- **Target met**: audience > 0 and needed == 0.

Every function runs a fixed, small number of SQL statements whatever the number of units or
members (aggregation with GROUP BY over the ``unit_ancestors`` closure table). Works on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import functools
import math
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import Integer, and_, bindparam, case, func, literal, or_, select
from sqlalchemy.orm import Session, aliased, selectinload

from bot.domain.permissions import round_touches_unit
from bot.domain.statistics import Figures, NotFinished
from bot.services.rounds import counted_member, round_status
from bot.storage.models import (
    Answer, Attempt, AttemptQuestion, Member, Question, Round, RoundResult, RoundUnit, Unit, UnitAncestor,
)

LETTERS = "ABCDEF"
RECENT_CLOSED = timedelta(days=30)


class StatsError(Exception):
    """A statistics request about a round or unit that does not exist."""


# -- figures -----------------------------------------------------------------------------------
def rate_of(finished: int, audience: int) -> float:
    """finished ÷ audience × 100, 0 for an empty audience."""
    return 100.0 * finished / audience if audience else 0.0


def needed_of(target: float, audience: int, finished: int) -> int:
    """max(0, ⌈target × audience ÷ 100⌉ − finished), exact (Decimal on the target's shortest text)."""
    required = math.ceil(Decimal(repr(float(target))) * audience / 100)
    return max(0, required - finished)


def _time_left(rnd: Round, now: datetime) -> timedelta | None:
    return None if round_status(rnd, now) == "closed" else rnd.closes_at - now


def _lit(value: int):
    """An id rendered into the SQL text rather than sent as a parameter.

    PostgreSQL (psycopg prepares a statement after 5 runs) switches to a *generic* plan that
    ignores the value: for "the units below unit 1" it then assumes a handful of units instead of
    2,000 and picks nested loops (0.3 s instead of 0.13 s for a province). With the id in the
    text every plan is a custom plan. Ids are integers, so nothing can be injected.
    """
    return bindparam(None, int(value), type_=Integer, literal_execute=True)


def _in_audience(round_id: int, unit_col):
    """``unit_col`` is in the round's audience: one probe of the closure table per unit row."""
    return (
        select(literal(1))
        .select_from(RoundUnit)
        .join(UnitAncestor, UnitAncestor.ancestor_id == RoundUnit.unit_id)
        .where(RoundUnit.round_id == round_id, UnitAncestor.descendant_id == unit_col)
        .exists()
    )


def _materializes(session: Session) -> bool:
    """Whether CTEs can be asked to be computed once (PostgreSQL 12+, SQLite 3.35+). Without it SQLite
    flattens the per-unit totals into the join and plans it badly (0.75 s instead of 0.15 s for a
    province of 100,000 members)."""
    dialect = session.get_bind().dialect
    return dialect.name == "postgresql" or (dialect.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 35))


@dataclass(frozen=True)
class _Slot:
    unit_id: int
    code: str
    name: str
    audience: int
    finished: int
    passed: int
    in_progress: int
    score_sum: float | None
    exempt: int


_SLOT_STATEMENTS: dict[bool, object] = {}  # built once: with MATERIALIZED CTEs or without


def _slot_statement(materialize: bool):
    """One statement: totals of ``unit_id``'s own members (slot = the unit) and of each direct
    child's whole subtree (slot = the child), over the round's audience.

    1. per member (active members of the subtree, read from the members' (unit_id, active, exempt)
       index alone, exempt ones marked and counted apart): their ``round_results`` row for the round
       if any (attempts, submitted attempts, best submitted score, whether it passed), which the
       database keeps from the attempts (migration 0013), one look-up per member;
    2. per unit: members, finished, in progress, passed, sum of counted scores (materialised);
    3. ``unit_ancestors`` maps every unit of the subtree that is in the round's audience to its
       slot: rows (child → unit) where the child is at depth 1 below ``unit_id``, plus
       (unit_id → unit_id) itself; units outside the audience drop out here (one closure-table
       probe per unit), and a GROUP BY slot adds up. The audience is a set of units, so filtering
       whole units after step 2 is the same as filtering members before it, and it keeps the
       planners' row estimates right (an IN over the audience made PostgreSQL expect 4 units).
    The number of rows grows with units and members, the number of statements does not.
    Built once per process (about a hundred SQLAlchemy constructs: building them and their cache key
    cost a branch's figures more than PostgreSQL's running the statement); the ids are still rendered
    into the SQL text at execution (``literal_execute``, see ``_lit``).
    """
    round_id = bindparam("slot_round_id", type_=Integer, literal_execute=True)
    unit_id = bindparam("slot_unit_id", type_=Integer, literal_execute=True)

    def materialized(cte):
        return cte.prefix_with("MATERIALIZED") if materialize else cte

    subtree = select(UnitAncestor.descendant_id).where(UnitAncestor.ancestor_id == unit_id)
    per_member = (
        select(
            Member.unit_id.label("unit_id"),
            RoundResult.attempts.label("n_all"),
            RoundResult.submitted.label("n_sub"),
            RoundResult.best_score.label("best"),
            RoundResult.best_passed.label("best_passed"),
            Member.exempt.label("exempt"),
        )
        .select_from(Member)
        .outerjoin(RoundResult, and_(RoundResult.member_id == Member.id, RoundResult.round_id == round_id))
        .where(Member.active, Member.unit_id.in_(subtree))
        .subquery("per_member")
    )
    pm = per_member.c
    counted = pm.exempt.is_(False)  # exempt members are counted apart, never in the audience
    finished = and_(counted, pm.n_sub > 0)
    per_unit = materialized((
        select(
            pm.unit_id.label("unit_id"),
            func.sum(case((counted, 1), else_=0)).label("audience"),
            func.sum(case((finished, 1), else_=0)).label("finished"),
            func.sum(case((and_(finished, pm.best_passed.is_(True)), 1), else_=0)).label("passed"),
            func.sum(case((and_(counted, pm.n_sub == 0, pm.n_all > 0), 1), else_=0)).label("in_progress"),
            func.sum(case((finished, pm.best))).label("score_sum"),
            func.sum(case((counted, 0), else_=1)).label("exempt"),
        )
        .group_by(pm.unit_id)
        .cte("per_unit")
    ))
    below, link = aliased(UnitAncestor, name="below"), aliased(UnitAncestor, name="link")
    slots = materialized((
        select(below.descendant_id.label("unit_id"), below.ancestor_id.label("slot_id"))
        .join(link, link.descendant_id == below.ancestor_id)
        .where(link.ancestor_id == unit_id, link.depth <= 1, or_(link.depth == 1, below.depth == 0))
        .cte("slots")
    ))
    return (
        select(
            Unit.id, Unit.code, Unit.name,
            func.sum(per_unit.c.audience), func.sum(per_unit.c.finished), func.sum(per_unit.c.passed),
            func.sum(per_unit.c.in_progress), func.sum(per_unit.c.score_sum), func.sum(per_unit.c.exempt),
        )
        .select_from(per_unit)
        .join(slots, slots.c.unit_id == per_unit.c.unit_id)
        .join(Unit, Unit.id == slots.c.slot_id)
        .where(_in_audience(round_id, per_unit.c.unit_id))
        .group_by(Unit.id, Unit.code, Unit.name)
    )


def _slot_totals(session: Session, round_id: int, unit_id: int) -> list[_Slot]:
    """``_slot_statement``'s rows for one round and unit."""
    materialize = _materializes(session)
    statement = _SLOT_STATEMENTS.get(materialize)
    if statement is None:
        statement = _SLOT_STATEMENTS[materialize] = _slot_statement(materialize)
    rows = session.execute(statement, {"slot_round_id": int(round_id), "slot_unit_id": int(unit_id)}).all()
    return [_Slot(r[0], r[1], r[2], int(r[3] or 0), int(r[4] or 0), int(r[5] or 0), int(r[6] or 0),
                  None if r[7] is None else float(r[7]), int(r[8] or 0)) for r in rows]


def _figures(rnd: Round, unit_id: int, code: str, name: str, slots: list[_Slot], now: datetime) -> Figures:
    audience = sum(s.audience for s in slots)
    finished = sum(s.finished for s in slots)
    in_progress = sum(s.in_progress for s in slots)
    score_sum = sum(s.score_sum for s in slots if s.score_sum is not None)
    return Figures(
        round_id=rnd.id, unit_id=unit_id, unit_code=code, unit_name=name,
        audience=audience, finished=finished, passed=sum(s.passed for s in slots), in_progress=in_progress,
        not_started=audience - finished - in_progress,
        average_score=score_sum / finished if finished else None,
        rate=rate_of(finished, audience), target=float(rnd.target_rate),
        needed=needed_of(rnd.target_rate, audience, finished),
        time_left=_time_left(rnd, now), status=round_status(rnd, now), exempt=sum(s.exempt for s in slots),
    )


def _get_round(session: Session, round_id: int) -> Round:
    rnd = session.get(Round, round_id)
    if rnd is None:
        raise StatsError(f"no round {round_id}")
    return rnd


def unit_rollup(session: Session, round_id: int, unit_id: int, now: datetime) -> tuple[Figures, list[Figures]]:
    """The cadre's screen in one aggregate statement (3 in all with the round and unit lookups):
    ``unit_figures`` of the unit and ``child_figures`` of its direct children."""
    rnd = _get_round(session, round_id)
    unit = session.get(Unit, unit_id)
    if unit is None:
        raise StatsError(f"no unit {unit_id}")
    slots = _slot_totals(session, round_id, unit_id)
    total = _figures(rnd, unit.id, unit.code, unit.name, slots, now)
    # The rows add up to the total: the unit's own members (a cadre of the commune itself) are a row of their
    # own, and a unit whose members are all exempt is a row too (0/0, its exempt counted)
    children = [_figures(rnd, s.unit_id, s.code, own_members(s.name) if s.unit_id == unit_id else s.name, [s], now)
                for s in slots if s.audience or s.exempt]
    if all(f.unit_id == unit_id for f in children):
        return total, []  # a branch: its members are the total, not a row beside nothing
    children.sort(key=lambda f: (f.unit_id == unit_id, f.exact_rate, f.unit_code))
    return total, children


def own_members(unit_name: str) -> str:
    """The row of a unit's own members, beside its child units'."""
    return f"Đảng viên trực thuộc {unit_name}"


def unit_figures(session: Session, round_id: int, unit_id: int, now: datetime) -> Figures:
    """Figures of ``round_id`` over ``unit_id`` and every unit below it (3 statements)."""
    return unit_rollup(session, round_id, unit_id, now)[0]


def child_figures(session: Session, round_id: int, unit_id: int, now: datetime) -> list[Figures]:
    """One row per direct child of ``unit_id``, each rolled up over the child's whole subtree.

    Sorted furthest from the target first: lowest rate first (compared exactly as fractions),
    ties by unit code; the unit's own members last, as a row of their own. Children with no member counted or
    exempt are left out. A fixed number of statements
    whatever the number of units (see ``_slot_totals``: GROUP BY over the closure table).
    Use ``unit_rollup`` to get the unit's own figures from the same statement.
    """
    return unit_rollup(session, round_id, unit_id, now)[1]


# -- rounds of a unit --------------------------------------------------------------------------
def rounds_for_unit(session: Session, unit_id: int, now: datetime) -> list[Round]:
    """Rounds a unit's figures are about: open now, or closed within the last 30 days.

    A round counts when one of its audience roots is the unit, above it (the unit is inside the
    audience) or below it (part of the unit's subtree is in the audience). Scheduled rounds are
    left out. "Closed" is ``closed_at`` when a round was closed early, else ``closes_at``.
    Order: open rounds by nearest deadline, then closed rounds most recently closed first.
    Two statements (rounds, then their documents).
    """
    cutoff = now - RECENT_CLOSED
    touches = round_touches_unit(Round.id, unit_id)
    is_open = and_(Round.closed_at.is_(None), Round.opens_at <= now, Round.closes_at > now)
    recently_closed = or_(
        and_(Round.closed_at.is_not(None), Round.closed_at >= cutoff),
        and_(Round.closed_at.is_(None), Round.closes_at <= now, Round.closes_at >= cutoff),
    )
    rounds = list(session.scalars(
        select(Round).options(selectinload(Round.document)).where(touches, or_(is_open, recently_closed))
    ))

    def closed_when(r: Round) -> datetime:
        return r.closed_at or r.closes_at

    open_rounds = sorted((r for r in rounds if round_status(r, now) == "open"), key=lambda r: (r.closes_at, r.id))
    closed = sorted((r for r in rounds if round_status(r, now) == "closed"),
                    key=lambda r: (closed_when(r), r.id), reverse=True)
    return open_rounds + closed


# -- who has not finished ----------------------------------------------------------------------
_TONES = {"\u0300": 1, "\u0309": 2, "\u0303": 3, "\u0301": 4, "\u0323": 5}  # huyền hỏi ngã sắc nặng
_MODIFIED = {("a", "\u0306"): "ă", ("a", "\u0302"): "â", ("e", "\u0302"): "ê", ("o", "\u0302"): "ô",
             ("o", "\u031b"): "ơ", ("u", "\u031b"): "ư"}
_ALPHABET = {c: i for i, c in enumerate("aăâbcdđeêfghijklmnoôơpqrstuưvwxyz")}


@functools.lru_cache(maxsize=4096)
def _word_key(word: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(letters, tones) of one word in Vietnamese dictionary order: a ă â b c d đ e ê …, then the
    tones ngang, huyền, hỏi, ngã, sắc, nặng."""
    letters: list[str] = []
    tones: list[int] = []
    for ch in unicodedata.normalize("NFD", word.casefold()):
        if ch in _TONES and letters:
            tones[-1] = _TONES[ch]
        elif unicodedata.combining(ch) and letters:
            letters[-1] = _MODIFIED.get((letters[-1], ch), letters[-1])
        else:
            letters.append(ch)
            tones.append(0)
    return tuple(_ALPHABET.get(c, 100 + ord(c)) for c in letters), tuple(tones)


def vietnamese_name_key(full_name: str) -> tuple:
    """Sort key for a Vietnamese full name the way rosters are sorted: by given name (the last
    word), then family and middle names, each in Vietnamese alphabetical order (đ after d, ă/â
    after a…; tones only break ties), then the exact text."""
    words = full_name.split()
    if not words:
        return ((), (), (), (), full_name)
    given, rest = _word_key(words[-1]), [_word_key(w) for w in words[:-1]]
    return (given[0], tuple(r[0] for r in rest), given[1], tuple(r[1] for r in rest), full_name)


def not_finished_members(
    session: Session, round_id: int, unit_id: int, offset: int = 0, limit: int | None = 50,
) -> tuple[int, list[NotFinished]]:
    """(total, one page) of audience members of ``unit_id``'s subtree who have not finished.

    Not finished = in the audience (active, audience unit, in the subtree) and no submitted
    attempt; in-progress members are included and flagged. Ordered by unit code, then name in
    Vietnamese roster order (:func:`vietnamese_name_key`: given name first, đ after d…), then
    member code. SQL cannot sort Vietnamese the same way on SQLite and PostgreSQL, so: one
    statement counts the not-finished members per unit (the total, and which units the page
    falls in), a second loads only those units' not-finished members, sorted here.
    ``limit=None`` returns every row.
    """
    round_id, unit_id = _lit(round_id), _lit(unit_id)
    has_submitted = (
        select(literal(1)).where(Attempt.round_id == round_id, Attempt.member_id == Member.id,
                                 Attempt.submitted_at.is_not(None)).exists()
    )
    subtree = select(UnitAncestor.descendant_id).where(UnitAncestor.ancestor_id == unit_id)
    conditions = (counted_member(), Member.unit_id.in_(subtree), ~has_submitted)
    per_unit = session.execute(
        select(Member.unit_id, Unit.code, func.count()).join(Unit, Unit.id == Member.unit_id)
        .where(*conditions).group_by(Member.unit_id, Unit.code)
        .having(_in_audience(round_id, Member.unit_id))  # whole units in or out: checked once per unit
    ).all()
    per_unit.sort(key=lambda r: (r[1], r[0]))
    total = sum(n for _, _, n in per_unit)
    end = total if limit is None else min(total, offset + limit)
    wanted, skip, seen = [], 0, 0
    for uid, _, n in per_unit:
        if seen + n > offset and seen < end:
            if not wanted:
                skip = offset - seen
            wanted.append(uid)
        seen += n
    if not wanted or offset >= end:
        return total, []
    has_open = (
        select(literal(1)).where(Attempt.round_id == round_id, Attempt.member_id == Member.id,
                                 Attempt.submitted_at.is_(None)).exists()
    )
    rows = session.execute(
        select(Member, Unit.code, Unit.name, has_open).join(Unit, Unit.id == Member.unit_id)
        .where(*conditions, Member.unit_id.in_(wanted))
    ).all()
    rows.sort(key=lambda r: (r[1], r[0].unit_id, vietnamese_name_key(r[0].full_name), r[0].code))
    page = rows[skip: skip + (end - offset)]
    return total, [NotFinished(m, code, name, bool(open_)) for m, code, name, open_ in page]


# -- questions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuestionStat:
    """How one question (one version: ``Question.id``) fared in a round.

    All attempts of the round (any member, submitted or not):
      ``seen``: attempts that drew it; ``answered``/``correct``: answers given and right ones;
      ``share_correct`` = correct ÷ answered × 100; ``wrong_letter``/``wrong_count``: the most chosen
      wrong option, lettered in the document's original option order (A = first option in the
      YAML, whatever order the member saw), ties to the earlier letter.
    First attempts only (attempt number 1, submitted), as Moodle's quiz statistics do by default:
      ``first_attempts`` (n), ``facility`` and ``discrimination`` (Moodle), ``upper_lower``
      (classical 27% groups). See :func:`question_stats` for the formulas.
    """

    question_id: int
    position: int
    text: str
    option_count: int
    seen: int
    answered: int
    correct: int
    share_correct: float | None  # percent
    wrong_letter: str | None
    wrong_count: int
    first_attempts: int
    facility: float | None  # percent 0-100
    discrimination: float | None  # -100..100 (Moodle: 100 × r(item, rest of attempt))
    upper_lower: float | None  # -100..100 ((p_upper27 − p_lower27) × 100)


def _subtree_members(unit_id: int):
    return select(Member.id).where(
        Member.unit_id.in_(select(UnitAncestor.descendant_id).where(UnitAncestor.ancestor_id == unit_id)))


def question_stats(session: Session, round_id: int, unit_id: int | None = None) -> list[QuestionStat]:
    """Per-question statistics of a round, by question position then id (4 statements).

    With ``unit_id``, only attempts of members whose unit is in that subtree count (active or not:
    an answer says something about the question even if its author has left since).

    First-attempt statistics follow Moodle's quiz statistics (moodle/moodle,
    ``question/classes/statistics/questions/calculator.php``; MoodleDocs "Quiz statistics
    calculations"), with every question worth one mark, x = 1 if the answer was right else 0, and
    the "rest of the attempt" y = correct answers on the attempt's other questions:

    - facility index F = mean(x) × 100 over first attempts that drew the question;
    - discrimination index D = 100 × cov(x, y) ÷ √(var(x) · var(y)) (sample (n−1) moments), i.e.
      the correlation of the question with the rest of the attempt; ``None`` when n < 2 or a
      variance is 0 (everyone right, or everyone wrong), as Moodle does;
    - upper–lower index (Kelley's 27% groups, which the issue asks for and classic item analysis
      uses): the first attempts that drew the question ranked by attempt score; k = round(0.27 × n)
      half up, at least 1; p_upper and p_lower = share of right answers in the top k and the
      bottom k; index = (p_upper − p_lower) × 100; ``None`` when n < 2. Attempts tied on the score
      at a group's edge share its remaining places equally (each counts with weight
      places ÷ tied), so the result does not depend on who happened to submit first.
    """
    scope = [Attempt.round_id == _lit(round_id)]
    if unit_id is not None:
        scope.append(Attempt.member_id.in_(_subtree_members(_lit(unit_id))))

    seen = (
        select(AttemptQuestion.question_id.label("qid"), func.count().label("seen"))
        .join(Attempt, Attempt.id == AttemptQuestion.attempt_id)
        .where(*scope)
        .group_by(AttemptQuestion.question_id)
        .subquery("seen")
    )
    seen_rows = session.execute(
        select(Question.id, Question.position, Question.text, Question.options, seen.c.seen)
        .join(seen, seen.c.qid == Question.id)
    ).all()

    chosen: dict[int, dict[tuple[int, bool], int]] = {}
    for qid, idx, ok, n in session.execute(
        select(Answer.question_id, Answer.chosen_index, Answer.correct, func.count())
        .join(Attempt, Attempt.id == Answer.attempt_id)
        .where(*scope)
        .group_by(Answer.question_id, Answer.chosen_index, Answer.correct)
    ):
        chosen.setdefault(qid, {})[(idx, bool(ok))] = n

    first = _first_attempt_moments(session, scope)

    out = []
    for r in seen_rows:
        counts = chosen.get(r.id, {})
        answered = sum(counts.values())
        correct = sum(n for (_, ok), n in counts.items() if ok)
        wrong = sorted(((n, -idx) for (idx, ok), n in counts.items() if not ok), reverse=True)
        wrong_letter, wrong_count = (LETTERS[-wrong[0][1]], wrong[0][0]) if wrong else (None, 0)
        m = first.get(r.id)
        out.append(QuestionStat(
            question_id=r.id, position=r.position, text=r.text, option_count=len(r.options),
            seen=r.seen,
            answered=answered, correct=correct,
            share_correct=100.0 * correct / answered if answered else None,
            wrong_letter=wrong_letter, wrong_count=wrong_count,
            first_attempts=m.n if m else 0,
            facility=m.facility if m else None,
            discrimination=m.discrimination if m else None,
            upper_lower=m.upper_lower if m else None,
        ))
    out.sort(key=lambda q: (q.position, q.question_id))
    return out


@dataclass(frozen=True)
class _Moments:
    n: int
    facility: float | None
    discrimination: float | None
    upper_lower: float | None


def _first_attempt_moments(session: Session, scope) -> dict[int, _Moments]:
    """One statement: per (question, attempt score), integer sums over first submitted attempts.

    x = answer correct (0/1), y = the attempt's correct_count − x. The sums of x, y, x², y², xy
    add up across score buckets, so the moments are exact integers until the final division; the
    buckets (at most a few dozen scores per question) also give the 27% groups.
    """
    x = case((Answer.correct.is_(True), 1), else_=0)
    y = Attempt.correct_count - x
    rows = session.execute(
        select(
            Answer.question_id, Attempt.score,
            func.count(), func.sum(x), func.sum(y), func.sum(x * x), func.sum(y * y), func.sum(x * y),
        )
        .join(Attempt, Attempt.id == Answer.attempt_id)
        .where(*scope, Attempt.number == 1, Attempt.submitted_at.is_not(None))
        .group_by(Answer.question_id, Attempt.score)
    ).all()
    buckets: dict[int, list[tuple[float, int, int]]] = {}
    sums: dict[int, list[int]] = {}
    for qid, score, n, sx, sy, sxx, syy, sxy in rows:
        buckets.setdefault(qid, []).append((float(score), int(n), int(sx)))
        acc = sums.setdefault(qid, [0, 0, 0, 0, 0, 0])
        for i, v in enumerate((n, sx, sy, sxx, syy, sxy)):
            acc[i] += int(v)
    out = {}
    for qid, (n, sx, sy, sxx, syy, sxy) in sums.items():
        facility = 100.0 * sx / n if n else None
        discrimination = upper_lower = None
        if n >= 2:
            # n·(n−1)·var and n·(n−1)·cov, in integers: n·Σx² − (Σx)² etc.
            vxx, vyy, cxy = n * sxx - sx * sx, n * syy - sy * sy, n * sxy - sx * sy
            if vxx > 0 and vyy > 0:
                discrimination = 100.0 * cxy / math.sqrt(vxx * vyy)
            k = max(1, (27 * n + 50) // 100)
            ordered = sorted(buckets[qid], reverse=True)
            upper = _group_correct(ordered, k)
            lower = _group_correct(ordered[::-1], k)
            upper_lower = float(100 * (upper - lower) / k)
        out[qid] = _Moments(n, facility, discrimination, upper_lower)
    return out


def _group_correct(buckets: list[tuple[float, int, int]], k: int) -> Fraction:
    """Right answers among the first ``k`` attempts of score buckets (score, count, right) in the
    given order; the bucket at the edge contributes its right answers pro rata."""
    right, left = Fraction(0), k
    for _, n, correct in buckets:
        if left <= 0:
            break
        take = min(n, left)
        right += Fraction(correct * take, n)
        left -= take
    return right
