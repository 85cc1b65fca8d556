"""Put checked documents into the database without rewriting history.

A question that members may have answered is never edited: a changed question becomes a new row
and the old one is retired (``current = False``), so recorded answers keep the text they saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.content.validate import DocumentSpec, Problem, QuestionSpec, code_key
from bot.storage.models import Document, Question


@dataclass
class LoadReport:
    document_id: str
    created: bool
    questions_added: int
    questions_retired: int
    questions_current: int


def question_hash(q: QuestionSpec) -> str:
    payload = json.dumps([q.text, q.options, q.answer_index, q.explanation], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def load_document(session: Session, spec: DocumentSpec, now: datetime) -> LoadReport:
    doc = session.get(Document, spec.id)
    created = doc is None
    if doc is None:
        doc = Document(id=spec.id)
        session.add(doc)
    doc.code, doc.title, doc.kind, doc.note = spec.code, spec.title, spec.kind, spec.note
    doc.issued_by, doc.issued_on = spec.issued_by, spec.issued_on
    doc.summary, doc.key_points = spec.summary, list(spec.key_points)
    doc.translations = dict(spec.translations) or None
    doc.questions_per_attempt, doc.pass_score = spec.questions_per_attempt, spec.pass_score
    doc.max_attempts, doc.shuffle_options = spec.max_attempts, spec.shuffle_options
    doc.source_file, doc.loaded_at = spec.source_file, now
    session.flush()

    current = {
        q.content_hash: q
        for q in session.scalars(select(Question).where(Question.document_id == spec.id, Question.current))
    }
    added = 0
    wanted: set[str] = set()
    for position, qspec in enumerate(spec.questions, start=1):
        h = question_hash(qspec)
        wanted.add(h)
        existing = current.get(h)
        if existing is not None:
            existing.position = position
            continue
        session.add(Question(
            document_id=spec.id, position=position, text=qspec.text, options=list(qspec.options),
            answer_index=qspec.answer_index, explanation=qspec.explanation, content_hash=h,
            current=True, created_at=now,
        ))
        added += 1
    retired = 0
    for h, q in current.items():
        if h not in wanted:
            q.current = False
            retired += 1
    session.flush()
    return LoadReport(spec.id, created, added, retired, len(spec.questions))


def code_clashes(session: Session, specs: list[DocumentSpec]) -> list[Problem]:
    """Documents whose code a document loaded earlier from another file already has."""
    ids = {spec.id for spec in specs}
    taken = {code_key(code): (doc_id, source) for doc_id, code, source
             in session.execute(select(Document.id, Document.code, Document.source_file)) if doc_id not in ids}
    return [Problem(spec.source_file, spec.code_line, "code",
                    f"'{spec.code}' đã là số hiệu (code) của văn bản '{taken[code_key(spec.code)][0]}' "
                    f"(đã nạp từ {taken[code_key(spec.code)][1]}); hãy đặt cho mỗi văn bản một số hiệu riêng")
            for spec in specs if code_key(spec.code) in taken]
