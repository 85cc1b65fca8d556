"""Participation roll-up of a whole province: how long the secretary's and cadre's figures take.

Generates a province of ``--members`` members (default 100,000) in branches of ~50
(province → ~10 districts → ~200 communes → ~2,000 branches), one round for the whole province,
attempts for ~90% of the members and ``--answers`` answers (default 10 per member: 1,000,000),
then times, in fresh sessions (median of ``--repeat`` runs):

- a baseline: ``SELECT count(*) FROM members`` (what a bare scan of the roster costs here);
- the province roll-up: ``unit_figures`` at the root plus ``child_figures`` (one line per district);
- one district's children, one branch's ``unit_figures``;
- a ``not_finished_members`` page for the province and for a branch;
- ``question_stats`` for the province (report only, not interactive).

    python -m bench.stats_rollup [--members 100000] [--database-url postgresql+psycopg://...] [--wall-clock ...]

SQLite by default (a new file in a temporary folder, deleted afterwards unless ``--keep``).
A PostgreSQL database given with ``--database-url`` must be empty of hoctap data, or pass
``--reset`` to empty it first (it drops every hoctap table there).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, inspect, select, text, update

from bench.clock import add_wall_clock_option, describe_pinned, pinned_clock, wall_clock
from bot.services.stats import (
    child_figures, not_finished_members, question_stats, rounds_for_unit, unit_figures, unit_rollup,
)
from bot.storage.db import Database
from bot.storage.models import Base, Member

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ",
          "Ngô", "Dương", "Lý", "Điểu", "Thị"]
MIDDLE = ["Văn", "Thị", "Ngọc", "Hồng", "Minh", "Thanh", "Đức", "Quốc", "Mỹ", "Công"]
GIVEN = ["An", "Bình", "Cường", "Dũng", "Đức", "Giang", "Hằng", "Hùng", "Khánh", "Linh", "Mai", "Nam", "Oanh",
         "Phúc", "Quyên", "Sơn", "Tâm", "Thủy", "Tuấn", "Tuyết", "Uyên", "Vinh", "Xuân", "Yến"]
QUESTIONS = 20
PER_ATTEMPT = 10
OPTIONS = 4


# -- data set ------------------------------------------------------------------------------------
class Bulk:
    """Fast bulk inserts: executemany of plain tuples on SQLite, COPY on PostgreSQL.

    Values are given as Python values; datetimes must be naive UTC (the schema's storage form).
    """

    def __init__(self, conn):
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"

    def __call__(self, table: str, columns: list[str], rows) -> int:
        rows = list(rows)
        if not rows:
            return 0
        if self.pg:
            raw = self.conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            converted = [tuple(_sqlite(v) for v in row) for row in rows]
            self.conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", converted)
        return len(rows)


def _sqlite(value):
    if hasattr(value, "isoformat") and hasattr(value, "hour"):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DateTime storage format
    if isinstance(value, bool):
        return int(value)
    return value


def generate(db: Database, members: int, answers: int, seed: int) -> dict:
    """Fill an empty, migrated database. Returns what was made (ids and counts)."""
    rng = random.Random(seed)
    now = pinned_clock()().replace(microsecond=0)  # the figures' time left does not depend on the hour
    naive_now = now.replace(tzinfo=None)
    branches = max(1, round(members / 50))
    communes = max(1, round(branches / 10))
    districts = max(1, round(communes / 20))
    units, closure = [], []
    uid = 1
    units.append((uid, "TINH", "Đảng bộ tỉnh Bình Phước", None))
    closure.append((uid, uid, 0))
    root = uid
    district_ids, commune_ids, branch_ids = [], [], []
    for d in range(districts):
        uid += 1
        units.append((uid, f"H{d + 1:02}", f"Đảng bộ huyện số {d + 1}", root))
        closure += [(uid, uid, 0), (root, uid, 1)]
        district_ids.append(uid)
    for c in range(communes):
        uid += 1
        parent = district_ids[c % districts]
        units.append((uid, f"H{parent - 1:02}-X{c + 1:03}", f"Đảng bộ xã số {c + 1}", parent))
        closure += [(uid, uid, 0), (parent, uid, 1), (root, uid, 2)]
        commune_ids.append((uid, parent))
    for b in range(branches):
        uid += 1
        commune, district = commune_ids[b % communes]
        units.append((uid, f"H{district - 1:02}-X{commune - 1 - districts:03}-CB{b + 1:04}",
                      f"Chi bộ số {b + 1}", commune))
        closure += [(uid, uid, 0), (commune, uid, 1), (district, uid, 2), (root, uid, 3)]
        branch_ids.append(uid)

    member_rows = []
    for i in range(1, members + 1):
        name = f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
        role = "secretary" if i % 50 == 1 else "member"
        member_rows.append((i, f"DV{i:06}", name, branch_ids[(i - 1) % branches], f"+849{i:08}", role,
                            rng.random() > 0.02))

    question_rows = []
    for q in range(1, QUESTIONS + 1):
        opts = [f"Phương án {k + 1} của câu {q}" for k in range(OPTIONS)]
        question_rows.append((q, "bench-doc", q, f"Câu hỏi số {q}?", json.dumps(opts, ensure_ascii=False),
                              q % OPTIONS, None, f"h{q}", True, naive_now))

    # attempts: ~85% finish (some twice or three times), ~5% in progress, ~10% not started
    attempt_rows, aq_rows, answer_rows = [], [], []
    plans = []
    for m in range(1, members + 1):
        r = rng.random()
        ability = rng.uniform(0.4, 0.98)
        if r < 0.85:
            plans.append([m, ability, 1, True])
        elif r < 0.90:
            plans.append([m, ability, 1, False])
    planned = sum(PER_ATTEMPT if done else PER_ATTEMPT // 2 for _, _, _, done in plans)
    finished = [p for p in plans if p[3]]
    while planned < answers and finished:
        p = rng.choice(finished)
        if p[2] < 3:
            p[2] += 1
            planned += PER_ATTEMPT
    aid = 0
    started = naive_now - timedelta(days=2)
    for member_id, ability, count, done in plans:
        for number in range(1, count + 1):
            aid += 1
            drawn = rng.sample(range(1, QUESTIONS + 1), PER_ATTEMPT)
            n_answers = PER_ATTEMPT if done else PER_ATTEMPT // 2
            correct = 0
            for pos, q in enumerate(drawn, start=1):
                order = list(range(OPTIONS))
                rng.shuffle(order)
                aq_rows.append((aid, pos, q, json.dumps(order)))
                if pos <= n_answers:
                    right = q % OPTIONS
                    ok = rng.random() < ability - 0.015 * q
                    chosen = right if ok else (right + 1 + (q + pos) % 3 if rng.random() < 0.5
                                               else right + 1 + rng.randrange(3)) % OPTIONS
                    correct += chosen == right
                    answer_rows.append((len(answer_rows) + 1, aid, pos, q, chosen, chosen == right, started))
            if done:
                score = round(100.0 * correct / PER_ATTEMPT, 1)
                attempt_rows.append((aid, 1, member_id, number, started, started + timedelta(minutes=8), correct,
                                     PER_ATTEMPT, score, score >= 80))
            else:
                attempt_rows.append((aid, 1, member_id, number, started, None, None, PER_ATTEMPT, None, None))

    with db.engine.begin() as conn:
        bulk = Bulk(conn)
        bulk("units", ["id", "code", "name", "parent_id"], units)
        bulk("unit_ancestors", ["ancestor_id", "descendant_id", "depth"], closure)
        bulk("members", ["id", "code", "full_name", "unit_id", "phone", "role", "active"], member_rows)
        bulk("documents", ["id", "code", "title", "kind", "summary", "key_points", "questions_per_attempt",
                           "pass_score", "max_attempts", "shuffle_options", "loaded_at"],
             [("bench-doc", "99-NQ/TU", "Nghị quyết thử nghiệm hiệu năng", "nghi-quyet", "Tóm tắt.", "[]",
               PER_ATTEMPT, 80, 3, True, naive_now)])
        bulk("questions", ["id", "document_id", "position", "text", "options", "answer_index", "explanation",
                           "content_hash", "current", "created_at"], question_rows)
        bulk("rounds", ["id", "document_id", "opens_at", "closes_at", "target_rate", "closed_at", "created_at"],
             [(1, "bench-doc", naive_now - timedelta(days=7), naive_now + timedelta(days=7), 98.0, None, naive_now)])
        bulk("round_units", ["round_id", "unit_id"], [(1, root)])
        bulk("attempts", ["id", "round_id", "member_id", "number", "started_at", "submitted_at", "correct_count",
                          "question_count", "score", "passed"], attempt_rows)
        bulk("attempt_questions", ["attempt_id", "position", "question_id", "option_order"], aq_rows)
        bulk("answers", ["id", "attempt_id", "position", "question_id", "chosen_index", "correct", "answered_at"],
             answer_rows)
        if conn.dialect.name == "postgresql":
            for table, column in (("units", "id"), ("members", "id"), ("questions", "id"), ("rounds", "id"),
                                  ("attempts", "id"), ("answers", "id")):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                                     f"(SELECT max({column}) FROM {table}))")
    return dict(now=now, root=root, district=district_ids[0], branch=branch_ids[0], units=len(units),
                branches=branches, communes=communes, districts=districts, members=members,
                attempts=len(attempt_rows), answers=len(answer_rows), attempt_questions=len(aq_rows))


# -- timing --------------------------------------------------------------------------------------
def timed(db: Database, repeat: int, fn) -> tuple[float, object]:
    """Median wall time in ms of ``fn(session)`` over ``repeat`` fresh read-only sessions (as the
    figures are asked for), and its last result."""
    times, result = [], None
    for _ in range(repeat):
        with db.read_session() as s:
            t0 = time.perf_counter()
            result = fn(s)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def write_during_rollup(db: Database, rollup, member_id: int, read_only: bool, repeat: int = 5) -> float:
    """Median ms an answer-sized write transaction waits when it starts 10 ms into a province
    roll-up run in a read-only session (``read_only``) or in an ordinary (write) session."""
    waits = []
    for _ in range(repeat):
        started = threading.Event()

        def roll():
            with (db.read_session() if read_only else db.session()) as s:
                s.execute(select(1)).all()  # the transaction has begun (BEGIN IMMEDIATE: the write lock)
                started.set()
                rollup(s)

        reader = threading.Thread(target=roll)
        reader.start()
        started.wait()
        time.sleep(0.01)
        t0 = time.perf_counter()
        with db.session() as s:
            s.execute(update(Member).where(Member.id == member_id).values(active=True))
        waits.append((time.perf_counter() - t0) * 1000)
        reader.join()
    return statistics.median(waits)


def _prepare(db: Database, reset: bool) -> None:
    if db.engine.dialect.name == "postgresql":
        tables = set(inspect(db.engine).get_table_names())
        if "members" in tables:
            with db.engine.connect() as conn:
                has_rows = conn.execute(text("SELECT EXISTS (SELECT 1 FROM members)")).scalar()
            if has_rows and not reset:
                sys.exit("error: that database already holds members; use an empty database or pass --reset")
        if reset:
            Base.metadata.drop_all(db.engine)
            with db.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    db.upgrade()


def _analyze(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stats_rollup", description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--answers", type=int, default=None, help="default: 10 per member")
    ap.add_argument("--database-url", default=None, help="default: a new SQLite file in a temporary folder")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--seed", type=int, default=64)
    ap.add_argument("--analyze", action="store_true", help="run ANALYZE after loading (planner statistics)")
    ap.add_argument("--reset", action="store_true", help="PostgreSQL: drop the hoctap tables there first")
    ap.add_argument("--keep", action="store_true", help="SQLite: keep the database file")
    add_wall_clock_option(ap)
    args = ap.parse_args(argv)
    with wall_clock(args.wall_clock):
        return run(args)


def run(args: argparse.Namespace) -> int:
    answers = args.answers if args.answers is not None else 10 * args.members

    tmp = None
    url = args.database_url
    if url is None:
        tmp = Path(tempfile.mkdtemp(prefix="hoctap-bench-"))
        url = f"sqlite:///{tmp / 'bench.db'}"
    db = Database(url)
    print(f"database: {db.engine.dialect.name} ({db.engine.url.render_as_string(hide_password=True)})")
    print(describe_pinned(quiet=None))
    _prepare(db, args.reset)
    t0 = time.perf_counter()
    info = generate(db, args.members, answers, args.seed)
    gen_s = time.perf_counter() - t0
    if args.analyze or db.engine.dialect.name == "postgresql":
        _analyze(db)  # PostgreSQL autovacuum would do it soon anyway; SQLite only when asked
    print(f"generated in {gen_s:.1f} s: {info['units']} units ({info['districts']} districts, {info['communes']} "
          f"communes, {info['branches']} branches), {info['members']} members, {info['attempts']} attempts, "
          f"{info['answers']} answers, {info['attempt_questions']} drawn questions"
          + (" [ANALYZE run]" if args.analyze or db.engine.dialect.name == "postgresql" else ""))

    now, root, district, branch = info["now"], info["root"], info["district"], info["branch"]

    cases = [
        ("baseline: SELECT count(*) FROM members", lambda s: s.scalar(select(func.count()).select_from(Member))),
        ("baseline: active members per unit (GROUP BY scan)",
         lambda s: s.execute(select(Member.unit_id, func.count()).where(Member.active).group_by(Member.unit_id)).all()),
        ("province roll-up: unit_rollup (figures + children)", lambda s: unit_rollup(s, 1, root, now)),
        ("  unit_figures(province) alone", lambda s: unit_figures(s, 1, root, now)),
        ("  child_figures(province) alone", lambda s: child_figures(s, 1, root, now)),
        ("child_figures(one district)", lambda s: child_figures(s, 1, district, now)),
        ("unit_figures(one branch)", lambda s: unit_figures(s, 1, branch, now)),
        ("rounds_for_unit(one branch)", lambda s: rounds_for_unit(s, branch, now)),
        ("not_finished_members(province, page 1 of 20)", lambda s: not_finished_members(s, 1, root, 0, 20)),
        ("not_finished_members(branch, page 1 of 20)", lambda s: not_finished_members(s, 1, branch, 0, 20)),
        ("question_stats(round) [report only]", lambda s: question_stats(s, 1)),
    ]
    results = {}
    print(f"\n{'timing (median of ' + str(args.repeat) + ', fresh session each)':<52} {'ms':>10}")
    for label, fn in cases:
        ms, result = timed(db, args.repeat, fn)
        results[label] = result
        print(f"{label:<52} {ms:>10.1f}")

    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as conn:
            member_id = conn.execute(select(func.min(Member.id))).scalar()
        rollup = lambda s: unit_rollup(s, 1, root, now)  # noqa: E731
        print(f"\n{'a write while the province roll-up runs (median of 5)':<52} {'ms waited':>10}")
        print(f"{'  roll-up in a write session (BEGIN IMMEDIATE)':<52} "
              f"{write_during_rollup(db, rollup, member_id, read_only=False):>10.1f}")
        print(f"{'  roll-up in db.read_session() (deferred BEGIN)':<52} "
              f"{write_during_rollup(db, rollup, member_id, read_only=True):>10.1f}")

    top, children = results["province roll-up: unit_rollup (figures + children)"]
    print(f"\n{'unit':<12} {'audience':>9} {'finished':>9} {'rate %':>7} {'passed':>7} {'avg':>6} {'in prog':>8} "
          f"{'not st.':>8} {'needed':>7}")
    for f in [top, *children]:
        print(f"{f.unit_code:<12} {f.audience:>9} {f.finished:>9} {f.rate:>7.2f} {f.passed:>7} "
              f"{f.average_score or 0:>6.1f} {f.in_progress:>8} {f.not_started:>8} {f.needed:>7}")
    b = results["unit_figures(one branch)"]
    print(f"{'branch ' + b.unit_code:<12} {b.audience:>9} {b.finished:>9} {b.rate:>7.2f} {b.passed:>7} "
          f"{b.average_score or 0:>6.1f} {b.in_progress:>8} {b.not_started:>8} {b.needed:>7}")
    total, _ = results["not_finished_members(province, page 1 of 20)"]
    print(f"not finished in the province: {total}")

    db.dispose()
    if tmp is not None:
        if args.keep:
            print(f"kept {tmp / 'bench.db'}")
        else:
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
