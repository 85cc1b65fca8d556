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
