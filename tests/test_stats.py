"""Participation figures and question statistics, compared with counts made independently in
Python from the raw rows (unit tree walked through parent links, not the closure table)."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction

import pytest
from sqlalchemy import event, func, inspect, select, text

from bot.services.rounds import open_round
from bot.services.stats import (
    child_figures, needed_of, not_finished_members, question_stats, rounds_for_unit, unit_figures, unit_rollup,
    vietnamese_name_key,
)
from bot.storage.models import (
    Answer, Attempt, AttemptQuestion, Document, Member, Question, Round, RoundResult, RoundUnit, Unit, UnitAncestor,
)
from bot.timeutil import utcnow

SEED = 20261201


# -- a province with members in every state ------------------------------------------------------
@dataclass
class Scenario:
    round_id: int
    other_round_id: int
    now: object


def _attempt(s, rng, rnd: Round, doc: Document, pool: list[Question], member: Member, number: int,
             ability: float, submit: bool, now, pending: list | None = None) -> Attempt:
    """An attempt as quiz.py would leave it: drawn questions, shuffled options, answers, score.

    With ``pending``, the answers wait there until the attempts are flushed together (fewer round
    trips); without it, the attempt is flushed and its answers added at once."""
    count = min(doc.questions_per_attempt or len(pool), len(pool))
    drawn = rng.sample(pool, count)
    attempt = Attempt(round_id=rnd.id, member_id=member.id, number=number,
                      started_at=now - timedelta(minutes=30 - number), question_count=count)
    for pos, q in enumerate(drawn, start=1):
        order = list(range(len(q.options)))
        rng.shuffle(order)
        attempt.questions.append(AttemptQuestion(position=pos, question_id=q.id, option_order=order))
    s.add(attempt)
    answers = []
    answered = count if submit else rng.randrange(0, count)
    correct = 0
    for pos, q in enumerate(drawn[:answered], start=1):
        # harder questions later in the document; a favourite wrong option per question
        if rng.random() < ability - 0.03 * (q.position % 7):
            chosen = q.answer_index
        else:
            wrong = [i for i in range(len(q.options)) if i != q.answer_index]
            chosen = wrong[q.position % len(wrong)] if rng.random() < 0.6 else rng.choice(wrong)
        correct += chosen == q.answer_index
        answers.append((attempt, pos, q, chosen))
    if pending is None:
        s.flush()
        _add_answers(s, answers, now)
    else:
        pending += answers
    if submit:
        attempt.correct_count = correct
        attempt.score = round(100.0 * correct / count, 1)
        attempt.passed = attempt.score >= doc.pass_score
        attempt.submitted_at = now - timedelta(minutes=10 - number)
    return attempt


def _add_answers(s, answers, now) -> None:
    for attempt, pos, q, chosen in answers:
        s.add(Answer(attempt_id=attempt.id, position=pos, question_id=q.id, chosen_index=chosen,
                     correct=chosen == q.answer_index, answered_at=now))


def build_scenario(db, seed: int = SEED) -> Scenario:
    """On top of the ``province`` fixture: random attempts and answers in round 1 (DP and HQ),
    members in every state, deactivated members, a member outside the audience with attempts,
    and a second round (HQ-TH only) whose attempts must not leak into round 1."""
    rng = random.Random(seed)
    now = utcnow()
    with db.session() as s:
        rnd = s.scalar(select(Round).order_by(Round.id))
        doc = rnd.document
        pool = list(s.scalars(select(Question).where(Question.document_id == doc.id, Question.current)
                              .order_by(Question.position)))
        other = open_round(s, "kh-83-hu-tuy-phuoc", ["HQ-TH"], now - timedelta(hours=2),
                           now + timedelta(days=3), 95, now)
        other_doc = s.get(Document, other.document_id)
        other_pool = list(s.scalars(select(Question).where(Question.document_id == other_doc.id)))
        members = list(s.scalars(select(Member).order_by(Member.code)))
        pending: list = []
        for m in members:
            ability = rng.uniform(0.35, 0.98)
            state = rng.choices(["none", "progress", "done1", "done2", "done3", "done_then_open"],
                                weights=[20, 12, 35, 15, 8, 10])[0]
            if state == "progress":
                _attempt(s, rng, rnd, doc, pool, m, 1, ability, False, now, pending)
            elif state.startswith("done"):
                n = {"done1": 1, "done2": 2, "done3": 3, "done_then_open": 1}[state]
                for number in range(1, n + 1):
                    _attempt(s, rng, rnd, doc, pool, m, number, ability + 0.05 * number, True, now, pending)
                if state == "done_then_open":
                    _attempt(s, rng, rnd, doc, pool, m, n + 1, ability, False, now, pending)
            if rng.random() < 0.4:
                _attempt(s, rng, other, other_doc, other_pool, m, 1, ability, rng.random() < 0.7, now, pending)
        s.flush()
        _add_answers(s, pending, now)
        # deactivated members, with and without attempts: out of numerator and denominator
        for m in rng.sample([m for m in members if m.role == "member" and m.code != "DV012"], 6):
            m.active = False
        # tie on the best score, one passed and one not (pass score changed between attempts)
        tie = next(m for m in members if m.code == "DV012")
        for a in s.scalars(select(Attempt).where(Attempt.member_id == tie.id)):
            s.delete(a)
        s.flush()
        for number, passed in ((1, False), (2, True)):
            a = _attempt(s, rng, rnd, doc, pool, tie, number, 0.8, True, now)
            a.score, a.passed = 80.0, passed
        # a member outside the audience (province level) who took the quiz anyway
        bp = s.scalar(select(Unit).where(Unit.code == "BP"))
        outsider = Member(code="NGOAI01", full_name="Người Ngoài Đối Tượng", unit_id=bp.id, role="member")
        s.add(outsider)
        s.flush()
        _attempt(s, rng, rnd, doc, pool, outsider, 1, 0.9, True, now)
        return Scenario(rnd.id, other.id, now)


# -- independent expectations from raw rows ------------------------------------------------------
class Raw:
    """Every row that matters, read with plain SELECTs; the tree from parent links only."""

    def __init__(self, s, round_id: int):
        self.round = s.get(Round, round_id)
        self.units = {u.id: u for u in s.scalars(select(Unit))}
        self.members = list(s.scalars(select(Member)))
        self.roots = set(s.scalars(select(RoundUnit.unit_id).where(RoundUnit.round_id == round_id)))
        self.attempts = list(s.scalars(select(Attempt).where(Attempt.round_id == round_id)))

    def chain(self, unit_id):
        while unit_id is not None:
            yield unit_id
            unit_id = self.units[unit_id].parent_id

    def under(self, unit_id, top) -> bool:
        return top in set(self.chain(unit_id))

    def audience(self, top) -> list[Member]:
        return [m for m in self.members
                if m.active and self.under(m.unit_id, top) and self.roots & set(self.chain(m.unit_id))]

    def expected(self, top) -> dict:
        aud = self.audience(top)
        by_member: dict[int, list[Attempt]] = {}
        for a in self.attempts:
            by_member.setdefault(a.member_id, []).append(a)
        finished = passed = progress = 0
        scores = []
        for m in aud:
            mine = by_member.get(m.id, [])
            done = [a for a in mine if a.submitted_at is not None]
            if done:
                finished += 1
                best = max(done, key=lambda a: (a.score, a.passed))
                passed += bool(best.passed)
                scores.append(best.score)
            elif mine:
                progress += 1
        target = Fraction(str(self.round.target_rate))
        need = max(0, math.ceil(target * len(aud) / 100) - finished)
        return dict(audience=len(aud), finished=finished, passed=passed, in_progress=progress,
                    not_started=len(aud) - finished - progress,
                    average_score=statistics.fmean(scores) if scores else None,
                    rate=100.0 * finished / len(aud) if aud else 0.0, needed=need)


def _check(fig, exp):
    for key, value in exp.items():
        got = getattr(fig, key)
        if isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-9), key
        else:
            assert got == value, (fig.unit_code, key)


def _unit(s, code) -> Unit:
    return s.scalar(select(Unit).where(Unit.code == code))


# -- tests ---------------------------------------------------------------------------------------
def test_every_unit_figure_matches_independent_count_from_raw_rows(province):
    sc = build_scenario(province)
    with province.session() as s:
        raw = Raw(s, sc.round_id)
        states = Counter()
        for unit in raw.units.values():
            fig = unit_figures(s, sc.round_id, unit.id, sc.now)
            exp = raw.expected(unit.id)
            _check(fig, exp)
            assert (fig.unit_id, fig.unit_code, fig.unit_name) == (unit.id, unit.code, unit.name)
            assert fig.finished + fig.in_progress + fig.not_started == fig.audience
            assert fig.status == "open" and fig.target == 98.0
            assert fig.time_left == raw.round.closes_at - sc.now
            if unit.code == "BP":
                states.update(finished=fig.finished, in_progress=fig.in_progress, not_started=fig.not_started)
        # the data really has members in every state, and the deactivated/outsider are excluded
        assert all(states[k] > 0 for k in ("finished", "in_progress", "not_started"))
        bp = unit_figures(s, sc.round_id, _unit(s, "BP").id, sc.now)
        assert bp.audience == 61 - 6  # 63 sample members, 2 at BP outside DP/HQ, 6 deactivated


def test_best_attempt_counts_and_equal_best_scores_prefer_the_passed_one(province):
    sc = build_scenario(province)
    with province.session() as s:
        branch = _unit(s, "DP-TT-02")
        fig = unit_figures(s, sc.round_id, branch.id, sc.now)
        _check(fig, Raw(s, sc.round_id).expected(branch.id))
        tie = s.scalar(select(Member).where(Member.code == "DV012"))
        scores = [a.score for a in s.scalars(select(Attempt).where(Attempt.member_id == tie.id,
                                                                   Attempt.round_id == sc.round_id))]
        assert scores == [80.0, 80.0]


def test_other_rounds_attempts_do_not_leak_into_figures(province):
    sc = build_scenario(province)
    with province.session() as s:
        hq_th = _unit(s, "HQ-TH")
        fig = unit_figures(s, sc.other_round_id, hq_th.id, sc.now)
        _check(fig, Raw(s, sc.other_round_id).expected(hq_th.id))
        assert fig.target == 95.0
        # DP is not in round 2's audience at all
        assert unit_figures(s, sc.other_round_id, _unit(s, "DP").id, sc.now).audience == 0


def test_child_figures_roll_up_subtrees_and_put_furthest_from_target_first(province):
    sc = build_scenario(province)
    with province.session() as s:
        raw = Raw(s, sc.round_id)
        for code in ("BP", "DP", "HQ", "DP-TT", "HQ-TH"):
            parent = _unit(s, code)
            rows = child_figures(s, sc.round_id, parent.id, sc.now)
            own = [f for f in rows if f.unit_id == parent.id]  # the unit's own members: a row of their own, last
            assert own == rows[-1:] or own == []
            rows = [f for f in rows if f.unit_id != parent.id]
            children = [u for u in raw.units.values() if u.parent_id == parent.id]
            expected = []
            for child in children:
                exp = raw.expected(child.id)
                if exp["audience"]:
                    expected.append((Fraction(exp["finished"], exp["audience"]), child.code, exp))
            expected.sort(key=lambda t: (t[0], t[1]))
            assert [f.unit_code for f in rows] == [code for _, code, _ in expected]
            for fig, (_, _, exp) in zip(rows, expected):
                _check(fig, exp)
            total = unit_figures(s, sc.round_id, parent.id, sc.now)
            for key in ("audience", "finished", "passed", "in_progress", "not_started"):  # the rows add up
                assert sum(getattr(f, key) for f in rows + own) == getattr(total, key), (code, key)
        # a branch has no children
        assert child_figures(s, sc.round_id, _unit(s, "DP-TT-01").id, sc.now) == []


def test_child_figures_ties_on_rate_sort_by_code_and_empty_children_are_left_out(db):
    now = utcnow()
    with db.session() as s:
        rnd = _tree(s, now, children=4, branches=1, members=2, finished=lambda c, b, m: m == 0)
        # a fifth child with no members: not in the list
        root = s.scalar(select(Unit).where(Unit.code == "R"))
        _add_unit(s, "R-EMPTY", root)
        rows = child_figures(s, rnd.id, root.id, now)
        assert [f.unit_code for f in rows] == ["R-1", "R-2", "R-3", "R-4"]
        assert all(f.rate == 50.0 and f.needed == 1 for f in rows)


def test_needed_is_exact_integer_arithmetic_where_floats_would_be_off_by_one():
    assert needed_of(98, 50, 0) == 49
    assert needed_of(98, 50, 49) == 0
    assert needed_of(98, 60, 52) == 7  # ceil(58.8) = 59
    assert needed_of(100, 7, 9) == 0
    for target in (98, 98.6, 64.4, 57.1, 99.9, 33.3, 95.5, 70.2):
        for audience in range(0, 2001, 7):
            exact = math.ceil(Fraction(str(target)) * audience / 100)
            assert needed_of(target, audience, 0) == exact, (target, audience)
    # float arithmetic says 64.4 × 250 ÷ 100 = 161.00000000000003, which would ask for 162
    assert math.ceil(64.4 * 250 / 100) == 162
    assert needed_of(64.4, 250, 0) == 161


def test_closed_round_has_no_time_left_and_status_closed(province):
    later = utcnow() + timedelta(days=20)
    with province.session() as s:
        fig = unit_figures(s, 1, _unit(s, "DP").id, later)
        assert fig.status == "closed" and fig.time_left is None


def test_not_finished_members_pages_in_unit_then_name_order_and_counts_exactly(province):
    sc = build_scenario(province)
    with province.session() as s:
        raw = Raw(s, sc.round_id)
        submitted = {a.member_id for a in raw.attempts if a.submitted_at is not None}
        opened = {a.member_id for a in raw.attempts if a.submitted_at is None}
        for code in ("BP", "HQ", "DP-TT-03"):
            top = _unit(s, code)
            expected = sorted(
                ((raw.units[m.unit_id].code, m.full_name, m.code, m.id in opened)
                 for m in raw.audience(top.id) if m.id not in submitted),
                key=lambda t: (t[0], vietnamese_name_key(t[1]), t[2]),
            )
            total, first = not_finished_members(s, sc.round_id, top.id, 0, 5)
            assert total == len(expected)
            got = list(first)
            offset = 5
            while offset < total:
                _, page = not_finished_members(s, sc.round_id, top.id, offset, 5)
                assert len(page) <= 5
                got += page
                offset += 5
            assert [(r.unit_code, r.member.full_name, r.member.code, r.in_progress) for r in got] == expected
            assert all(r.member.active for r in got)


def test_vietnamese_name_order_is_given_name_first_with_vietnamese_alphabet_and_tones():
    names = ["Vũ Thị Hằng", "Đinh Văn Sơn", "Phạm Đức", "Phạm Dũng", "Nguyễn Văn Ân", "Lê Ăn", "Trần An",
             "Lê Anh", "Lê Ánh", "Lê Ảnh", "Lê Ành", "Lê Ạnh", "Lê Ãnh", "Hoàng Ơn", "Hoàng Ôn", "Hoàng On",
             "Mai Ưng", "Mai Ung", "Lê Bình", "Trần Ân"]
    expected = ["Trần An", "Lê Anh", "Lê Ành", "Lê Ảnh", "Lê Ãnh", "Lê Ánh", "Lê Ạnh", "Lê Ăn",
                "Nguyễn Văn Ân", "Trần Ân", "Lê Bình", "Phạm Dũng", "Phạm Đức", "Vũ Thị Hằng",
                "Hoàng On", "Hoàng Ôn", "Hoàng Ơn", "Đinh Văn Sơn", "Mai Ung", "Mai Ưng"]
    assert sorted(names, key=vietnamese_name_key) == expected
    # decomposed input (NFD, as some keyboards send it) sorts like composed text
    import unicodedata
    assert vietnamese_name_key(unicodedata.normalize("NFD", "Đặng Ệ"))[:4] == vietnamese_name_key("Đặng Ệ")[:4]


def test_rounds_for_unit_lists_open_and_recently_closed_rounds_touching_the_subtree(province):
    sc = build_scenario(province)
    with province.session() as s:
        ids = lambda code, when: [r.id for r in rounds_for_unit(s, _unit(s, code).id, when)]  # noqa: E731
        assert ids("HQ-TH-02", sc.now) == [sc.other_round_id, sc.round_id]  # both open, nearest deadline first
        assert ids("DP-TT-01", sc.now) == [sc.round_id]
        assert ids("BP", sc.now) == [sc.other_round_id, sc.round_id]  # audience below the province
        assert ids("HQ", sc.now) == [sc.other_round_id, sc.round_id]
        # round 2 closed 4 days after now; round 1 after 14 days
        assert ids("HQ-TH", sc.now + timedelta(days=5)) == [sc.round_id, sc.other_round_id]
        assert ids("HQ-TH", sc.now + timedelta(days=20)) == [sc.round_id, sc.other_round_id]
        assert ids("HQ-TH", sc.now + timedelta(days=40)) == [sc.round_id]  # round 2 closed 37 days ago
        assert ids("HQ-TH", sc.now + timedelta(days=50)) == []
        # closed early by hand: closed_at counts, not closes_at
        s.get(Round, sc.round_id).closed_at = sc.now + timedelta(days=1)
        s.flush()
        assert ids("DP", sc.now + timedelta(days=2)) == [sc.round_id]
        assert ids("DP", sc.now + timedelta(days=32)) == []
        assert rounds_for_unit(s, _unit(s, "DP").id, sc.now)[0].document.code == "64-KH/TU"


def test_question_stats_match_counts_and_moodle_formulas_from_raw_answers(province):
    sc = build_scenario(province)
    with province.session() as s:
        stats = question_stats(s, sc.round_id)
        attempts = {a.id: a for a in s.scalars(select(Attempt).where(Attempt.round_id == sc.round_id))}
        answers = [a for a in s.scalars(select(Answer)) if a.attempt_id in attempts]
        drawn = [aq for aq in s.scalars(select(AttemptQuestion)) if aq.attempt_id in attempts]
        questions = {q.id: q for q in s.scalars(select(Question))}
    assert [q.question_id for q in stats] == sorted({aq.question_id for aq in drawn},
                                                    key=lambda i: (questions[i].position, i))
    for st in stats:
        q = questions[st.question_id]
        mine = [a for a in answers if a.question_id == q.id]
        assert st.position == q.position and st.text == q.text
        assert st.seen == sum(aq.question_id == q.id for aq in drawn)
        assert st.answered == len(mine)
        assert st.correct == sum(a.correct for a in mine)
        assert st.share_correct == pytest.approx(100.0 * st.correct / len(mine))
        wrong = Counter(a.chosen_index for a in mine if not a.correct)
        if wrong:
            top = max(wrong.values())
            assert st.wrong_count == top
            assert st.wrong_letter == "ABCDEF"[min(i for i, n in wrong.items() if n == top)]
            assert st.wrong_letter != "ABCDEF"[q.answer_index]
        # first attempts only, submitted
        firsts = [(attempts[a.attempt_id], a) for a in mine
                  if attempts[a.attempt_id].number == 1 and attempts[a.attempt_id].submitted_at is not None]
        xs = [int(a.correct) for _, a in firsts]
        ys = [att.correct_count - int(a.correct) for att, a in firsts]
        assert st.first_attempts == len(firsts)
        assert st.facility == pytest.approx(100.0 * statistics.fmean(xs))
        if len(xs) > 1 and len(set(xs)) > 1 and len(set(ys)) > 1:
            r = statistics.correlation(xs, ys)
            assert st.discrimination == pytest.approx(100.0 * r)
        else:
            assert st.discrimination is None
        k = max(1, math.floor(0.27 * len(firsts) + 0.5))
        upper = _kelley_group(firsts, k, top=True)
        lower = _kelley_group(firsts, k, top=False)
        assert st.upper_lower == pytest.approx(100.0 * (upper - lower))


def _kelley_group(firsts, k, *, top: bool) -> float:
    """Share right in the top (or bottom) k attempts; attempts tied at the edge share the places."""
    scores = sorted({att.score for att, _ in firsts}, reverse=top)
    right, left = 0.0, k
    for score in scores:
        tied = [a for att, a in firsts if att.score == score]
        take = min(left, len(tied))
        right += sum(a.correct for a in tied) * take / len(tied)
        left -= take
        if left == 0:
            break
    return right / k


def test_question_stats_for_a_unit_only_count_that_subtrees_attempts(province):
    sc = build_scenario(province)
    with province.session() as s:
        dp = _unit(s, "DP")
        raw = Raw(s, sc.round_id)
        inside = {m.id for m in raw.members if raw.under(m.unit_id, dp.id)}
        ids = {a.id for a in raw.attempts if a.member_id in inside}
        answers = [a for a in s.scalars(select(Answer)) if a.attempt_id in ids]
        stats = question_stats(s, sc.round_id, dp.id)
        assert sum(q.answered for q in stats) == len(answers)
        assert sum(q.correct for q in stats) == sum(a.correct for a in answers)


# -- constant number of statements ---------------------------------------------------------------
def _add_unit(s, code, parent: Unit | None) -> Unit:
    unit = Unit(code=code, name=f"Đơn vị {code}", parent_id=parent.id if parent else None)
    s.add(unit)
    s.flush()
    s.add(UnitAncestor(ancestor_id=unit.id, descendant_id=unit.id, depth=0))
    if parent is not None:
        for anc, depth in s.execute(select(UnitAncestor.ancestor_id, UnitAncestor.depth)
                                    .where(UnitAncestor.descendant_id == parent.id)).all():
            s.add(UnitAncestor(ancestor_id=anc, descendant_id=unit.id, depth=depth + 1))
    s.flush()
    return unit


def _tree(s, now, *, children: int, branches: int, members: int, finished) -> Round:
    """Root R → children R-i → branches R-i-j, ``members`` per branch; a round for R."""
    doc = Document(id="d", code="D", title="D", kind="nghi-quyet", summary="S", key_points=[],
                   pass_score=80, max_attempts=3, shuffle_options=False, loaded_at=now)
    s.add(doc)
    root = _add_unit(s, "R", None)
    rnd = Round(document_id="d", opens_at=now - timedelta(hours=1), closes_at=now + timedelta(days=1),
                target_rate=98.0, created_at=now)
    rnd.units = [RoundUnit(unit_id=root.id)]
    s.add(rnd)
    s.flush()
    for c in range(1, children + 1):
        child = _add_unit(s, f"R-{c}", root)
        for b in range(1, branches + 1):
            branch = _add_unit(s, f"R-{c}-{b}", child)
            for k in range(members):
                m = Member(code=f"M-{c}-{b}-{k}", full_name=f"Đảng viên {c} {b} {k}", unit_id=branch.id)
                s.add(m)
                s.flush()
                if finished(c, b, k):
                    s.add(Attempt(round_id=rnd.id, member_id=m.id, number=1, started_at=now, submitted_at=now,
                                  correct_count=1, question_count=1, score=100.0, passed=True))
    s.flush()
    return rnd


def test_statement_counts_do_not_grow_when_units_and_members_double(db):
    """child_figures, unit_figures, unit_rollup, not_finished_members and question_stats each run the
    same number of SQL statements on a tree of 6 branches and on one of 24 (4× the members)."""
    now = utcnow()
    counts = []
    for size in (1, 2):
        with db.session() as s:
            for table in ("attempts", "round_units", "rounds", "documents", "members", "unit_ancestors", "units"):
                s.execute(Unit.metadata.tables[table].delete())
            rnd = _tree(s, now, children=3 * size, branches=2 * size, members=2,
                        finished=lambda c, b, k: (c + b + k) % 3 == 0)
            root_id = s.scalar(select(Unit.id).where(Unit.code == "R"))
            round_id = rnd.id
        per_call = {}
        calls = {
            "child_figures": lambda s: child_figures(s, round_id, root_id, now),
            "unit_figures": lambda s: unit_figures(s, round_id, root_id, now),
            "unit_rollup": lambda s: unit_rollup(s, round_id, root_id, now),
            "not_finished_members": lambda s: not_finished_members(s, round_id, root_id, 0, 5),
            "not_finished_members(all)": lambda s: not_finished_members(s, round_id, root_id, 0, None),
            "question_stats": lambda s: question_stats(s, round_id),
        }
        for name, call in calls.items():
            statements = []

            def count(conn, cursor, statement, *args):
                if not statement.startswith("BEGIN"):  # SQLite's explicit transaction start
                    statements.append(statement)

            with db.session() as s:
                event.listen(db.engine, "before_cursor_execute", count)
                try:
                    result = call(s)
                finally:
                    event.remove(db.engine, "before_cursor_execute", count)
            per_call[name] = len(statements)
            if name == "child_figures":
                assert len(result) == 3 * size
            if name == "unit_figures":
                assert result.audience == 3 * size * 2 * size * 2
        counts.append(per_call)
    assert counts[0] == counts[1]
    assert counts[0]["child_figures"] <= 3 and counts[0]["unit_figures"] <= 3
    assert counts[0]["not_finished_members"] <= 2 and counts[0]["question_stats"] <= 4


def test_unit_rollup_is_unit_figures_and_child_figures_in_one_go(province):
    sc = build_scenario(province)
    with province.session() as s:
        for code in ("BP", "HQ-TH", "DP-TT-01"):
            unit = _unit(s, code)
            total, children = unit_rollup(s, sc.round_id, unit.id, sc.now)
            assert total == unit_figures(s, sc.round_id, unit.id, sc.now)
            assert children == child_figures(s, sc.round_id, unit.id, sc.now)


def test_not_finished_members_past_the_end_and_without_limit(province):
    sc = build_scenario(province)
    with province.session() as s:
        bp = _unit(s, "BP").id
        total, everyone = not_finished_members(s, sc.round_id, bp, 0, None)
        assert len(everyone) == total > 0
        assert not_finished_members(s, sc.round_id, bp, total, 10) == (total, [])
        assert not_finished_members(s, sc.round_id, bp, total + 50, 10) == (total, [])
        _, tail = not_finished_members(s, sc.round_id, bp, total - 3, 10)
        assert [r.member.id for r in tail] == [r.member.id for r in everyone[-3:]]


def _all_units_match(db, sc) -> None:
    with db.read_session() as s:
        raw = Raw(s, sc.round_id)
        for unit in raw.units.values():
            _check(unit_figures(s, sc.round_id, unit.id, sc.now), raw.expected(unit.id))


def test_figures_follow_attempts_changed_or_removed_by_hand_in_the_database(province):
    """The figures read a summary the database keeps from the attempts (``round_results``): an
    operator's SQL fix, a deleted attempt or a submission undone shows in them at once."""
    sc = build_scenario(province)
    with province.session() as s:
        finished = s.execute(select(Attempt.member_id, Attempt.id).where(
            Attempt.round_id == sc.round_id, Attempt.submitted_at.is_not(None)).order_by(Attempt.id)).all()
        first, second, third = finished[0], finished[5], finished[9]
        s.execute(text("UPDATE attempts SET score = 10.0, passed = :no WHERE id = :id"),
                  {"no": False, "id": first.id})
        s.execute(text("DELETE FROM answers WHERE attempt_id IN (SELECT id FROM attempts WHERE member_id = :m)"),
                  {"m": second.member_id})
        s.execute(text("DELETE FROM attempt_questions WHERE attempt_id IN "
                       "(SELECT id FROM attempts WHERE member_id = :m)"), {"m": second.member_id})
        s.execute(text("DELETE FROM attempts WHERE member_id = :m"), {"m": second.member_id})
        s.execute(text("UPDATE attempts SET submitted_at = NULL, score = NULL, passed = NULL WHERE id = :id"),
                  {"id": third.id})
    with province.read_session() as s:
        gone = s.scalar(select(Member).where(Member.id == second.member_id))
        mine = s.execute(select(RoundResult).where(RoundResult.member_id == gone.id)).all()
    assert mine == []  # no attempts left, no summary left
    _all_units_match(province, sc)


def test_a_database_upgraded_with_attempts_in_it_gets_their_figures(province):
    """Migration 0013 fills ``round_results`` from the attempts already there (downgraded and upgraded
    again here, as an existing province's database is upgraded)."""
    from alembic import command

    from bot.storage.db import alembic_config

    sc = build_scenario(province)
    with province.engine.begin() as conn:
        cfg = alembic_config(province.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012_members_covering_index")
        assert "round_results" not in inspect(conn).get_table_names()
    province.upgrade()
    _all_units_match(province, sc)


@pytest.mark.postgres
def test_one_members_attempts_written_by_two_transactions_at_once_are_all_counted(province):
    """A member starts an attempt on one device while another device submits the previous one: the
    second transaction's summary waits for the first and counts its attempt too (PostgreSQL)."""
    import threading

    from sqlalchemy import update as update_

    sc = build_scenario(province)
    with province.session() as s:
        member_id, attempt_id, number = s.execute(
            select(Attempt.member_id, Attempt.id, Attempt.number).where(
                Attempt.round_id == sc.round_id, Attempt.submitted_at.is_(None),
                Attempt.member_id.in_(select(Member.id).where(Member.active))).order_by(Attempt.id)).first()
    started = threading.Event()

    def start_another() -> None:
        with province.session() as s:
            s.add(Attempt(round_id=sc.round_id, member_id=member_id, number=number + 1,
                          started_at=sc.now, question_count=10))
            s.flush()  # the summary row is now locked by this transaction
            started.set()
            threading.Event().wait(0.5)  # the other transaction writes meanwhile

    other = threading.Thread(target=start_another)
    other.start()
    started.wait(10)
    with province.session() as s:  # waits for the row, then counts what the first committed
        s.execute(update_(Attempt).where(Attempt.id == attempt_id).values(
            submitted_at=sc.now, score=90.0, passed=True, correct_count=9))
    other.join()
    with province.read_session() as s:
        result = s.get(RoundResult, (sc.round_id, member_id))
        counted = (result.attempts, result.submitted, result.best_score, result.best_passed)
        mine = s.execute(select(Attempt.id, Attempt.submitted_at, Attempt.score, Attempt.passed).where(
            Attempt.round_id == sc.round_id, Attempt.member_id == member_id)).all()
    done = [a for a in mine if a.submitted_at is not None]
    best = max(done, key=lambda a: (a.score, a.passed))
    assert len(mine) == number + 1 and attempt_id in {a.id for a in done}  # both writes landed
    assert counted == (len(mine), len(done), best.score, best.passed)
    _all_units_match(province, sc)


@pytest.mark.postgres
def test_attempts_emptied_with_truncate_leave_no_figures_behind(province):
    sc = build_scenario(province)
    with province.session() as s:
        s.execute(text("TRUNCATE attempts CASCADE"))
    with province.read_session() as s:
        assert s.scalar(select(func.count()).select_from(RoundResult)) == 0
    _all_units_match(province, sc)
