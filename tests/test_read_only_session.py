"""Figures and reports read in a read-only session: on SQLite it must not hold the write lock, so a
member's answer is not kept waiting behind a province's roll-up."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy.exc
from sqlalchemy import func, select

from bot.storage.models import Unit


def test_an_answer_is_written_while_a_long_read_is_still_open(db):
    written = threading.Event()

    def answer_meanwhile():
        with db.session() as s:
            s.add(Unit(code="W", name="Chi bộ ghi"))
        written.set()

    with db.read_session() as s:
        s.scalar(select(func.count()).select_from(Unit))  # the read has begun
        writer = threading.Thread(target=answer_meanwhile)
        writer.start()
        assert written.wait(5), "the write waited for the read-only session to end"
    writer.join()


def test_a_write_slipped_into_a_read_only_session_fails_and_the_next_write_session_still_writes(db):
    """A read session is read-only in the database itself: a write in it fails loudly (in tests, not rolled back
    unseen), and the same pooled connection writes again in the next write session."""
    with pytest.raises(sqlalchemy.exc.DBAPIError):
        with db.read_session() as s:
            s.add(Unit(code="X", name="Chi bộ không lưu"))
            s.flush()
    with db.session() as s:
        s.add(Unit(code="Y", name="Chi bộ ghi được"))
    with db.read_session() as s:
        assert s.scalar(select(Unit.code).where(Unit.code.in_(["X", "Y"]))) == "Y"
