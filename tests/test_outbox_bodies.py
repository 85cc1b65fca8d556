"""A broadcast's text is stored once however many members it goes to; each member's own link apart."""

from __future__ import annotations

import json

from sqlalchemy import func, insert, select

from bot.outbox import queue
from bot.scheduling.due import Schedule, run_due
from bot.storage.models import Member, OutboxBody, OutboxMessage
from tests.test_scheduled_messages import branch, deliver, local, received  # noqa: F401 - fixture
from tests.test_study_links_in_chat import LINKS


def stored(db) -> tuple[int, list[dict], list[dict]]:
    """(outbox rows, their own payloads, the bodies)."""
    with db.session() as s:
        rows = s.scalars(select(OutboxMessage.payload)).all()
        bodies = s.scalars(select(OutboxBody.payload)).all()
    return len(rows), rows, bodies


def test_an_announcement_to_every_member_stores_its_text_once_and_every_member_reads_it_whole(
        province, emulator, branch):
    _rid, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    run_due(province, local("2026-12-01 07:00"), Schedule())  # a second process doing the same tick
    count, own, bodies = stored(province)
    assert count == len(users) and len(bodies) == 1  # one text, not one per member
    announcement = bodies[0]["text"]
    assert announcement.startswith("📢") and all(payload == {} for payload in own)
    deliver(province, emulator, local("2026-12-01 07:00"))
    assert all(received(u) == [announcement] for u in users.values())


def test_each_members_own_study_link_is_the_only_part_stored_per_member_and_reaches_only_them(
        province, emulator, branch):
    _rid, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule(links=LINKS))
    count, own, bodies = stored(province)
    assert len(bodies) == 1 and "link" not in bodies[0]
    assert all(set(payload) == {"link"} for payload in own)
    assert all(bodies[0]["text"] not in json.dumps(payload, ensure_ascii=False) for payload in own)
    with province.session() as s:
        links = {code: payload["link"]["url"] for code, payload in s.execute(
            select(Member.code, OutboxMessage.payload).join(Member, Member.id == OutboxMessage.member_id))}
    deliver(province, emulator, local("2026-12-01 07:00"))
    for code, user in users.items():
        buttons = [b for row in user.last()["reply_markup"]["inline_keyboard"] for b in row]
        assert [b["url"] for b in buttons if "url" in b] == [links[code]]  # their own, no one else's


def test_a_message_queued_before_bodies_existed_is_still_sent_whole(province, emulator, branch):
    _rid, users = branch
    with province.session() as s:  # a row as the previous version wrote it: the whole message in it
        member_id = s.scalar(select(Member.id).where(Member.code == "DV002"))
        s.execute(insert(OutboxMessage).values(
            dedupe_key="old:1", purpose="announce", member_id=member_id, payload={"text": "Tin cũ vẫn đến", "choices": []},
            status="pending", not_before=local("2026-12-01 07:00"), attempts=0, created_at=local("2026-12-01 07:00")))
    deliver(province, emulator, local("2026-12-01 07:00"))
    assert [m["text"] for m in users["DV002"].messages if m["text"] == "Tin cũ vẫn đến"] == ["Tin cũ vẫn đến"]
    with province.session() as s:
        assert queue.payloads(s, s.scalars(select(OutboxMessage.id))).popitem()[1]["text"] == "Tin cũ vẫn đến"
        assert s.scalar(select(func.count()).select_from(OutboxBody)) == 0
