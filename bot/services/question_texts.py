"""Question texts read once per process.

A question row is never edited (an edit is a new row, see ``Question``), so what the quiz shows of it (text,
options, right answer, explanation) can stay in memory once read: the answer path then reads only each drawn
question's id and content hash, not its text and options again on every tap. Kept per database (an engine),
by id, and used only while the row's content hash is the one read with it. A province's content is a few
hundred questions of about a kilobyte; the map is emptied if it ever grows past ``LIMIT``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.engine import Engine

from bot.storage.models import Question

LIMIT = 20_000  # questions kept per database


@dataclass(frozen=True)
class QuestionContent:
    """A question's text as the member sees it (what ``AttemptQuestion.question`` gives the messages)."""

    text: str
    options: list
    answer_index: int
    explanation: str | None


_q = Question.__table__
_READ = (select(_q.c.id, _q.c.content_hash, _q.c.text, _q.c.options, _q.c.answer_index, _q.c.explanation)
         .where(_q.c.id.in_(bindparam("ids", expanding=True))))
_known: weakref.WeakKeyDictionary[Engine, dict[int, tuple[str, QuestionContent]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def question_texts(connection: Connection, questions: Iterable[tuple[int, str]]) -> dict[int, QuestionContent]:
    """The content of each ``(id, content_hash)``: from memory, or read in one statement for those not there."""
    with _lock:
        known = _known.setdefault(connection.engine, {})
    found: dict[int, QuestionContent] = {}
    missing = []
    for question_id, content_hash in questions:
        hit = known.get(question_id)
        if hit is not None and hit[0] == content_hash:
            found[question_id] = hit[1]
        else:
            missing.append(question_id)
    if missing:
        if len(known) > LIMIT:
            known.clear()
        for row in connection.execute(_READ, {"ids": missing}):
            content = QuestionContent(row.text, row.options, row.answer_index, row.explanation)
            known[row.id] = (row.content_hash, content)
            found[row.id] = content
    return found
