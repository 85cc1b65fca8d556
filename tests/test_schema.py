"""The schema Alembic builds is the schema the models describe."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bot.storage.models import Base


def test_migrations_build_exactly_the_models(db):
    db.upgrade()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_twice_is_harmless(db):
    db.upgrade()
    db.upgrade()


def _round_results_migration():
    import importlib.util

    from bot.storage.db import MIGRATIONS

    spec = importlib.util.spec_from_file_location("m0013", MIGRATIONS / "versions" / "0013_round_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_triggers_that_keep_round_results_are_in_place_after_an_upgrade(db):
    """The figures read ``round_results``, which only triggers on ``attempts`` write: a migration that
    recreated ``attempts`` without them would leave every figure behind, silently."""
    db.upgrade()
    dialect = db.engine.dialect.name
    query = ("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'attempts'" if dialect == "sqlite"
             else "SELECT tgname FROM pg_trigger WHERE tgrelid = 'attempts'::regclass AND NOT tgisinternal")
    with db.engine.connect() as conn:
        found = {row[0] for row in conn.exec_driver_sql(query)}
    assert found == _round_results_migration().TRIGGERS[dialect]


@pytest.mark.postgres
def test_attempts_written_while_the_upgrade_runs_wait_for_their_summary_to_exist(db, monkeypatch):
    """Processes on the old version keep serving while ``hoctap db upgrade`` runs: a submission written
    between the backfill of ``round_results`` and its triggers would be missing from the figures, so
    writes wait for the upgrade (held here just as it is about to backfill)."""
    import threading

    import alembic.op
    from alembic import command
    from sqlalchemy.exc import OperationalError

    from bot.storage.db import alembic_config

    with db.engine.begin() as conn:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012_members_covering_index")
    at_backfill, go_on = threading.Event(), threading.Event()
    execute = alembic.op.execute

    def pausing_execute(statement, *args, **kwargs):
        if str(statement).startswith("INSERT INTO round_results"):
            at_backfill.set()
            go_on.wait(10)
        return execute(statement, *args, **kwargs)

    monkeypatch.setattr(alembic.op, "execute", pausing_execute)
    upgrade = threading.Thread(target=db.upgrade)
    upgrade.start()
    try:
        assert at_backfill.wait(10)
        with db.engine.connect() as other, other.begin():
            other.exec_driver_sql("SET lock_timeout = '300ms'")
            with pytest.raises(OperationalError, match="lock timeout"):
                other.exec_driver_sql("UPDATE attempts SET score = score")
    finally:
        go_on.set()
        upgrade.join(30)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT to_regclass('round_results')").scalar() == "round_results"


def test_a_filled_database_steps_down_through_every_migration_and_back_up(province):
    """Every downgrade runs on a database with a roster, documents and a round in it (a batch copy of a table
    that others point at could not be dropped on SQLite), and the schema built again is the models'."""
    from alembic import command
    from sqlalchemy import inspect

    from bot.storage.db import alembic_config

    with province.engine.begin() as conn:
        cfg = alembic_config(province.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    province.upgrade()
    with province.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    """A database with no schema at all, as a first deployment has."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(request.getfixturevalue("_postgres_url"))
    name = f"{base.database}_fresh"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_three_processes_starting_together_on_an_empty_database_all_start(empty_url):
    """Each process upgrades the schema as it starts: they do it one at a time, and none fails."""
    import threading

    from bot.storage.db import Database

    gate, failures = threading.Barrier(3), []

    def start() -> None:
        db = Database(empty_url)
        try:
            gate.wait()
            db.upgrade()
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    db = Database(empty_url)
    try:
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        db.dispose()
