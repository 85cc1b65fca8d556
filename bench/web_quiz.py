"""The study page against the chat: messages a Zalo member costs per round, and quiz answers per second.

1. Outbound Zalo messages per member per round, with and without the page. The real scheduler
   (announcement, reminders 3 and 1 days before the deadline) and outbox deliver to the Zalo
   emulator, and the real Zalo bot answers the members. Half the members finish before the first
   reminder, half after it. Without the page a member reads (HỌC, 1) and answers ten questions in
   chat; with it they open the link from the announcement and do it all on the page, and half of them
   then ask the chat for their result (KẾT QUẢ). Target with the page: at most 3.
2. Answers per second through HTTP (clients answering whole quizzes on the page, one server
   process) beside the chat path's updates per second (the Telegram bot in one process, as
   bench/quiz_throughput.py), in the same run and on the same kind of database.

    python -m bench.web_quiz [--members 40] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, time as clock_time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select

from bench.quiz_throughput import run_quiz
from bot.emulators.telegram import TelegramEmulator
from bench.seeding import seed_branch
from bench.zalo_quiz import zalo_member
from bot.channels.zalo import TRAITS, BackgroundZalo, ZaloClient, ZaloOptions, ZaloRuntime, ZaloTransport
from bot.emulators.zalo import ZaloEmulator
from bot.outbox.queue import QuietHours
from bot.outbox.sender import OutboxSender
from bot.scheduling.due import Schedule, latest_reminder_slot, run_due
from bot.services.chat import ChatService
from bot.storage.db import Database
from bot.storage.models import Answer, Attempt, Round
from bot.webapp.server import BackgroundPages

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
SECRET = b"bench-web-secret-0123456789abcdef"
ALWAYS = QuietHours(clock_time(0, 0), clock_time(0, 0), TZ)  # no quiet hours: the bench runs any time
LINK = re.compile(r"http://127\.0\.0\.1:\d+/hoc/l/\S+")


def deliver(db: Database, emu: ZaloEmulator, at: datetime) -> None:
    async def go():
        client = ZaloClient(emu.token, emu.base_url)
        try:
            sender = OutboxSender(db, {"zalo": ZaloTransport(client, rate=1000)}, clock=lambda: at, rate=1000,
                                  per_chat_interval=0.0)
            await sender.run(until_idle=True)
        finally:
            await client.aclose()

    asyncio.run(go())


def page_member(client: httpx.Client, link: str) -> int:
    """Open the link, start the quiz, answer all ten questions; returns the HTTP requests made."""
    requests = 0
    page = client.get(link)
    requests += 1 + len(page.history)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    page = client.post(page.url.join(re.search(r'action="([^"]*/lambai)"', page.text).group(1)), data={"csrf": token})
    requests += 1 + len(page.history)
    while "Kết quả bài kiểm tra" not in page.text:
        position = re.search(r'name="position" value="(\d+)"', page.text).group(1)
        page = client.post(str(page.url), data={"csrf": token, "position": position, "chon": 0})
        requests += 1 + len(page.history)
    return requests


def chat_reader(user) -> None:
    """Reading in chat: the round list, then the summary."""
    for text in ("hoc", "1"):
        before = len(user.messages)
        user.send_text(text)
        user.wait_for(lambda u: len(u.messages) > before, timeout=30)
    time.sleep(0.2)  # a long summary comes in several messages


def seed(db: Database, members: int) -> list[str]:
    """A branch of ``members`` members linked on Zalo and an open round; their Zalo ids."""
    return [zalo_id for _mid, zalo_id in seed_branch(db, members, "zalo", lambda i: f"{7_000_000_000 + i}")]


def round_of_messages(members: int, concurrency: int, url: str, *, with_page: bool) -> Counter:
    """Zalo messages each member received over a whole round."""
    db = Database(url)
    ids = seed(db, members)
    with db.session() as s:
        rnd = s.scalar(select(Round))
        rnd.opens_at, rnd.closes_at = rnd.opens_at - timedelta(days=1), rnd.opens_at + timedelta(days=10)
        opens, closes = rnd.opens_at, rnd.closes_at
    with ZaloEmulator() as emu, BackgroundPages(db, SECRET, tz=TZ) as pages:
        links = pages.links if with_page else None
        schedule = Schedule(tz=TZ, quiet=ALWAYS, links=links)
        service = ChatService(db, TRAITS, TZ, study_links=links)
        options = ZaloOptions(token=emu.token, api_base_url=emu.base_url, poll_timeout=2, poll_interval=0.0)
        users = [emu.user(uid, f"Đảng viên {i}") for i, uid in enumerate(ids)]
        with BackgroundZalo(ZaloRuntime(options, service)):
            for user in users:  # they wrote to the bot once (when they linked): not this round's cost
                user.send_text("tro giup")
                user.wait_for(lambda u: bool(u.messages), timeout=30)
            emu.reset_log()
            sent_before = len(emu.requests)
            run_due(db, opens + timedelta(minutes=1), schedule)
            deliver(db, emu, opens + timedelta(minutes=1))

            def take_part(user) -> None:
                if with_page:
                    link = next(m.group(0) for msg in user.messages if (m := LINK.search(msg.get("text") or "")))
                    with httpx.Client(follow_redirects=True, timeout=30) as client:
                        page_member(client, link)
                else:
                    chat_reader(user)
                    zalo_member(user)

            early, late = users[: members // 2], users[members // 2:]
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(take_part, early))
            with db.session() as s:
                slots = sorted({latest_reminder_slot(s.get(Round, 1), closes - timedelta(days=d, hours=-1), schedule)
                                for d in schedule.reminder_days_before} - {None})
            run_due(db, slots[0], schedule)
            deliver(db, emu, slots[0])
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(take_part, late))
            for slot in slots[1:]:
                run_due(db, slot, schedule)
                deliver(db, emu, slot)
            if with_page:  # half of them ask the chat for their result
                for user in users[::2]:
                    before = len(user.messages)
                    user.send_text("ket qua")
                    user.wait_for(lambda u: len(u.messages) > before, timeout=30)
            time.sleep(0.3)
            sent = Counter(str(p.get("chat_id")) for m, p in emu.requests[sent_before:]
                           if m in ("sendMessage", "sendPhoto"))
    with db.session() as s:
        done = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.submitted_at.is_not(None)))
    db.dispose()
    assert done == members, f"only {done} of {members} quizzes were submitted"
    return Counter({uid: sent.get(uid, 0) for uid in ids})


def answers_per_second(members: int, concurrency: int, url: str) -> tuple[float, float]:
    """(answers/s, HTTP requests/s) of clients answering whole quizzes on the page."""
    db = Database(url)
    seed(db, members)
    from bot.storage.models import Member

    with db.session() as s:
        member_ids = list(s.scalars(select(Member.id).order_by(Member.id)))
    with BackgroundPages(db, SECRET, tz=TZ) as pages:
        with db.session() as s:
            links = [pages.links.for_member(s, mid, datetime.now(TZ), round_id=1).url for mid in member_ids]

        def one(link: str) -> int:
            with httpx.Client(follow_redirects=True, timeout=60) as client:
                return page_member(client, link)

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            requests = sum(pool.map(one, links))
        elapsed = time.perf_counter() - start
    with db.session() as s:
        answers = s.scalar(select(func.count()).select_from(Answer))
    db.dispose()
    assert answers == members * 10, f"{answers} answers recorded, expected {members * 10}"
    return answers / elapsed, requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    without = round_of_messages(args.members, args.concurrency, f"sqlite:///{tmp}/without.db", with_page=False)
    with_page = round_of_messages(args.members, args.concurrency, f"sqlite:///{tmp}/with.db", with_page=True)
    http_answers, http_requests = answers_per_second(args.members, args.concurrency, f"sqlite:///{tmp}/http.db")
    with TelegramEmulator() as emu:  # the chat's quiz path, its bot in a process of its own
        chat_updates, *_ = run_quiz(emu, args.members, args.concurrency, f"sqlite:///{tmp}/chat.db")
    n = args.members
    print(f"members {n}, concurrency {args.concurrency}, database sqlite, one server process each")
    print("Zalo messages sent per member over a round (announcement, reminders, the chat's replies):")
    for name, sent in (("without the page", without), ("with the page", with_page)):
        values = list(sent.values())
        print(f"  {name:<20}{sum(values) / n:>7.1f} on average   max {max(values):>3}   min {min(values):>3}")
    target = "met" if max(with_page.values()) <= 3 else "NOT met"
    print(f"  target with the page: at most 3 per member: {target}")
    print("Quiz throughput:")
    print(f"  {'page over HTTP':<20}{http_answers:>7.1f} answers/s   ({http_requests:.1f} HTTP requests/s)")
    print(f"  {'chat (Telegram)':<20}{chat_updates:>7.1f} updates/s   (/lambai and ten answers per quiz)")
    print(f"  {'ratio page / chat':<20}{http_answers / chat_updates:>7.2f}")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
