"""Many Zalo bots in one process: N branch bots × 50 members each on the Zalo emulator, beside the
default bot with 50 members of its own in the same run.

Every bot is registered (``zalo_bots``) with its own webhook at ``/zalo/<bot id>/webhook`` on the one
web server; the emulator serves all of them on one base URL and delivers each webhook from the
simulated member's thread (no thread per bot). The province is seeded in bulk (one executemany per
table), every member as one who already wrote to their bot. Every member gets the round's announcement
through the outbox (through their own bot, paced and counted per bot); then members take the whole
10-question quiz: all of them, or a sample (``--quiz-bots`` bots spread over the fleet, each with
``--quizzers-per-bot`` members), since 2,000 × 50 quizzes (1.1 million updates) take hours here.

Printed, for the branch bots and for the single default bot: announcements per second and CPU per
announcement, quiz updates per second and CPU per update (process CPU: the emulator and the simulated
members run in this process too, the same for both); the process's resident memory at each step;
bots kept ready and bots with traffic; per-bot quota use this month (smallest, median, largest of the
monthly 3,000), beside the default bot's.

    python -m bench.zalo_bots [--bots 20] [--members 50] [--concurrency 8] [--bot-rate 50]
    python -m bench.zalo_bots --bots 2000 --quiz-bots 200 --quizzers-per-bot 1   # 100,000 announced
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
from sqlalchemy import insert, select

from bench.clock import QUIET_HOURS_OFF, QUIET_OFF, add_wall_clock_option, wall_clock

from bench.quiz_throughput import REPO, UPDATES_PER_QUIZ
from bot.emulators.common import free_port
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


def secret_of(n: int) -> str:
    return f"bench-secret-{n:06d}"


def seed(db: Database, bots: int, members: int) -> dict[str | None, list[str]]:
    """A province of ``bots`` branches with a bot each and one branch on the default bot, ``members``
    members each, linked on Zalo; an open round for all. Written with one executemany per table.
    Returns the members' Zalo user ids per bot token (None: the default bot)."""
    from bot.roster.importer import rebuild_closure

    db.upgrade()
    now = utcnow()
    with db.session() as s:
        root = Unit(code="P", name="Tỉnh thử")
        s.add(root)
        s.flush()
        s.execute(insert(Unit), [{"code": f"B{b}", "name": f"Chi bộ {b}", "parent_id": root.id}
                                 for b in range(-1, bots)])
        units = dict(s.execute(select(Unit.id, Unit.code)).all())
        branch = {uid: int(code[1:]) for uid, code in units.items() if code != "P"}
        unit_of = {b: uid for uid, b in branch.items()}
        if bots:
            s.execute(insert(ZaloBot), [
                {"zalo_id": token_of(b).split(":")[0], "unit_id": unit_of[b], "name": f"Bot {b}", "token": token_of(b),
                 "webhook_secret": secret_of(b), "mode": "webhook", "created_at": now} for b in range(bots)])
        bot_of_unit = dict(s.execute(select(ZaloBot.unit_id, ZaloBot.id)).all())
        s.execute(insert(Member), [{"code": f"M{b}-{i}", "full_name": f"Đảng viên {i}", "unit_id": unit_of[b],
                                    "role": "member", "active": True} for b in range(-1, bots) for i in range(members)])
        rows = s.execute(select(Member.id, Member.unit_id).order_by(Member.id)).all()
        s.execute(insert(ChatAccount), [{"channel": "zalo", "external_id": str(10_000_000 + mid), "member_id": mid,
                                         "linked_at": now, "last_seen_at": now, "bot_id": bot_of_unit.get(uid)}
                                        for mid, uid in rows])
        rebuild_closure(s)
        for doc in check_paths([REPO / "quizzes"]).documents:
            load_document(s, doc, now)
        open_round(s, "kh-64-tu-binh-phuoc", ["P"], now - timedelta(minutes=1), now + timedelta(days=1), 98, now)
    users: dict[str | None, list[str]] = {}
    for mid, uid in rows:
        b = branch[uid]
        users.setdefault(token_of(b) if b >= 0 else None, []).append(str(10_000_000 + mid))
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


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def timed(work) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def zalo_users(db: Database) -> dict[str | None, list[str]]:
    """Each bot's members' Zalo user ids, read back from the seeded database (None: the default bot)."""
    with db.session() as s:
        rows = s.execute(select(ChatAccount.external_id, Unit.code).join(Member, Member.id == ChatAccount.member_id)
                         .join(Unit, Unit.id == Member.unit_id).order_by(ChatAccount.id)).all()
    users: dict[str | None, list[str]] = {}
    for user_id, code in rows:
        b = int(code[1:])
        users.setdefault(token_of(b) if b >= 0 else None, []).append(user_id)
    return users


def seed_in_child(url: str, bots: int, members: int) -> None:
    """Seeding in a process of its own, so the serving process's memory is measured without it."""
    seed(Database(url), bots, members)


def serve_emulator(url: str, bots: int, public: str, conn) -> None:
    """The Zalo emulator, every bot's webhook set, and the simulated members, in a process of their own:
    the serving process's CPU and memory are then its own, as a `hoctap run`'s would be. Commands:
    ("quizzes", bot keys, members per bot, concurrency), ("sent",), ("stop",)."""
    users = zalo_users(Database(url))
    with ZaloEmulator(DEFAULT_TOKEN, "HocTap", worker=False) as default:
        emus = {None: default}
        for b in range(bots):
            emus[token_of(b)] = default.add_bot(token_of(b), f"Bot {b}", worker=False)
        with httpx.Client() as http:  # each bot's webhook, as ``hoctap zalo bots add`` sets it
            for b in range(bots):
                key = token_of(b)
                http.post(f"{default.base_url}/bot{key}/setWebhook",
                          json={"url": webhook_url(public, key.split(":")[0]),
                                "secret_token": secret_of(b)}).raise_for_status()
        drivers = {key: [emus[key].user_who_wrote_before(uid, "Đảng viên") for uid in ids]
                   for key, ids in users.items()}
        conn.send(default.base_url)
        while (command := conn.recv())[0] != "stop":
            if command[0] == "quizzes":
                _, keys, count, concurrency = command
                jobs = [(emus[k], u) for k in keys for u in drivers[k][:count]]
                with ThreadPoolExecutor(concurrency) as pool:
                    list(pool.map(lambda job: quiz(*job), jobs))
                conn.send(None)
            else:
                conn.send(default.sent_count())
        for emu in emus.values():
            if emu is not default:
                emu.stop()


def run(args: argparse.Namespace) -> None:
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bots.db"
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    print(f"machine load at the start (1, 5, 15 min): {load()}", flush=True)

    def seed_elsewhere():
        seeding = fork.Process(target=seed_in_child, args=(url, args.bots, args.members))
        seeding.start()
        seeding.join()
        assert seeding.exitcode == 0, "seeding failed"

    seeded = timed(seed_elsewhere)
    print(f"seeded {args.bots + 1} branches × {args.members} members in {seeded[0]:.1f} s", flush=True)
    quiz_bots = args.bots if args.quiz_bots is None else min(args.quiz_bots, args.bots)
    step = args.bots / quiz_bots if quiz_bots else 0
    quizzing = [token_of(int(k * step)) for k in range(quiz_bots)]  # spread over the fleet
    per_bot = args.members if args.quizzers_per_bot is None else min(args.quizzers_per_bot, args.members)
    conn, child = fork.Pipe()
    emulator = fork.Process(target=serve_emulator, args=(url, args.bots, public, child), daemon=True)
    emulator.start()
    base_url = conn.recv()

    def ask(*command):
        conn.send(command)
        return conn.recv()

    db = Database(url)
    rss_before = rss_mb()
    options = ZaloOptions(token=DEFAULT_TOKEN, api_base_url=base_url, mode="webhook",
                          webhook_secret="bench-secret-default", public_url=public, listen=f"127.0.0.1:{port}",
                          rate=args.bot_rate)
    service = ChatService(db, TRAITS, TZ, quiet=QUIET_HOURS_OFF)
    with BackgroundZalo(ZaloRuntime(options, service, bot_quota=MONTHLY_QUOTA)) as running:
        rss_started = rss_mb()
        fleet = running.runtime.fleet

        def quizzes(keys, count):
            return lambda: ask("quizzes", keys, count, args.concurrency)

        def send_all(default_branch: bool):
            def work():
                expected = announce(db, default_branch)
                sender = OutboxSender(db, {"zalo": running.runtime.transport}, rate=args.outbox_rate,
                                      per_chat_interval=0, idle_poll=0.05, max_in_flight=args.in_flight)
                stats = running.run(sender.run(until_idle=True), timeout=None)
                assert stats.sent == expected, (stats, expected)
            return work

        single_ann = timed(send_all(True))
        print(f"default bot: {args.members} announced in {single_ann[0]:.1f} s", flush=True)
        fleet_ann = timed(send_all(False))
        rss_announced = rss_mb()
        print(f"branch bots: {args.bots * args.members} announced in {fleet_ann[0]:.1f} s "
              f"(RSS {rss_announced:.0f} MB)", flush=True)
        single_quiz = timed(quizzes([None], args.members))
        print(f"default bot: {args.members} quizzes in {single_quiz[0]:.1f} s", flush=True)
        fleet_quiz = timed(quizzes(quizzing, per_bot))
        print(f"branch bots: {quiz_bots * per_bot} quizzes in {fleet_quiz[0]:.1f} s", flush=True)
        rss_after = rss_mb()
        cached, loads = len(fleet._bots), fleet.loads
    month = utcnow().astimezone(TZ).strftime("%Y-%m")
    with db.session() as s:
        pks = s.scalars(select(ZaloBot.id)).all()
        sent = dict(s.execute(select(ChannelUsage.channel, ChannelUsage.sent)
                              .where(ChannelUsage.month == month)).all())
    used = sorted(sent.get(usage_key(pk), 0) for pk in pks)
    default_sent = ask("sent")
    conn.send(("stop",))
    emulator.join(timeout=60)
    db.dispose()

    kind = url.split(":")[0].split("+")[0]
    print(f"bots {args.bots} × members {args.members}, database {kind}, quiz concurrency {args.concurrency}, "
          f"per-bot outbox rate {args.bot_rate:g}/s, outbox rate {args.outbox_rate:g}/s, {args.in_flight} in flight")
    print(QUIET_OFF)
    print("CPU is the serving process's own (the emulator, the simulated members and the seeding run in "
          "processes of their own)")
    print(f"{'':<24}{'announced':>10}{'ann./s':>8}{'CPU ms/ann.':>12}{'quizzes':>9}{'upd./s':>8}"
          f"{'CPU ms/upd.':>12}")
    for name, ann, announced, qz, quizzed in (
            ("default bot (single)", single_ann, args.members, single_quiz, args.members),
            (f"{args.bots} branch bots", fleet_ann, args.members * args.bots, fleet_quiz, quiz_bots * per_bot)):
        updates = quizzed * UPDATES_PER_QUIZ
        print(f"{name:<24}{announced:>10}{announced / ann[0]:>8.1f}{1000 * ann[1] / announced:>12.2f}{quizzed:>9}"
              f"{updates / qz[0] if updates else 0:>8.1f}{1000 * qz[1] / updates if updates else 0:>12.2f}")
    print(f"serving process memory (RSS): {rss_before:.0f} MB with the database ready; {rss_started:.0f} MB once "
          f"the {args.bots + 1} bots are served; {rss_announced:.0f} MB after the announcements; {rss_after:.0f} MB "
          f"after the quizzes")
    print(f"bots kept ready: {cached} (cache of {CACHE_SIZE}); bot look-ups in the database: {loads}; "
          f"bots with traffic: {sum(1 for n in used if n)} of {len(used)}")
    if used:
        print(f"per-bot quota use in {month}: smallest {used[0]}, median {statistics.median(used):g}, "
              f"largest {used[-1]} of {MONTHLY_QUOTA} (the announcement, and {per_bot} quiz(zes) on "
              f"{quiz_bots} bots); default bot {default_sent} (its own quota: {args.members} announcements and "
              f"quizzes)")
    print(f"machine load at the end (1, 5, 15 min): {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=20)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quiz-bots", type=int, help="branch bots whose members take the quiz (default: all)")
    parser.add_argument("--quizzers-per-bot", type=int, help="members of each of those bots who take it (default: all)")
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
