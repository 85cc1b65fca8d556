"""Every `hoctap run` process sends from the one outbox: claims shared, the rate shared, a kill -9 loses
or repeats nothing; and a member's messages go one at a time, in order, paced, whichever sender takes them."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select
from telegram import Bot

from bench.webhook_fleet import Fleet
from bot.channels.telegram import TelegramTransport
from bot.domain.replies import Reply
from bot.outbox import queue
from bot.outbox.sender import OutboxSender
from bot.services.rounds import audience_members
from bot.storage.models import ChatAccount, Member, OutboxMessage
from bot.timeutil import utcnow

RATE = 30.0  # messages per second for all processes together
EXTRA = 150  # members added to the sample province, so that the broadcast lasts some seconds


def link_audience(db, emulator) -> dict[int, object]:
    """The round's audience, grown by EXTRA members, each linked to an emulator user who started the bot."""
    with db.session() as s:
        unit_id = s.scalar(select(Member.unit_id).where(Member.id.in_(audience_members(1).with_only_columns(Member.id)))
                           .limit(1))
        s.execute(insert(Member), [dict(code=f"X{i:04d}", full_name=f"Đảng viên thêm {i}", unit_id=unit_id,
                                        role="member", active=True) for i in range(EXTRA)])
        ids = sorted(s.scalars(audience_members(1).with_only_columns(Member.id)))
        s.execute(insert(ChatAccount), [dict(channel="telegram", external_id=str(80_000 + mid), member_id=mid,
                                             linked_at=utcnow()) for mid in ids])
    users = {mid: emulator.user(80_000 + mid) for mid in ids}
    for user in users.values():
        user.send_text("/start")
    return users


def announcements_sent(emulator) -> int:
    return sum(1 for p in emulator.calls("sendMessage") if str(p.get("text", "")).startswith("📢"))


def unsettled(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.purpose == "announce", OutboxMessage.status.in_(("pending", "claimed", "sending"))))


@pytest.mark.postgres
def test_three_processes_share_a_broadcast_at_the_global_rate_and_a_kill_loses_or_repeats_nothing(
        province, db_url, workdir):
    from bot.emulators.telegram import TelegramEmulator

    fleet = Fleet(workdir, db_url, 3, outbox_rate=RATE)
    samples: list[tuple[float, int]] = []
    with TelegramEmulator(webhook_targets=fleet.targets, webhook_retry_delay=0.1) as emulator, fleet:
        fleet.start(emulator, timeout=180)
        users = link_audience(province, emulator)
        deadline = time.monotonic() + 60
        while emulator.updates_pending() and time.monotonic() < deadline:  # the bot has answered their /start
            time.sleep(0.1)
        with province.session() as s:  # an announcement, as the leader's tick enqueues it: every process sends
            assert queue.enqueue_many(s, purpose="announce", keyed_members=[(f"announce:t:{m}", m) for m in users],
                                      reply=Reply("📢 Đợt học tập mới"), now=utcnow(), round_id=1) == len(users)
        killed = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            samples.append((time.monotonic(), announcements_sent(emulator)))
            if not killed and samples[-1][1] >= len(users) // 3:
                fleet.kill(1)  # kill -9 mid-broadcast: whatever it had claimed or in flight is cut off
                killed = True
            if killed and samples[-1][1] > 0 and unsettled(province) == 0:
                break
            time.sleep(0.05)
        time.sleep(1.0)  # a second copy would show up now
        per_user = {mid: sum(1 for m in u.messages if m.get("text", "").startswith("📢")) for mid, u in users.items()}
        survivors = [fleet.log(i) for i in (0, 2)]
    assert killed and unsettled(province) == 0
    with province.session() as s:
        status = dict(s.execute(select(OutboxMessage.member_id, OutboxMessage.status)
                                .where(OutboxMessage.purpose == "announce")).all())
        senders = set(s.scalars(select(OutboxMessage.claimed_by).where(OutboxMessage.status == "sent")))
    assert set(status) == set(users)
    assert max(per_user.values()) == 1  # no duplicates
    # nothing lost: everyone got it but a message in flight at the kill (or sent, its mark not yet
    # written), which is recorded as uncertain: secretaries see that the member may not have it
    missing = {mid: status[mid] for mid, n in per_user.items() if n == 0}
    assert set(missing.values()) <= {"uncertain"}, missing
    assert set(status.values()) <= {"sent", "uncertain"}
    assert all(per_user[mid] == 1 for mid, st in status.items() if st == "sent")
    assert len(senders) == 3  # every process sent part of it
    # the rate is the three processes' together, not each one's (that would be 3 × RATE): over 4 s, so that
    # answers the emulator held back while two cores ran everything and then gave at once do not count as a burst
    busiest = max(n1 - n0 for t0, n0 in samples for t1, n1 in samples if 0 <= t1 - t0 <= 4.0)
    assert busiest <= 4 * RATE + 20, busiest
    assert all("Traceback" not in log for log in survivors), survivors


def test_two_senders_give_one_member_their_messages_in_order_and_a_second_apart(province, db):
    from bot.emulators.telegram import TelegramEmulator

    with db.session() as s:
        member_id = s.scalar(select(Member.id).where(Member.code == "DV002"))
        s.add(ChatAccount(channel="telegram", external_id="81000", member_id=member_id, linked_at=utcnow()))
        now = utcnow()
        for i in range(4):  # e.g. the pieces of a reply flood control held back
            queue.enqueue(s, dedupe_key=f"reply:t:{i}", purpose=queue.REPLY, member_id=member_id,
                          reply=Reply(f"Phần {i + 1}"), now=now)

    with TelegramEmulator(flood_limit_per_chat=1.0) as strict:  # a second message within a second: 429
        user = strict.user(81000)
        user.send_text("/start")

        async def two_senders():
            async with Bot(strict.token, base_url=strict.base_url) as bot, TelegramTransport(bot) as transport:
                senders = [OutboxSender(db, {"telegram": transport}, rate=100, per_chat_interval=1.0,
                                        worker=f"w{i}", idle_poll=0.05) for i in range(2)]
                return await asyncio.gather(*(s.run(until_idle=True) for s in senders))

        started = time.monotonic()
        stats = asyncio.run(two_senders())
        texts = [m["text"] for m in user.messages if m.get("text", "").startswith("Phần")]
    assert texts == ["Phần 1", "Phần 2", "Phần 3", "Phần 4"]  # in order, each once
    assert sum(st.retried for st in stats) == 0  # never two within a second: no 429
    assert time.monotonic() - started >= 3.0
    with db.session() as s:
        assert set(s.scalars(select(OutboxMessage.status))) == {"sent"}


def test_a_member_with_a_message_in_flight_is_not_claimed_again_by_another_sender(province, db):
    with db.session() as s:
        member_id = s.scalar(select(Member.id).where(Member.code == "DV003"))
        now = utcnow()
        for i in range(2):
            queue.enqueue(s, dedupe_key=f"reply:u:{i}", purpose=queue.REPLY, member_id=member_id,
                          reply=Reply(f"Tin {i}"), now=now)
        first = queue.claim(s, "a", now, 10, per_chat_interval=1.0)
        assert [r.member_id for r in first] == [member_id]  # one at a time for one member
        assert queue.claim(s, "b", now, 10, per_chat_interval=1.0) == []  # its first is claimed
        queue.mark_sent(s, first[0].id, "telegram", now)
        assert queue.claim(s, "b", now + timedelta(seconds=0.5), 10, per_chat_interval=1.0) == []  # too soon
        assert len(queue.claim(s, "a", now + timedelta(seconds=0.5), 10, per_chat_interval=1.0)) == 1  # its own pacing
