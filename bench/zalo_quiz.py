"""Members taking whole 10-question quizzes on the Zalo emulator, beside the Telegram figure.

The same simulated members (typing on Zalo, pressing buttons on Telegram) drive the real bots over
HTTP in one process: the Zalo bot by long polling and by webhook, the Telegram bot by long polling,
each on a fresh database of its own. Printed: updates per second on the quiz path, messages the
bot sent per quiz (Zalo: every question is a new message; Telegram: sends and edits), and the
Zalo/Telegram ratio.

Zalo's polling returns one update per call, and the platform asks for at most about one call a
second while updates flow: the polling figure is measured without that pause (``--poll-interval
0``) to show the product's own cost; with it, polling serves at most about one update a second,
which is why a busy deployment uses the webhook.

    python -m bench.zalo_quiz [--members 40] [--concurrency 8] [--poll-interval 0] [--database-url URL]
                              [--wall-clock ...]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bench.clock import QUIET_HOURS_OFF, QUIET_OFF, add_wall_clock_option, wall_clock
from bench.quiz_throughput import UPDATES_PER_QUIZ, run_quiz
from bench.seeding import seed_branch
from bot.channels.zalo import TRAITS, BackgroundZalo, ZaloOptions, ZaloRuntime
from bot.emulators.common import free_port
from bot.emulators.telegram import TelegramEmulator
from bot.emulators.zalo import ZaloEmulator
from bot.services.chat import ChatService
from bot.storage.db import Database
from bot.storage.models import Attempt


def zalo_member(user) -> None:
    """/lambai typed, then ten answers typed; each reply is a new message."""
    def wait(before: int, marker: str) -> None:
        user.wait_for(lambda u: any(marker in (m.get("text") or "") for m in u.messages[before:]), timeout=60)

    before = len(user.messages)
    user.send_text("lam bai")
    wait(before, "Câu 1/10")
    for position in range(1, 11):
        before = len(user.messages)
        user.send_text("a")
        wait(before, f"Câu {position + 1}/10" if position < 10 else "lượt làm bài")


def run_zalo(members: int, concurrency: int, url: str, mode: str, poll_interval: float) -> tuple[float, float]:
    """Returns (quiz-path updates per second, messages sent per quiz)."""
    db = Database(url)
    ids = [zalo_id for _mid, zalo_id in seed_branch(db, members, "zalo", lambda i: f"{7_000_000_000 + i}")]
    with ZaloEmulator() as emu:
        users = [emu.user(uid, f"Đảng viên {i}") for i, uid in enumerate(ids)]
        service = ChatService(db, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"), quiet=QUIET_HOURS_OFF)
        port = free_port()
        options = ZaloOptions(token=emu.token, api_base_url=emu.base_url, mode=mode, poll_timeout=2,
                              poll_interval=poll_interval, webhook_secret="bench-secret-123",
                              public_url=f"http://127.0.0.1:{port}" if mode == "webhook" else None,
                              listen=f"127.0.0.1:{port}")
        with BackgroundZalo(ZaloRuntime(options, service)):
            emu.reset_log()
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(zalo_member, users))
            elapsed = time.perf_counter() - start
            sends = settled_sends(emu)
    with db.session() as s:
        done = len(s.scalars(select(Attempt).where(Attempt.submitted_at.is_not(None))).all())
    db.dispose()
    assert done == members, f"only {done} of {members} quizzes were submitted"
    return members * UPDATES_PER_QUIZ / elapsed, sends / members


def settled_sends(emu: ZaloEmulator) -> int:
    """The messages sent, once the last ones are out: a member's wait ends at the result's first part, and the
    review's parts of the last members are still on their way then."""
    count, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 0.5:
        now = sum(1 for m, _ in emu.requests if m in ("sendMessage", "sendPhoto"))
        if now != count:
            count, stable_since = now, time.monotonic()
        time.sleep(0.05)
    return count


def client_ms() -> float:
    """What creating one httpx.Client costs here (the emulator makes one per webhook delivery)."""
    import httpx

    start = time.perf_counter()
    for _ in range(10):
        httpx.Client().close()
    return (time.perf_counter() - start) * 100


def empty(url: str) -> None:
    from sqlalchemy import text

    from bot.storage.models import Base

    db = Database(url)
    Base.metadata.drop_all(db.engine)
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--poll-interval", type=float, default=0.0,
                        help="seconds between Zalo polls while busy (the platform asks for about 1)")
    parser.add_argument("--database-url", help="an empty database to use (emptied before each run); "
                                                   "default: fresh SQLite files")
    add_wall_clock_option(parser)
    args = parser.parse_args()
    with wall_clock(args.wall_clock):
        run(args)


def run(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp()

    def url(name: str) -> str:
        if not args.database_url:
            return f"sqlite:///{tmp}/{name}.db"
        empty(args.database_url)
        return args.database_url

    polling, per_quiz = run_zalo(args.members, args.concurrency, url("zalo_polling"), "polling", args.poll_interval)
    webhook, per_quiz_hook = run_zalo(args.members, args.concurrency, url("zalo_webhook"), "webhook", 0)
    with TelegramEmulator() as emu:  # the Telegram baseline, as bench.quiz_throughput measures it
        telegram, _quizzes, tg_per_quiz, *_ = run_quiz(emu, args.members, args.concurrency, url("telegram"))
    kind = (args.database_url or "sqlite").split(":")[0].split("+")[0]
    print(f"members {args.members}, concurrency {args.concurrency}, database {kind}")
    print(QUIET_OFF)
    print(f"{'Telegram quiz path':<34}{telegram:>9.1f} updates/s   {tg_per_quiz:>5.1f} messages sent or edited per quiz")
    print(f"{'Zalo quiz path, polling':<34}{polling:>9.1f} updates/s   {per_quiz:>5.1f} messages sent per quiz"
          f"   (poll interval {args.poll_interval:g} s)")
    print(f"{'Zalo quiz path, webhook':<34}{webhook:>9.1f} updates/s   {per_quiz_hook:>5.1f} messages sent per quiz")
    print(f"{'ratio Zalo polling / Telegram':<34}{polling / telegram:>9.2f}")
    print(f"{'ratio Zalo webhook / Telegram':<34}{webhook / telegram:>9.2f}")
    print(f"(the emulator delivers webhooks one at a time, each with a new HTTP client of {client_ms():.0f} ms: "
          f"at most ~{1000 / client_ms():.0f} updates/s)")
    print("Zalo polling at the platform's pace (about 1 call/s, one update per call) serves at most ~1 update/s.")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
