"""Members taking whole quizzes through the Telegram emulator, beside a bare echo bot.

Both bots run the real python-telegram-bot Application with the same update processor, each in a
process of its own, long-polling the same emulator over HTTP (in this process), driven by the same
simulated members in the same run. The figure that counts is the ratio of the
two update rates: what the product's work (database, quiz logic) costs over bare transport.

A third bot, the *button floor*, takes the same quiz with no work at all: it answers each press with
the two Bot API calls the product makes (the toast, the edit to the next question) and keeps nothing.
It is what any bot with inline buttons pays on this machine, so it splits the gap between echo and quiz
into what Telegram's button protocol costs and what the product's own work costs.

    python -m bench.quiz_throughput [--members 40] [--concurrency 8] [--database-url URL] [--wall-clock ...]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import event, select
from telegram import Update
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, ContextTypes, MessageHandler, filters

from bench.clock import QUIET_HOURS_OFF, QUIET_OFF, add_wall_clock_option, wall_clock
from bot.channels.telegram import TRAITS, BackgroundBot, PerChatUpdateProcessor, TelegramChannel
from bot.channels.telegram_request import AiohttpRequest
from bot.content.load import load_document
from bot.content.validate import check_paths
from bot.emulators.telegram import TelegramEmulator
from bot.services.chat import ChatService
from bot.services.rounds import open_round
from bot.storage.db import Database
from bot.storage.models import Attempt, ChatAccount, Member, Unit
from bot.timeutil import utcnow

REPO = Path(__file__).resolve().parents[1]
UPDATES_PER_QUIZ = 11  # /lambai and ten answers


def seed(db: Database, members: int) -> list[int]:
    """A branch of ``members`` linked members and an open round; returns their Telegram ids."""
    db.upgrade()
    now = utcnow()
    with db.session() as s:
        unit = Unit(code="B", name="Chi bộ thử")
        s.add(unit)
        s.flush()
        from bot.roster.importer import rebuild_closure

        rebuild_closure(s)
        ids = []
        for i in range(members):
            m = Member(code=f"M{i:05d}", full_name=f"Đảng viên {i}", unit_id=unit.id, role="member", active=True)
            s.add(m)
            s.flush()
            s.add(ChatAccount(channel="telegram", external_id=str(10_000 + i), member_id=m.id, linked_at=now))
            ids.append(10_000 + i)
        for doc in check_paths([REPO / "quizzes"]).documents:
            load_document(s, doc, now)
        open_round(s, "kh-64-tu-binh-phuoc", ["B"], now - timedelta(minutes=1), now + timedelta(days=1), 98, now)
    return ids


def drive(emu: TelegramEmulator, user_ids: list[int], concurrency: int, one_member) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda uid: one_member(emu.user(uid)), user_ids))
    return time.perf_counter() - start


LATENCIES: list[float] = []  # seconds from a member's message or press to what it brings, this phase


def echo_member(user) -> None:
    for i in range(UPDATES_PER_QUIZ):
        sent = time.perf_counter()
        user.send_text(f"tin nhắn {i}")
        user.wait_for(lambda u, i=i: (u.last() or {}).get("text") == f"tin nhắn {i}", timeout=30)
        LATENCIES.append(time.perf_counter() - sent)


def quiz_member(user) -> None:
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""), timeout=30)
    for position in range(1, 11):
        pressed = time.perf_counter()
        user.press("A", message_id=q["message_id"])
        marker = f"Câu {position + 1}/10" if position < 10 else "Kết quả bài kiểm tra"
        user.wait_for(lambda u: any(marker in m.get("text", "") for m in u.recent(2)), timeout=30)
        LATENCIES.append(time.perf_counter() - pressed)


def latency() -> str:
    """Median and 95th percentile of this phase's latencies, then a fresh list for the next phase."""
    values = sorted(LATENCIES)
    LATENCIES.clear()
    return f"{1000 * statistics.median(values):.0f} / {1000 * values[int(0.95 * (len(values) - 1))]:.0f} ms"


FLOOR_QUESTION = ("Câu {n}/10\n\nTheo Kết luận, nhiệm vụ trọng tâm của tỉnh trong nhiệm kỳ tới là gì?\n\n"
                  "A. Phát triển kinh tế nhanh và bền vững gắn với bảo vệ môi trường\n"
                  "B. Xây dựng Đảng bộ và hệ thống chính trị trong sạch, vững mạnh toàn diện\n"
                  "C. Đẩy mạnh chuyển đổi số, cải cách hành chính\nD. Cả ba ý trên")


def floor_markup(n: int) -> dict:
    return {"inline_keyboard": [[{"text": c, "callback_data": f"floor:{n}:{c}"} for c in pair]
                                for pair in (("A", "B"), ("C", "D"))]}


async def floor_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The button floor's first question (any text starts it)."""
    await context.bot.do_api_request("sendMessage", api_kwargs={
        "chat_id": update.effective_message.chat_id, "text": FLOOR_QUESTION.format(n=1),
        "reply_markup": floor_markup(1)})


async def floor_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The two calls the product makes for an answer, and nothing else: the toast, the edit."""
    query = update.callback_query
    n = int(query.data.split(":")[1]) + 1
    edit = {"chat_id": query.message.chat.id, "message_id": query.message.message_id}
    if n <= 10:
        edit |= {"text": FLOOR_QUESTION.format(n=n), "reply_markup": floor_markup(n)}
    else:
        edit |= {"text": "Kết quả bài kiểm tra: 10/10 câu đúng."}
    await asyncio.gather(  # at once, as the product sends them
        context.bot.do_api_request("answerCallbackQuery", api_kwargs={"callback_query_id": query.id}),
        context.bot.do_api_request("editMessageText", api_kwargs=edit))


def serve(kind: str, token: str, base_url: str, url: str | None, ready, stop, cpu) -> None:
    """One bot in a process of its own (``echo``, ``buttons`` or ``quiz``), long-polling the emulator until ``stop``.

    Both get the product's update processor (``PerChatUpdateProcessor``) and its request class
    (``AiohttpRequest``), and send the way the product does where it can (the raw ``do_api_request``, no ``Message``
    built per answer): the echo bot differs only in doing no work, so the ratio is what the
    product's work costs."""
    if kind == "echo":
        async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            # the raw call, as the quiz bot's edits and toasts: no Message built from the answer
            message = update.effective_message
            await context.bot.do_api_request("sendMessage", api_kwargs={"chat_id": message.chat_id,
                                                                        "text": message.text})

        app = (ApplicationBuilder().token(token).base_url(base_url)
               .request(AiohttpRequest()).get_updates_request(AiohttpRequest(connections=1))
               .concurrent_updates(PerChatUpdateProcessor()).build())
        app.add_handler(MessageHandler(filters.TEXT, echo))
    elif kind == "buttons":
        app = (ApplicationBuilder().token(token).base_url(base_url)
               .request(AiohttpRequest()).get_updates_request(AiohttpRequest(connections=1))
               .concurrent_updates(PerChatUpdateProcessor()).build())
        app.add_handler(MessageHandler(filters.TEXT, floor_start))
        app.add_handler(CallbackQueryHandler(floor_press))
    else:
        service = ChatService(Database(url), TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"), quiet=QUIET_HOURS_OFF)
        app = TelegramChannel(service).build(token, base_url)
    with BackgroundBot(app):
        started = time.process_time()
        ready.set()
        stop.wait()
        cpu.value = time.process_time() - started  # the whole process: PTB, HTTP, handlers, database


def in_own_process(kind: str, emu: TelegramEmulator, url: str | None, members: list[int], concurrency: int,
                   one_member) -> tuple[float, float, float]:
    """Seconds for ``members`` to do their part against a bot of ``kind`` running in a child
    process, the CPU seconds that process spent meanwhile (less sensitive to a busy machine), and
    the CPU seconds of this process (the emulator and the simulated members: on two cores what they
    take is not the bot's)."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop, cpu = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
    child = ctx.Process(target=serve, args=(kind, emu.token, emu.base_url, url, ready, stop, cpu), daemon=True)
    child.start()
    try:
        if not ready.wait(120):
            raise RuntimeError(f"the {kind} bot did not start")
        harness = time.process_time()
        elapsed = drive(emu, members, concurrency, one_member)
        harness = time.process_time() - harness
    finally:
        stop.set()
        child.join(30)
    return elapsed, cpu.value, harness


def statements_per_answer(url: str, telegram_id: int) -> list[int]:
    """SQL statements each of one member's ten answers issues (BEGIN counted, COMMIT not), through
    the ChatService directly, counted with a SQLAlchemy ``before_cursor_execute`` listener."""
    db = Database(url)
    service = ChatService(db, TRAITS, ZoneInfo("Asia/Ho_Chi_Minh"), quiet=QUIET_HOURS_OFF)
    count = [0]
    event.listen(db.engine, "before_cursor_execute", lambda *_: count.__setitem__(0, count[0] + 1))
    outcome = service.on_text(str(telegram_id), "/lambai", utcnow(), "count:0")
    per_answer = []
    for n in range(1, 11):
        action = outcome.replies[-1].choices[0][0].action
        count[0] = 0
        outcome = service.on_action(str(telegram_id), action, utcnow(), f"count:{n}")
        per_answer.append(count[0])
    db.dispose()
    return per_answer


def run_quiz(emu: TelegramEmulator, members: int, concurrency: int, url: str):
    db = Database(url)
    ids = seed(db, members + 1)
    counted = ids.pop()  # a member kept aside for counting statements
    db.dispose()
    emu.reset_log()
    elapsed, cpu, harness = in_own_process("quiz", emu, url, ids, concurrency, quiz_member)
    sends = sum(1 for m, _ in emu.requests if m in ("sendMessage", "editMessageText"))
    db = Database(url)
    with db.session() as s:
        done = len(s.scalars(select(Attempt).where(Attempt.submitted_at.is_not(None))).all())
    db.dispose()
    assert done == members, f"only {done} of {members} quizzes were submitted"
    updates = members * UPDATES_PER_QUIZ
    return (updates / elapsed, members / elapsed, sends / members, statements_per_answer(url, counted), cpu / updates,
            harness / updates, harness / elapsed, cpu / elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--round-trip-ms", type=float, default=0.0,
                        help="each Bot API call waits this long at the emulator, as over the network (default 0)")
    add_wall_clock_option(parser)
    args = parser.parse_args()
    with wall_clock(args.wall_clock):
        run(args)


def run(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp()
    url = args.database_url or f"sqlite:///{tmp}/bench.db"
    with TelegramEmulator(round_trip=args.round_trip_ms / 1000) as emu:
        echo_members = [20_000 + i for i in range(args.members)]
        elapsed, echo_cpu, echo_harness = in_own_process("echo", emu, None, echo_members, args.concurrency,
                                                         echo_member)
        echo_updates = args.members * UPDATES_PER_QUIZ
        echo_latency = latency()
        echo_cores, echo_harness_cores = echo_cpu / elapsed, echo_harness / elapsed
        echo_rate, echo_cpu, echo_harness = echo_updates / elapsed, echo_cpu / echo_updates, echo_harness / echo_updates
        floor_members = [30_000 + i for i in range(args.members)]
        elapsed, floor_cpu, floor_harness = in_own_process("buttons", emu, None, floor_members, args.concurrency,
                                                           quiz_member)
        floor_rate, floor_cpu, floor_harness = (echo_updates / elapsed, floor_cpu / echo_updates,
                                                floor_harness / echo_updates)
        floor_latency = latency()
        update_rate, quiz_rate, per_quiz, statements, quiz_cpu, quiz_harness, quiz_harness_cores, quiz_cores = run_quiz(
            emu, args.members, args.concurrency, url)
        quiz_latency = latency()
    print(f"members {args.members}, concurrency {args.concurrency}, database {url.split(':')[0]}; "
          "each bot in its own process, both with PerChatUpdateProcessor, same emulator"
          + (f"; each Bot API call {args.round_trip_ms:g} ms away" if args.round_trip_ms else ""))
    print(QUIET_OFF)
    print(f"{'bare echo bot':<28}{echo_rate:>10.1f} updates/s   {1000 * echo_cpu:6.2f} ms CPU per update")
    print(f"{'button floor (no work)':<28}{floor_rate:>10.1f} updates/s   {1000 * floor_cpu:6.2f} ms CPU per update "
          f"(ratio to echo {floor_rate / echo_rate:.2f})")
    print(f"{'hoctap quiz path':<28}{update_rate:>10.1f} updates/s   {1000 * quiz_cpu:6.2f} ms CPU per update "
          f"({quiz_rate:.2f} quizzes/s)")
    print(f"{'ratio quiz / echo':<28}{update_rate / echo_rate:>10.2f}   (CPU per update: echo / quiz "
          f"{echo_cpu / quiz_cpu:.2f})")
    print(f"{'ratio quiz / button floor':<28}{update_rate / floor_rate:>10.2f}   (CPU per update: floor / quiz "
          f"{floor_cpu / quiz_cpu:.2f}: what the product's own work costs)")
    print(f"{'emulator + members':<28}{1000 * echo_harness:>10.2f} ms CPU per echo update, "
          f"{1000 * floor_harness:.2f} per floor update, {1000 * quiz_harness:.2f} per quiz update "
          "(the driving process, beside the bots)")
    print(f"{'cores busy, echo phase':<28}{echo_cores:>10.2f} bot, {echo_harness_cores:.2f} emulator + members")
    print(f"{'cores busy, quiz phase':<28}{quiz_cores:>10.2f} bot, {quiz_harness_cores:.2f} emulator + members "
          "(a bot well under one core is waiting for the driving process, not working)")
    print(f"{'latency, median / p95':<28}{echo_latency:>10} echo (message to its echo), {floor_latency} floor, "
          f"{quiz_latency} quiz (a press to the next question)")
    print(f"{'messages sent or edited':<28}{per_quiz:>10.1f} per 10-question quiz")
    print(f"{'statements per answer':<28}{statistics.median(statements):>10.0f} median "
          f"(answers 1-10: {' '.join(map(str, statements))}; BEGIN counted, COMMIT not)")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
