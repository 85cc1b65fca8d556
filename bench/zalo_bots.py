"""Many Zalo bots in one process: N branch bots × 50 members each on the Zalo emulator, beside the
default bot with 50 members of its own in the same run.

Every bot is registered (``zalo_bots``) with its own webhook at ``/zalo/<bot id>/webhook`` on the one
web server; the emulator serves all of them on one base URL and delivers each webhook from the
simulated member's thread (no thread per bot). Each member gets a round announcement through the
outbox (through their own bot, paced and counted per bot) and takes a whole 10-question quiz.

Printed, for the branch bots and for the single default bot: updates per second on the quiz path,
process CPU per update (the emulator and the simulated members run in this process too, the same for
both), announcements per second; the process's resident memory before the bots are served and after
(bots are looked up per request, with a cache of ``CACHE_SIZE``); per-bot quota use this month
(smallest, median, largest of the monthly 3,000).

    python -m bench.zalo_bots [--bots 20] [--members 50] [--concurrency 8] [--bot-rate 50]
    python -m bench.zalo_bots --bots 2000      # the full figure (long: 100,000 quizzes)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from bench.clock import QUIET_HOURS_OFF, QUIET_OFF, add_wall_clock_option, wall_clock
from bench.quiz_throughput import UPDATES_PER_QUIZ
from bench.zalo_quiz import REPO, free_port
from bot.channels.zalo import TRAITS, BackgroundZalo, ZaloOptions, ZaloRuntime
from bot.channels.zalo.fleet import CACHE_SIZE
from bot.channels.zalo.registry import MONTHLY_QUOTA, usage_key, webhook_url
from bot.content.load import load_document
from bot.content.validate import check_paths
from bot.domain.messages import announcement
from bot.emulators.zalo import ZaloEmulator
from bot.outbox import queue
from bot.outbox.sender import OutboxSender
from bot.services.chat import ChatService
from bot.services.rounds import open_round
from bot.storage.db import Database
from bot.storage.models import ChannelUsage, ChatAccount, Member, Round, Unit, ZaloBot
from bot.timeutil import utcnow

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
DEFAULT_TOKEN = "1234567890:TEST-ZALO"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def token_of(n: int) -> str:
    return f"{3_000_000_000 + n}:BENCH-BOT-{n}"


def seed(db: Database, bots: int, members: int, public_url: str) -> dict[str | None, list[str]]:
    """A province of ``bots`` branches with a bot each and one branch on the default bot, ``members``
    members each, linked on Zalo; an open round for all. Returns Zalo ids per bot token (None: default)."""
    from bot.roster.importer import rebuild_closure

    db.upgrade()
    now = utcnow()
    users: dict[str | None, list[str]] = {}
    with db.session() as s:
        root = Unit(code="P", name="Tỉnh thử")
        s.add(root)
        s.flush()
        for b in range(-1, bots):
            unit = Unit(code=f"B{b}", name=f"Chi bộ {b}", parent_id=root.id)
            s.add(unit)
            s.flush()
            bot_pk, key = None, None
            if b >= 0:
                key = token_of(b)
                bot = ZaloBot(zalo_id=key.split(":")[0], unit_id=unit.id, name=f"Bot {b}", token=key,
                              webhook_secret=f"bench-secret-{b:06d}", mode="webhook", created_at=now)
                s.add(bot)
                s.flush()
                bot_pk = bot.id
            s.add_all(Member(code=f"M{b}-{i}", full_name=f"Đảng viên {i}", unit_id=unit.id, role="member",
                             active=True) for i in range(members))
            s.flush()
            ids = s.scalars(select(Member.id).where(Member.unit_id == unit.id).order_by(Member.id)).all()
            users[key] = [f"{b + 2}{i:05d}" for i in range(members)]
            s.add_all(ChatAccount(channel="zalo", external_id=uid, member_id=mid, linked_at=now, bot_id=bot_pk)
                      for uid, mid in zip(users[key], ids))
        rebuild_closure(s)
        for doc in check_paths([REPO / "quizzes"]).documents:
            load_document(s, doc, now)
        open_round(s, "kh-64-tu-binh-phuoc", ["P"], now - timedelta(minutes=1), now + timedelta(days=1), 98, now)
    return users


def quiz(emu: ZaloEmulator, user) -> None:
    """/lambai typed, then ten answers typed, each delivered to the bot's webhook from this thread."""
    def say(text: str, marker: str) -> None:
        before = len(user.messages)
        user.send_text(text)
        emu.deliver_next()
        user.wait_for(lambda u: any(marker in (m.get("text") or "") for m in u.messages[before:]), timeout=60)

    say("lam bai", "Câu 1/10")
    for position in range(1, 11):
        say("a", f"Câu {position + 1}/10" if position < 10 else "lượt làm bài")


def announce(db: Database, default_branch: bool) -> int:
    """The round's announcement to the default bot's branch, or to every branch bot's members."""
    with db.session() as s:
        rnd = s.scalars(select(Round)).first()
        on_default = Member.code.like("M-1-%")
        ids = s.scalars(select(Member.id).where(on_default if default_branch else ~on_default)).all()
        return queue.enqueue_many(s, purpose="announce", keyed_members=[(f"announce:{rnd.id}:{m}", m) for m in ids],
                                  reply=announcement(rnd, TZ), now=utcnow(), round_id=rnd.id)


def timed(work) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(args: argparse.Namespace) -> None:
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bots.db"
    db = Database(url)
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    users = seed(db, args.bots, args.members, public)
    with ZaloEmulator(DEFAULT_TOKEN, "HocTap", worker=False) as default:
        emus = {None: default}
        for b in range(args.bots):
            emus[token_of(b)] = default.add_bot(token_of(b), f"Bot {b}", worker=False)
        with httpx.Client() as http:  # each bot's webhook, as ``hoctap zalo bots add`` sets it
            for b in range(args.bots):
                key = token_of(b)
                http.post(f"{default.base_url}/bot{key}/setWebhook",
                          json={"url": webhook_url(public, key.split(":")[0]),
                                "secret_token": f"bench-secret-{b:06d}"}).raise_for_status()
        drivers = {key: [emus[key].user(uid, "Đảng viên") for uid in ids] for key, ids in users.items()}
        rss_before = rss_mb()
        options = ZaloOptions(token=DEFAULT_TOKEN, api_base_url=default.base_url, mode="webhook",
                              webhook_secret="bench-secret-default", public_url=public, listen=f"127.0.0.1:{port}",
                              rate=args.bot_rate)
        service = ChatService(db, TRAITS, TZ, quiet=QUIET_HOURS_OFF)
        with BackgroundZalo(ZaloRuntime(options, service, bot_quota=MONTHLY_QUOTA)) as running:
            rss_started = rss_mb()
            fleet = running.runtime.fleet

            def quizzes(keys):
                def work():
                    jobs = [(emus[k], u) for k in keys for u in drivers[k]]
                    with ThreadPoolExecutor(args.concurrency) as pool:
                        list(pool.map(lambda job: quiz(*job), jobs))
                return work

            def send_all(default_branch: bool):
                def work():
                    expected = announce(db, default_branch)
                    sender = OutboxSender(db, {"zalo": running.runtime.transport}, rate=args.outbox_rate,
                                          per_chat_interval=0, idle_poll=0.05, max_in_flight=args.in_flight)
                    stats = running.run(sender.run(until_idle=True), timeout=None)
                    assert stats.sent == expected, (stats, expected)
                return work

            # quizzes first: a bot cannot write to a member who never wrote to it
            single_quiz = timed(quizzes([None]))
            fleet_quiz = timed(quizzes([k for k in emus if k is not None]))
            single_ann = timed(send_all(True))
            fleet_ann = timed(send_all(False))
            rss_after = rss_mb()
            cached, loads = len(fleet._bots), fleet.loads
        month = utcnow().astimezone(TZ).strftime("%Y-%m")
        with db.session() as s:
            pks = s.scalars(select(ZaloBot.id)).all()
            sent = dict(s.execute(select(ChannelUsage.channel, ChannelUsage.sent)
                                  .where(ChannelUsage.month == month)).all())
        per_bot = sorted(sent.get(usage_key(pk), 0) for pk in pks)
        default_sent = default.sent_count()
        for emu in emus.values():
            if emu is not default:
                emu.stop()
    db.dispose()

    single_updates, fleet_updates = args.members * UPDATES_PER_QUIZ, args.members * args.bots * UPDATES_PER_QUIZ
    kind = url.split(":")[0].split("+")[0]
    print(f"bots {args.bots} × members {args.members}, concurrency {args.concurrency}, database {kind}, "
          f"per-bot outbox rate {args.bot_rate:g}/s")
    print(QUIET_OFF)
    print(f"{'':<26}{'quiz updates/s':>15}{'CPU ms/update':>15}{'announcements/s':>17}")
    for name, ann, qz, updates, count in (("default bot (single)", single_ann, single_quiz, single_updates,
                                           args.members),
                                          (f"{args.bots} branch bots", fleet_ann, fleet_quiz, fleet_updates,
                                           args.members * args.bots)):
        print(f"{name:<26}{updates / qz[0]:>15.1f}{1000 * qz[1] / updates:>15.2f}{count / ann[0]:>17.1f}")
    print(f"process memory: {rss_before:.0f} MB with the emulator and database ready, {rss_started:.0f} MB "
          f"once the bots are served, {rss_after:.0f} MB after every quiz "
          "(the emulator's chats and the simulated members' threads included)")
    print(f"bots kept ready: {cached} (cache of {CACHE_SIZE}); bot look-ups in the database: {loads}")
    print(f"per-bot quota use in {month}: smallest {per_bot[0]}, median {statistics.median(per_bot):g}, "
          f"largest {per_bot[-1]} of {MONTHLY_QUOTA} (one announcement and one quiz per member); "
          f"default bot {default_sent} (its own quota)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=20)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--bot-rate", type=float, default=50.0, help="outbox messages per second per bot")
    parser.add_argument("--outbox-rate", type=float, default=500.0, help="outbox messages per second in all")
    parser.add_argument("--in-flight", type=int, default=64, help="outbox sends in flight at once")
    parser.add_argument("--database-url", help="an empty database (default: a fresh SQLite file)")
    add_wall_clock_option(parser)
    args = parser.parse_args()
    with wall_clock(args.wall_clock):
        run(args)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
