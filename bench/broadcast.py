"""A round announced to N members through the outbox and the Telegram emulator, at rate R.

Prints the wall time against the ideal N/R, duplicates and losses counted at the emulator, the
sender's CPU time per message and the sending process's memory; beside it, in the same run, a bare
loop of the same sends through the same transport and client with no database (the transport's own
cost). The emulator and the seeding run in processes of their own.

    python -m bench.broadcast [--members 100000] [--rate 1000] [--database-url URL] [--wall-clock ...]

The round opens and the sender runs on a pinned clock (``bench.clock``): the figures are the same
at any hour, quiet hours included.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import insert, select

from bench.clock import add_wall_clock_option, describe_pinned, pinned_clock, wall_clock
from bot.channels.telegram import TelegramTransport, sending_bot
from bot.content.load import load_document
from bot.content.validate import check_paths
from bot.domain.replies import Reply
from bot.emulators.telegram import TelegramEmulator
from bot.outbox.queue import QuietHours
from bot.outbox.sender import OutboxSender
from bot.roster.importer import rebuild_closure
from bot.scheduling.due import Schedule, run_due
from bot.services.rounds import open_round
from bot.storage.db import Database
from bot.storage.models import ChatAccount, Member, Unit
from bench.quiz_throughput import REPO

BASE_ID = 1_000_000


def seed(db: Database, members: int, now: datetime) -> None:
    db.upgrade()
    with db.session() as s:
        unit = Unit(code="P", name="Tỉnh thử")
        s.add(unit)
        s.flush()
        rebuild_closure(s)
        s.execute(insert(Member), [dict(code=f"M{i:06d}", full_name=f"Đảng viên {i}", unit_id=unit.id, role="member",
                                        active=True) for i in range(members)])
        ids = s.scalars(select(Member.id).order_by(Member.id)).all()
        s.execute(insert(ChatAccount), [dict(channel="telegram", external_id=str(BASE_ID + i), member_id=mid,
                                             linked_at=now) for i, mid in enumerate(ids)])
        for doc in check_paths([REPO / "quizzes"]).documents:
            load_document(s, doc, now)
        open_round(s, "kh-64-tu-binh-phuoc", ["P"], now - timedelta(minutes=1), now + timedelta(days=7), 98, now)


async def bare_sends(emu, count: int) -> tuple[float, float]:
    """The same sends with no outbox, through the same transport and client: what they and the
    emulator cost on their own. Returns (messages/s, CPU seconds per message of this thread)."""
    async with sending_bot(emu.token, emu.base_url) as bot, TelegramTransport(bot) as transport:
        started, cpu = time.perf_counter(), time.thread_time()
        sem = asyncio.Semaphore(24)  # as many in flight as the sender keeps

        async def one(i):
            async with sem:
                await transport.deliver(str(BASE_ID + i), Reply("baseline"), None)

        await asyncio.gather(*(one(i) for i in range(count)))
        return count / (time.perf_counter() - started), (time.thread_time() - cpu) / count


async def broadcast(db: Database, emu, rate: float, clock: Callable[[], datetime]):
    async with sending_bot(emu.token, emu.base_url) as bot, TelegramTransport(bot) as transport:
        sender = OutboxSender(db, {"telegram": transport}, rate=rate, per_chat_interval=1.0,
                              quiet=None, clock=clock)
        started, loop_cpu = time.perf_counter(), time.thread_time()
        stats = await sender.run(until_idle=True)
        stats.cpu_seconds += time.thread_time() - loop_cpu  # the event loop's share (HTTP client, pacing)
        return stats, time.perf_counter() - started


def rss_mb() -> tuple[float, float]:
    """This process's resident memory now and at its peak, in MB (Linux ``/proc``)."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("VmRSS", "VmHWM")))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--baseline", type=int, default=5000, help="sends in the bare baseline")
    parser.add_argument("--database-url")
    add_wall_clock_option(parser)
    args = parser.parse_args()
    with wall_clock(args.wall_clock):
        run(args)


def seed_and_enqueue(url: str, members: int, now: datetime) -> None:
    """In a process of its own, so that the sender's memory is measured without the seeding's."""
    t0 = time.perf_counter()
    db = Database(url)
    seed(db, members, now)
    report = run_due(db, now, Schedule(quiet=QuietHours()))
    print(f"seeded {members} linked members and enqueued {report.enqueued} announcements "
          f"in {time.perf_counter() - t0:.1f}s ({url.split(':')[0]})", flush=True)


def serve_emulator(members: int, conn) -> None:
    """The emulator in a process of its own (every member's chat started): the sending process is then
    measured alone, as a `hoctap run` would be. Answers "reset" (clear the log) and "count" (sends per chat)."""
    with TelegramEmulator(self_check=False) as emu:
        for i in range(members):
            emu.user(BASE_ID + i).send_text("/start")
        conn.send((emu.token, emu.base_url))
        while (command := conn.recv()) != "stop":
            if command == "reset":
                emu.reset_log()
                conn.send(None)
            else:
                conn.send(Counter(p["chat_id"] for m, p in emu.requests if m == "sendMessage"))


class EmulatorProcess:
    def __init__(self, members: int):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve_emulator, args=(members, child), daemon=True)

    def __enter__(self) -> EmulatorProcess:
        self.process.start()
        self.token, self.base_url = self.conn.recv()
        return self

    def ask(self, command: str):
        self.conn.send(command)
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        self.conn.send("stop")
        self.process.join(timeout=30)


def run(args: argparse.Namespace) -> None:
    import multiprocessing

    clock = pinned_clock()
    print(describe_pinned())
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/broadcast.db"
    seeding = multiprocessing.get_context("fork").Process(target=seed_and_enqueue, args=(url, args.members, clock()))
    seeding.start()
    seeding.join()
    db = Database(url)
    with EmulatorProcess(args.members) as emu:
        baseline, baseline_cpu = asyncio.run(bare_sends(emu, min(args.baseline, args.members)))
        emu.ask("reset")
        before_send = rss_mb()[0]
        stats, elapsed = asyncio.run(broadcast(db, emu, args.rate, clock))
        after_send = rss_mb()
        per_chat = emu.ask("count")
    ideal = args.members / args.rate
    duplicates = sum(n - 1 for n in per_chat.values() if n > 1)
    lost = args.members - len(per_chat)
    print(f"{'bare sends (no outbox)':<34}{baseline:>10.0f} messages/s, {1e6 * baseline_cpu:.0f} µs CPU per message")
    print(f"{'broadcast at rate':<34}{args.rate:>10.0f} messages/s requested")
    print(f"{'wall time':<34}{elapsed:>10.1f} s   (ideal {ideal:.1f} s, {100 * (elapsed / ideal - 1):+.1f}%)")
    print(f"{'achieved':<34}{args.members / elapsed:>10.0f} messages/s")
    print(f"{'sent / failed / retried':<34}{stats.sent:>10} / {stats.failed} / {stats.retried}")
    print(f"{'duplicates / lost':<34}{duplicates:>10} / {lost}")
    print(f"{'sender CPU per message':<34}{1e6 * stats.cpu_seconds / max(stats.sent, 1):>10.0f} µs")
    print(f"{'RSS sending: before / after / peak':<34}{before_send:>10.0f} / {after_send[0]:.0f} / {after_send[1]:.0f} MB"
          "   (the sending process alone: emulator and seeding run in processes of their own)")


if __name__ == "__main__":
    main()
