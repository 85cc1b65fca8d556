"""Updates a polling `hoctap run` fetched survive kill -9: Telegram counts them delivered at the next getUpdates,
which goes out while they are still being handled."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, func, select, text

from bot.storage.models import Attempt, ChatAccount, InboxUpdate, Member
from bot.timeutil import utcnow
from tests.test_scheduler_process import wait_until

USER_ID = 91_001


def start_run(workdir, db_url, emulator) -> subprocess.Popen:
    config = workdir / "config.yaml"
    config.write_text(f"database_url: {db_url}\n"
                      f"telegram:\n  token: ${{TELEGRAM_BOT_TOKEN}}\n  api_base_url: {emulator.base_url}\n",
                      encoding="utf-8")
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": emulator.token}
    env.pop("HOCTAP_DATABASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "bot.cli", "--config", str(config), "run"],
                            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kept(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(InboxUpdate))


@pytest.mark.postgres
def test_a_message_in_hand_when_the_poller_is_killed_is_answered_after_the_restart(province, db_url, workdir,
                                                                                   emulator):
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV002"))
        s.add(ChatAccount(channel="telegram", external_id=str(USER_ID), member_id=member.id, linked_at=utcnow()))
    user = emulator.user(USER_ID)
    process = start_run(workdir, db_url, emulator)
    try:
        assert wait_until(lambda: emulator.polls_started() > 0, 60), process.stderr.read1().decode()
        engine = create_engine(db_url)
        holder = engine.connect()  # the chat busy elsewhere: its /lambai waits for it, fetched
        try:
            holder.execute(text("SELECT pg_advisory_lock(hashtextextended(:key, 0))"), {"key": f"telegram:{USER_ID}"})
            user.send_text("/lambai")
            assert wait_until(lambda: kept(province) == 1 and emulator.updates_pending() == 0, 30)
            process.kill()  # -9, the update in hand and confirmed to Telegram
            process.wait(10)
        finally:
            holder.close()
            engine.dispose()  # the session's advisory lock goes with its connection
        assert not any("Câu 1/10" in (m.get("text") or "") for m in user.messages)
        process = start_run(workdir, db_url, emulator)
        user.wait_for(lambda u: any("Câu 1/10" in (m.get("text") or "") for m in u.messages), timeout=60)
    finally:
        process.kill()
        process.wait(10)
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Attempt).where(Attempt.member_id == member.id)) == 1


def test_an_update_answered_while_the_last_one_is_being_written_is_written_too_with_no_more_traffic(province):
    """A reply that went out while the inbox was writing the previous answered mark (the database slow) is not
    left to be sent again after a restart: it is written within seconds, though no other update comes."""
    import asyncio
    import threading

    from bot.services.inbox import Inbox

    inbox = Inbox(province, "zalo", "zalo")
    inbox.keep([("a", {"n": 1}), ("b", {"n": 2})], utcnow())
    holding, release = threading.Event(), threading.Event()

    def hold_row_a():  # a slow database: the write of a's mark waits on this transaction
        with province.session() as s:
            s.execute(text("UPDATE inbox_updates SET payload = payload WHERE update_key = 'a'"))
            holding.set()
            release.wait(10)

    async def scenario() -> None:
        holder = threading.Thread(target=hold_row_a)
        holder.start()
        assert holding.wait(5)
        inbox.answered("a")
        await asyncio.sleep(1.4)  # a's mark is being written, and waits
        inbox.answered("b")
        release.set()
        await asyncio.to_thread(holder.join)
        await asyncio.sleep(2.5)

    asyncio.run(scenario())
    assert kept(province) == 0


def test_an_update_recorded_and_unanswered_goes_to_one_starting_process_and_again_to_a_later_one_if_that_died(
        province):
    """Two processes starting together: one of them answers it again; killed while doing so, the next start
    answers it again (never lost), and once answered it is gone."""
    import asyncio
    from datetime import timedelta

    from bot.services.chat import ChatService
    from bot.services.inbox import Inbox
    from bot.channels.zalo_oa import TRAITS
    from tests.messengers import TZ

    kept_at = utcnow()
    Inbox(province, "zalo_oa", "zalo_oa").keep([("m1", {"n": 1})], kept_at)
    ChatService(province, TRAITS, TZ).first_time("m1", kept_at)  # recorded, then killed before the reply
    started = kept_at + timedelta(seconds=2)
    first, rival = Inbox(province, "zalo_oa", "zalo_oa"), Inbox(province, "zalo_oa", "zalo_oa")
    assert [k for k, _ in first.claim_unanswered(started)] == ["m1"]
    assert rival.claim_unanswered(started) == []  # started together: not answered twice
    later = Inbox(province, "zalo_oa", "zalo_oa")  # the first one was killed while answering it
    assert [k for k, _ in later.claim_unanswered(started + timedelta(seconds=30))] == ["m1"]

    async def answer_and_stop() -> None:
        later.answered("m1")
        await later.close()

    asyncio.run(answer_and_stop())
    assert kept(province) == 0
