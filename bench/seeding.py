"""A bench's branch: ``members`` members linked on one messenger, the sample documents, an open round.

Shared by the Zalo bot and Zalo OA benches, so their figures stand on the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from bot.content.load import load_document
from bot.content.validate import check_paths
from bot.services.rounds import open_round
from bot.storage.db import Database
from bot.storage.models import ChatAccount, Member, Unit
from bot.timeutil import utcnow

REPO = Path(__file__).resolve().parents[1]


def seed_branch(db: Database, members: int, channel: str, external_id: Callable[[int], str], *,
                phones: bool = False, seen: bool = False, round_days: int = 1) -> list[tuple[int, str]]:
    """Branch ``B`` with its members linked on ``channel`` (``external_id(i)``; ``seen``: they wrote just
    now), with phones or not, and a round of kh-64 open for ``round_days``; returns (member id,
    external id) in member order."""
    from bot.roster.importer import rebuild_closure

    db.upgrade()
    now = utcnow()
    out = []
    with db.session() as s:
        unit = Unit(code="B", name="Chi bộ thử")
        s.add(unit)
        s.flush()
        rebuild_closure(s)
        for i in range(members):
            m = Member(code=f"M{i:05d}", full_name=f"Đảng viên {i}", unit_id=unit.id, role="member", active=True,
                       phone=f"+849{i:08d}" if phones else None)
            s.add(m)
            s.flush()
            out.append((m.id, external_id(i)))
            s.add(ChatAccount(channel=channel, external_id=external_id(i), member_id=m.id, linked_at=now,
                              last_seen_at=now if seen else None))
        for doc in check_paths([REPO / "quizzes"]).documents:
            load_document(s, doc, now)
        open_round(s, "kh-64-tu-binh-phuoc", ["B"], now - timedelta(minutes=1), now + timedelta(days=round_days), 98,
                   now)
    return out
