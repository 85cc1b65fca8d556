"""Engine and sessions; schema upgrades through Alembic.

SQLite gets WAL, a busy timeout and foreign keys so several processes can share one file.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
import sqlalchemy.exc
from sqlalchemy import Table, bindparam, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
READ_ONLY = "hoctap_read_only"  # execution option of the read-only sessions' connections


def make_engine(url: str) -> Engine:
    """An engine with the pragmas or pool settings each backend needs."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            # Let SQLAlchemy, not the sqlite3 module, decide when a transaction begins: otherwise a
            # SAVEPOINT as the first statement starts (and its release commits) the transaction.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            # IMMEDIATE: take the write lock up front, so two transactions that read then write
            # wait for each other (busy_timeout) instead of one failing at once with "locked".
            # A read-only session begins DEFERRED: under WAL it reads a snapshot and never takes
            # the write lock, so a long roll-up does not stall every answer.
            # A read-only session is read-only in SQLite itself (``query_only``): a write slipped into one fails
            # in tests, where it would otherwise be rolled back unseen, or fail at once in production when another
            # process had written since its snapshot. The pragma is the connection's: set only when it changes.
            read_only = bool(conn.get_execution_options().get(READ_ONLY))
            if conn.info.get(READ_ONLY, False) != read_only:
                conn.exec_driver_sql(f"PRAGMA query_only={int(read_only)}")
                conn.info[READ_ONLY] = read_only
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    # a server that stops answering (a partition, a hang) is noticed instead of waited on forever: connecting
    # gives up after 10 s, and an open connection's silence is detected within about a minute (TCP keepalives while
    # idle, tcp_user_timeout while a statement waits); a server alive but stuck is not (no statement_timeout:
    # reports may run long)
    engine = create_engine(url, pool_pre_ping=True,
                           connect_args=POSTGRES_CONNECT if url.startswith("postgres") else {})
    if engine.dialect.name == "postgresql":
        @event.listens_for(engine, "begin")
        def _postgres_begin(conn):  # pragma: no cover - trivial
            if conn.get_execution_options().get(READ_ONLY):  # as on SQLite: a write in a read session fails
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    return engine


# failures a second try of the same work may not meet (the database unreachable, locked, busy or in a
# deadlock): an update that met one is left for its platform to deliver again
TRANSIENT_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
                    TimeoutError, ConnectionError)
POSTGRES_CONNECT = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                    "keepalives_count": 3, "tcp_user_timeout": 60_000}


def lock_chat(s: Session, channel: str, external_id: str) -> None:
    """Hold one chat until this transaction ends, across processes, so that its updates are handled one
    at a time: on PostgreSQL a transaction-scoped advisory lock on a hash of (channel, chat); on SQLite
    ``BEGIN IMMEDIATE`` already lets one writer at a time."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                  {"key": f"{channel}:{external_id}"})


_INSERTS_IF_NEW: dict[tuple, Any] = {}


def insert_if_new(dialect: str, table: Table, columns: tuple[str, ...], returning: str,
                  conflict: tuple[str, ...] | None = None):
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of ``columns`` (bound by name at execution),
    built once per dialect: on the busiest paths building a statement costs about what running it
    does. ``conflict``: the unique columns (None: any conflict)."""
    key = (dialect, table.name, columns, returning, conflict)
    stmt = _INSERTS_IF_NEW.get(key)
    if stmt is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = _INSERTS_IF_NEW[key] = (
            insert(table).values({c: bindparam(c) for c in columns})
            .on_conflict_do_nothing(index_elements=list(conflict) if conflict else None)
            .returning(table.c[returning]))
    return stmt


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


class Database:
    """One engine and its session factory; ``session()`` is one transaction."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(**{READ_ONLY: True})
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        # SQLite lets one writer in at a time and makes the others poll with growing sleeps (up to
        # 100 ms each); queueing this process's writers on a lock hands the write lock over at once.
        self._writer = threading.RLock() if url.startswith("sqlite") else nullcontext()

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (cheap when already there). On SQLite, processes starting
        together on a new file can meet "database is locked" at once, without the busy timeout (switching the
        new file to WAL takes it whole): tried again a few times."""
        for attempt in range(5):
            try:
                return self._upgrade()
            except sqlalchemy.exc.OperationalError as exc:
                if self.engine.dialect.name != "sqlite" or "locked" not in str(exc) or attempt == 4:
                    raise
                self.engine.dispose()
                time.sleep(0.2 * (attempt + 1))

    def _upgrade(self) -> None:
        head = ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return
        with self.engine.begin() as conn:
            # processes started together after an upgrade: one migrates, the others wait here (SQLite: the
            # transaction's write lock) and then find the schema at head
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('hoctap-migrations', 0))"))
            if MigrationContext.configure(conn).get_current_revision() == head:
                return
            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        with self._writer, self._sessions() as s:
            with s.begin():
                yield s

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reading only (figures, reports, pages): on SQLite a plain (deferred)
        BEGIN, so it never holds the write lock; a write in it fails (read-only in the database too)."""
        with self._read_sessions() as s:
            try:
                yield s
            finally:
                s.rollback()

    def dispose(self) -> None:
        self.engine.dispose()
