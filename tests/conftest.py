"""Shared fixtures: a real database per test (SQLite file, and PostgreSQL when available) and the CLI.

PostgreSQL comes from HOCTAP_TEST_POSTGRES_URL (scripts/test starts a throwaway server). With
HOCTAP_REQUIRE_POSTGRES=1 a missing or unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.storage.db import Database
from bot.storage.models import Base
from tests.messengers import invitation_codes

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "roster"
QUIZZES = REPO / "quizzes"
TONE_MARKS = "\u0300\u0301\u0303\u0309\u0323"


def windows_1258(text: str) -> bytes:
    """``text`` as Excel's plain "CSV" (and Notepad's "ANSI") saves it on a Vietnamese Windows: letters with a tone are the
    toneless letter (â, ơ, ư... are single bytes) followed by the tone as a combining mark."""
    out = b""
    for ch in text:
        decomposed = unicodedata.normalize("NFD", ch)
        base = unicodedata.normalize("NFC", "".join(c for c in decomposed if c not in TONE_MARKS))
        out += base.encode("cp1258") + "".join(c for c in decomposed if c in TONE_MARKS).encode("cp1258")
    return out


def pytest_generate_tests(metafunc):
    if "db_url" in metafunc.fixturenames:
        only_postgres = metafunc.definition.get_closest_marker("postgres") is not None
        metafunc.parametrize("db_url", ["postgresql"] if only_postgres else ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture(scope="session")
def _postgres_url(worker_id) -> str:
    base = os.environ.get("HOCTAP_TEST_POSTGRES_URL")
    required = os.environ.get("HOCTAP_REQUIRE_POSTGRES") == "1"
    if not base:
        if required:
            pytest.fail("HOCTAP_REQUIRE_POSTGRES=1 but HOCTAP_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL not configured (run scripts/test, or set HOCTAP_TEST_POSTGRES_URL)")
    name = f"hoctap_test_{worker_id}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure
        if required:
            pytest.fail(f"PostgreSQL is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    finally:
        admin.dispose()
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    db.upgrade()
    db.dispose()
    return url


@pytest.fixture
def db_url(request, tmp_path) -> str:
    """A migrated, empty database: a fresh SQLite file, or a truncated PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "hoctap.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("_postgres_url")
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def db(db_url) -> Database:
    database = Database(db_url)
    yield database
    database.dispose()


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.out.splitlines() if line]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A working folder with its own config.yaml, as an operator would have."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for var in ("HOCTAP_DATABASE_URL", "HOCTAP_TIMEZONE", "HOCTAP_CONTENT_DIR", "TELEGRAM_BOT_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return work


@pytest.fixture
def cli(workdir, db_url, capsys, monkeypatch):
    """Run ``hoctap ...`` in-process against the test database; returns exit code and output."""
    monkeypatch.setenv("HOCTAP_DATABASE_URL", db_url)
    monkeypatch.setenv("HOCTAP_CONTENT_DIR", str(QUIZZES))
    from bot.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    yield run
    from bot.storage.token_key import use_key

    use_key(None)  # the CLI sets the token key process-wide: the next test starts without one


@pytest.fixture
def sample_roster(cli):
    """The sample province loaded: units, members and both documents."""
    assert cli("units", "import", SAMPLES / "units.csv").code == 0
    assert cli("members", "import", SAMPLES / "members.csv").code == 0
    assert cli("content", "load").code == 0


# -- a province with an open round, and the bot on the Telegram emulator ------------------------
@pytest.fixture
def province(db):
    """The sample roster and documents in the database, with round 1 open now for DP and HQ."""
    from datetime import timedelta

    from bot.content.load import load_document
    from bot.content.validate import check_paths
    from bot.roster.importer import import_members, import_units
    from bot.services.rounds import open_round
    from bot.timeutil import utcnow

    now = utcnow()
    with db.session() as s:
        assert import_units(s, SAMPLES / "units.csv").ok
        assert import_members(s, SAMPLES / "members.csv").ok
        for doc in check_paths([QUIZZES]).documents:
            load_document(s, doc, now)
        open_round(s, "kh-64-tu-binh-phuoc", ["DP", "HQ"], now - timedelta(hours=1), now + timedelta(days=14), 98, now)
    return db


@pytest.fixture
def emulator():
    from bot.emulators.telegram import TelegramEmulator

    with TelegramEmulator() as emu:
        yield emu


class BotProcess:
    """The bot as one process would run it: start, stop (as a crash would), start again."""

    def __init__(self, db, emulator, study_links=None):
        self.db, self.emulator, self.running = db, emulator, None
        self.study_links = study_links

    def start(self) -> "BotProcess":
        from zoneinfo import ZoneInfo

        from bot.channels.telegram import TRAITS, BackgroundBot, TelegramChannel
        from bot.reports.replies import report_replies
        from bot.services.chat import ChatService

        service = ChatService(self.db, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"), study_links=self.study_links,
                              reports=report_replies)
        app = TelegramChannel(service).build(self.emulator.token, self.emulator.base_url, self.emulator.base_file_url)
        self.running = BackgroundBot(app).start()
        return self

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None


@pytest.fixture
def telegram_bot(province, emulator):
    """The real PTB Application polling the emulator, serving the sample province."""
    process = BotProcess(province, emulator).start()
    yield process
    process.stop()


@pytest.fixture
def invite(province):
    """A fresh single-use Telegram link code for a member code."""
    return invitation_codes(province, "telegram")


# -- Zalo: the branches' bots and the Official Account ------------------------------------------------
ZALO_TOKEN = "1234567890:ZALO-SECRET-PART"


@pytest.fixture
def zalo_emulator():
    from bot.emulators.zalo import ZaloEmulator

    with ZaloEmulator(ZALO_TOKEN, "HocTap", fetch_photos=True) as emu:
        yield emu


@pytest.fixture
def zalo_invite(province):
    """A fresh Zalo code (typed to the bot) for a member code."""
    return invitation_codes(province, "zalo")


@pytest.fixture
def oa_emulator():
    from bot.emulators.zalo_oa import ZaloOAEmulator

    with ZaloOAEmulator() as emu:
        yield emu


@pytest.fixture
def oa_invite(province):
    """A fresh code typed to the OA (``channel="zalo"``: the Zalo bot's code, which the OA takes too)."""
    return invitation_codes(province, "zalo_oa")


# -- the study pages -------------------------------------------------------------------------------
WEB_SECRET = b"test-secret-for-study-links-0123456789"


class PagesServer:
    """The study pages as ``hoctap run`` serves them (bot/web.py with /hoc mounted), on 127.0.0.1
    at a free port, in a thread of their own."""

    def __init__(self, db, *, telegram_token: str | None = None):
        from bot.webapp.server import BackgroundPages

        self.db = db
        self.background = BackgroundPages(db, WEB_SECRET, telegram_token=telegram_token)
        self.config = self.background.config

    def start(self) -> "PagesServer":
        self.background.start()
        self.base, self.links = self.background.base, self.background.links
        return self

    def stop(self) -> None:
        self.background.stop()

    def link_for(self, member_code: str, *, round_id: int | None = 1, expires_at=None) -> str:
        """A fresh study link of a member, as the chat would hand it out."""
        from sqlalchemy import select

        from bot.storage.models import Member
        from bot.timeutil import utcnow

        with self.db.session() as s:
            member = s.scalar(select(Member).where(Member.code == member_code))
            return self.links.for_member(s, member.id, utcnow(), round_id=round_id, expires_at=expires_at).url


@pytest.fixture
def study_pages(province, emulator):
    server = PagesServer(province, telegram_token=emulator.token).start()
    yield server
    server.stop()


@contextmanager
def a_long_write(db: Database):
    """A write transaction held open by another thread for the duration of the ``with`` block (a roster
    import, a province's announcement): on SQLite it holds the database's one write lock."""
    import threading

    holding, release = threading.Event(), threading.Event()

    def write():
        with db.session() as s:
            s.execute(text("UPDATE members SET full_name = full_name"))
            holding.set()
            release.wait(30)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert holding.wait(10), "the long write did not start"
        yield
    finally:
        release.set()
        writer.join()

