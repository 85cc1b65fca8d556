"""1, 2 and 4 `hoctap run` processes on one PostgreSQL, fed by the Telegram emulator's webhook delivery.

Members take whole quizzes (/lambai and ten taps), each waiting for the bot's answer before the next
tap (as a person does), many members at once. Printed per process count: updates/s and the p50/p95
time from a tap to the bot's answer showing in the chat. A fresh database per process count.

    python -m bench.scale_out --postgres postgresql+psycopg://USER@HOST:PORT/postgres
        [--members 60] [--concurrency 24] [--processes 1,2,4]

The machine has two cores shared by the emulator, the driver, PostgreSQL and the bot processes:
read the curve with that in mind (the output prints the core count).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.quiz_throughput import UPDATES_PER_QUIZ, seed
from bench.webhook_fleet import Fleet
from bot.emulators.telegram import TelegramEmulator
from bot.storage.db import Database


def fresh_database(admin_url: str, name: str) -> str:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def timed_quiz(user) -> list[float]:
    """One member's quiz; the seconds from each update to the bot's answer."""
    latencies = []
    started = time.perf_counter()
    user.send_text("/lambai")
    q = user.wait_for(lambda u: "Câu 1/10" in (u.last() or {}).get("text", ""), timeout=60)
    latencies.append(time.perf_counter() - started)
    for position in range(1, 11):
        started = time.perf_counter()
        user.press("A", message_id=q["message_id"])
        marker = f"Câu {position + 1}/10" if position < 10 else "Kết quả bài kiểm tra"
        user.wait_for(lambda u: any(marker in m.get("text", "") for m in u.messages[-2:]), timeout=60)
        latencies.append(time.perf_counter() - started)
    return latencies


def run(admin_url: str, processes: int, members: int, concurrency: int) -> tuple[float, float, float]:
    url = fresh_database(admin_url, f"hoctap_bench_scale_{processes}")
    db = Database(url)
    ids = seed(db, members)
    db.dispose()
    with tempfile.TemporaryDirectory() as workdir:
        fleet = Fleet(Path(workdir), url, processes)
        with TelegramEmulator(webhook_targets=fleet.targets, webhook_retry_delay=0.1) as emulator, fleet:
            fleet.start(emulator)
            users = [emulator.user(uid) for uid in ids]
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                latencies = [s for member in pool.map(timed_quiz, users) for s in member]
            elapsed = time.perf_counter() - started
            failures = len(emulator.webhook.failures)
    if failures:
        print(f"  ({failures} webhook deliveries failed and were retried)")
    quantiles = statistics.quantiles(latencies, n=20)
    return members * UPDATES_PER_QUIZ / elapsed, statistics.median(latencies), quantiles[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True, help="a PostgreSQL URL whose user may create databases")
    parser.add_argument("--members", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=24, help="members taking the quiz at once")
    parser.add_argument("--processes", default="1,2,4")
    args = parser.parse_args()
    print(f"{args.members} members × {UPDATES_PER_QUIZ} updates, {args.concurrency} at once; "
          f"{os.cpu_count()} cores for everything (emulator, driver, PostgreSQL, bots)")
    print(f"{'processes':>9} {'updates/s':>10} {'p50 ms':>8} {'p95 ms':>8}")
    for n in [int(x) for x in args.processes.split(",")]:
        rate, p50, p95 = run(args.postgres, n, args.members, args.concurrency)
        print(f"{n:>9} {rate:>10.1f} {p50 * 1000:>8.0f} {p95 * 1000:>8.0f}")


if __name__ == "__main__":
    main()
