"""Figures and reports read in a read-only session: on SQLite it must not hold the write lock, so a
member's answer is not kept waiting behind a province's roll-up."""

from __future__ import annotations

import threading

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


def test_what_a_read_only_session_writes_is_not_kept(db):
    with db.read_session() as s:
        s.add(Unit(code="X", name="Chi bộ không lưu"))
        s.flush()
    with db.read_session() as s:
        assert s.scalar(select(Unit).where(Unit.code == "X")) is None
