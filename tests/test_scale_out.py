"""Three `hoctap run` processes on one PostgreSQL behind Telegram's webhook, one of them killed -9 mid-traffic."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from bench.webhook_fleet import Fleet
from bot.storage.models import Answer, Attempt, ChatAccount, Member, ProcessedUpdate
from bot.timeutil import utcnow

MEMBERS = 8


def quiz_members(db) -> list[tuple[int, int]]:
    """(member id, Telegram user id) of members the open round asks, linked to Telegram chats."""
    from bot.services.rounds import audience_members

    with db.session() as s:
        ids = sorted(s.scalars(audience_members(1).with_only_columns(Member.id)))[:MEMBERS]
        for mid in ids:
            s.add(ChatAccount(channel="telegram", external_id=str(90_000 + mid), member_id=mid, linked_at=utcnow()))
    return [(mid, 90_000 + mid) for mid in ids]


def processed(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(ProcessedUpdate).where(ProcessedUpdate.channel == "telegram"))


@pytest.mark.postgres
def test_three_processes_answer_each_chat_once_and_in_order_when_one_is_killed(province, db_url, workdir):
    from bot.emulators.telegram import TelegramEmulator

    fleet = Fleet(workdir, db_url, 3)
    with TelegramEmulator(webhook_targets=fleet.targets, webhook_retry_delay=0.1) as emulator, fleet:
        fleet.start(emulator)
        members = quiz_members(province)
        users = {mid: emulator.user(uid) for mid, uid in members}
        for user in users.values():
            user.send_text("/lambai")
        first = {mid: u.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""), timeout=60)
                 for mid, u in users.items()}
        sent = len(users)
        for position in range(1, 11):  # every member taps A on questions 1..10 without waiting for replies
            for mid, user in users.items():
                attempt = first[mid]["reply_markup"]["inline_keyboard"][0][0]["callback_data"].split(":")[1]
                user.forge_press(f"a:{attempt}:{position}:0")
                sent += 1
            if position == 3:
                deadline = time.monotonic() + 30
                while processed(province) < sent // 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                fleet.kill(1)  # mid-traffic: some of its requests are in flight
        deadline = time.monotonic() + 90
        while (emulator.updates_pending() or processed(province) < sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        cut_off = [f for f in emulator.webhook.failures if f[1].startswith(fleet.targets[1])]
        survivors = [fleet.log(i) for i in (0, 2)]
    assert emulator.updates_pending() == 0
    assert processed(province) == sent  # every update recorded, each once
    assert cut_off, "the killed process was sent nothing after its death: the test proved nothing"
    with province.session() as s:
        for mid, _ in members:
            attempt = s.scalar(select(Attempt).where(Attempt.member_id == mid))
            positions = sorted(s.scalars(select(Answer.position).where(Answer.attempt_id == attempt.id)))
            # in order: a tap handled before the one of the previous question would not count
            assert positions == list(range(1, 11)), (mid, positions)
            assert attempt.submitted_at is not None
    assert all("Traceback" not in log for log in survivors), survivors
