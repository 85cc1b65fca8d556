"""round_results: one row per member and round, kept by triggers on ``attempts``

A province's figures grouped every member's attempts (100,000 groups on SQLite, two thirds of the
roll-up's time); they now read one row per member. The rows are written by the database itself, on
every insert, update and delete of an attempt, so no code path can leave them behind. Each trigger
counts the member's attempts of that round again (a handful of index entries): the row is always what
the attempts say, whatever order writes come in. On PostgreSQL the row is locked first, so a second
transaction writing the same member's attempts waits, then counts what the first committed; and the
upgrade locks ``attempts`` against writes until it commits, so that nothing written by processes still
running the old version falls between the backfill and the trigger.

For hand-written fixes on PostgreSQL: a transaction that changes several members' attempts in more than
one statement locks their summary rows as it goes, and can deadlock with a member submitting meanwhile
(PostgreSQL then aborts one of the two). Change one member per transaction, or stop the bots.

A later migration that recreates ``attempts`` (Alembic's batch mode on SQLite does) drops its triggers:
it must create them again (``tests/test_schema.py`` checks they are there).

Revision ID: 0013_round_results
Revises: 0012_members_covering_index
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_round_results"
down_revision = "0012_members_covering_index"
branch_labels = None
depends_on = None

# what a member's attempts of a round come to: attempts, submitted ones, the best submitted score, and
# whether an attempt with that score passed
_BEST = "max(CASE WHEN submitted_at IS NOT NULL THEN score END)"
_BEST_PASSED = f"max(CASE WHEN submitted_at IS NOT NULL AND passed THEN score END) = {_BEST}"
_SUMMARY = f"count(*), count(submitted_at), {_BEST}, {_BEST_PASSED}"
_COLUMNS = "round_id, member_id, attempts, submitted, best_score, best_passed"


def _sqlite_recount(row: str) -> str:
    """Statements of a SQLite trigger body that count ``row``'s (NEW or OLD) member and round again."""
    return f"""
    DELETE FROM round_results WHERE round_id = {row}.round_id AND member_id = {row}.member_id;
    INSERT INTO round_results ({_COLUMNS})
    SELECT round_id, member_id, {_SUMMARY}
    FROM attempts WHERE round_id = {row}.round_id AND member_id = {row}.member_id
    GROUP BY round_id, member_id;"""


_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER tr_attempts_inserted_round_results AFTER INSERT ON attempts BEGIN {_sqlite_recount('NEW')} END",
    f"""CREATE TRIGGER tr_attempts_updated_round_results
    AFTER UPDATE OF round_id, member_id, submitted_at, score, passed ON attempts
    BEGIN {_sqlite_recount('OLD')} {_sqlite_recount('NEW')} END""",
    f"CREATE TRIGGER tr_attempts_deleted_round_results AFTER DELETE ON attempts BEGIN {_sqlite_recount('OLD')} END",
]

_POSTGRESQL = [
    # ``SET search_path FROM CURRENT``: the tables are found in the schema they were created in, also when
    # pg_restore (which empties the search path) loads rows into an upgraded database
    f"""CREATE OR REPLACE FUNCTION hoctap_recount_round_result(r integer, m integer) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        -- the row lock first: a concurrent writer of this member's attempts holds it until it commits,
        -- and the next statement (a fresh snapshot, READ COMMITTED) then counts what it wrote
        INSERT INTO round_results (round_id, member_id, attempts, submitted) VALUES (r, m, 0, 0)
            ON CONFLICT (round_id, member_id) DO UPDATE SET attempts = round_results.attempts;
        UPDATE round_results AS rr
           SET attempts = s.n, submitted = s.n_submitted, best_score = s.best, best_passed = s.best_passed
          FROM (SELECT count(*) AS n, count(submitted_at) AS n_submitted, {_BEST} AS best,
                       {_BEST_PASSED} AS best_passed
                  FROM attempts WHERE round_id = r AND member_id = m) AS s
         WHERE rr.round_id = r AND rr.member_id = m;
        DELETE FROM round_results WHERE round_id = r AND member_id = m AND attempts = 0;
    END $$""",
    """CREATE OR REPLACE FUNCTION hoctap_attempts_changed() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            PERFORM hoctap_recount_round_result(OLD.round_id, OLD.member_id);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            PERFORM hoctap_recount_round_result(NEW.round_id, NEW.member_id);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER tr_attempts_round_results
    AFTER INSERT OR DELETE OR UPDATE OF round_id, member_id, submitted_at, score, passed ON attempts
    FOR EACH ROW EXECUTE FUNCTION hoctap_attempts_changed()""",
    """CREATE OR REPLACE FUNCTION hoctap_attempts_truncated() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        DELETE FROM round_results;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER tr_attempts_truncated_round_results AFTER TRUNCATE ON attempts
    FOR EACH STATEMENT EXECUTE FUNCTION hoctap_attempts_truncated()""",
]
TRIGGERS = {  # what tests/test_schema.py expects to find after an upgrade
    "sqlite": {"tr_attempts_inserted_round_results", "tr_attempts_updated_round_results",
               "tr_attempts_deleted_round_results"},
    "postgresql": {"tr_attempts_round_results", "tr_attempts_truncated_round_results"},
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:  # writes of processes still on the old version wait until the triggers are in place
        op.execute("LOCK TABLE attempts IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "round_results",
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("submitted", sa.Integer(), nullable=False),
        sa.Column("best_score", sa.Float(), nullable=True),
        sa.Column("best_passed", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_round_results_member_id_members")),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"], name=op.f("fk_round_results_round_id_rounds")),
        sa.PrimaryKeyConstraint("round_id", "member_id", name=op.f("pk_round_results")),
        sqlite_with_rowid=False,
    )
    op.execute(f"INSERT INTO round_results ({_COLUMNS}) SELECT round_id, member_id, {_SUMMARY} "
               "FROM attempts GROUP BY round_id, member_id")
    for statement in _POSTGRESQL if postgres else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tr_attempts_round_results ON attempts")
        op.execute("DROP TRIGGER IF EXISTS tr_attempts_truncated_round_results ON attempts")
        op.execute("DROP FUNCTION IF EXISTS hoctap_attempts_changed()")
        op.execute("DROP FUNCTION IF EXISTS hoctap_attempts_truncated()")
        op.execute("DROP FUNCTION IF EXISTS hoctap_recount_round_result(integer, integer)")
    else:
        for name in ("inserted", "updated", "deleted"):
            op.execute(f"DROP TRIGGER IF EXISTS tr_attempts_{name}_round_results")
    op.drop_table("round_results")
