"""`hoctap playground --at TIME`: what members, secretaries and cadres receive at a moment.

Runs the real due work (at each open round's opening first, as a scheduler running all along would have)
and the real outbox sender at that (local) time against the Telegram emulator, for three sample people,
and prints each one's messages. Nothing is mocked but the clock.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import select
from bot.channels.telegram import sending_bot

from bot.channels.playground import Playground
from bot.channels.telegram import TelegramTransport
from bot.emulators.telegram import TelegramEmulator
from bot.outbox.sender import OutboxSender
from bot.scheduling.due import run_due, schedule_from
from bot.scheduling.reports import ReportBuilder
from bot.storage.models import ChatAccount, Member, Round
from bot.timeutil import fmt_datetime, utcnow

PEOPLE = (("DV002", "đảng viên"), ("DV001", "bí thư chi bộ"), ("CB002", "cán bộ xã"))
BASE_ID = 800_000


def show_day(playground: Playground, at: datetime) -> int:
    settings, db, out = playground.settings, playground.db, playground.out
    if not playground.prepare():
        return 1
    schedule = schedule_from(settings)
    with TelegramEmulator(bot_username="hoctap_playground_bot") as emu:
        users = {}
        with db.session() as s:
            for code, role in PEOPLE:
                member = s.scalar(select(Member).where(Member.code == code))
                if member is None:
                    continue
                external = str(BASE_ID + member.id)
                if s.scalar(select(ChatAccount).where(ChatAccount.channel == "telegram",
                                                      ChatAccount.member_id == member.id)) is None:
                    s.add(ChatAccount(channel="telegram", external_id=external, member_id=member.id, linked_at=utcnow()))
                users[code] = (f"{member.full_name} ({code}, {role})", emu.user(int(external)))
        for _, user in users.values():
            user.send_text("/start")  # the bot may only write to people who started it
        builder = ReportBuilder(settings)
        with db.read_session() as s:  # what a scheduler running all along did when each round opened
            openings = sorted(set(s.scalars(select(Round.opens_at).where(Round.closed_at.is_(None),
                                                                          Round.opens_at < at))))
        for opened in openings:
            run_due(db, opened, schedule, builder)
        report = run_due(db, at, schedule, builder)
        deliver_at = schedule.quiet.next_allowed(at)
        print(f"=== {fmt_datetime(at, settings.tz)}: {report.enqueued} message(s) due", file=out)
        for job in report.jobs:
            print(f"    {job}", file=out)
        if deliver_at != at:
            print(f"    quiet hours: delivered at {fmt_datetime(deliver_at, settings.tz)}", file=out)

        async def send():
            async with sending_bot(emu.token, emu.base_url) as bot, TelegramTransport(bot) as transport:
                sender = OutboxSender(db, {"telegram": transport}, rate=200, per_chat_interval=0,
                                      quiet=schedule.quiet, clock=lambda: deliver_at)
                await sender.run(until_idle=True)

        asyncio.run(send())
        for name, user in users.values():
            texts = [m.get("text") or f"[{m['document']['file_name']}]" if "document" in m else m.get("text", "")
                     for m in user.messages]
            print(f"\n--- {name} received {len(texts)} message(s)", file=out)
            for text in texts:
                print(f"{text}\n", file=out)
    return 0
