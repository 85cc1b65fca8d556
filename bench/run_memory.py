"""A whole ``hoctap run`` announcing a round to N members: its memory while it sends, and its send rate.

The product process is started as an operator starts it (``python -m bot.cli --config … run``: Telegram
polling, the scheduler, the outbox sender, the web server), on a database seeded beforehand with N members
linked on Telegram and a round that opened a minute ago. Its own scheduler enqueues the announcement and its
own sender sends it at ``scheduler.outbox_rate``. The Telegram emulator runs in a process of its own, every
member's chat started (and those ``/start`` updates dropped, as if long since handled); the seeding too.

Printed: the process's resident memory (``/proc/<pid>/status``) when it is up, at each quarter of the
sends, and its peak; the time from the first send to the last against the ideal N/R; duplicates and
losses counted at the emulator.

    python -m bench.run_memory [--members 100000] [--rate 400] [--database-url URL]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.broadcast import BASE_ID, seed
from bench.webhook_fleet import wait_healthy
from bot.emulators.common import free_port
from bot.emulators.telegram import TelegramEmulator
from bot.storage.db import Database
from bot.timeutil import utcnow


def seed_in_child(url: str, members: int) -> None:
    seed(Database(url), members, utcnow())


def serve_emulator(members: int, conn) -> None:
    """Every member has started the chat; their /start updates are dropped (handled long ago). Answers
    "total" (sendMessage calls so far) and "count" (sends per chat)."""
    with TelegramEmulator(self_check=False) as emu:
        for i in range(members):
            emu.user(BASE_ID + i).send_text("/start")
        httpx.post(f"{emu.base_url}{emu.token}/deleteWebhook", json={"drop_pending_updates": True}).raise_for_status()
        conn.send((emu.token, emu.base_url))
        while (command := conn.recv()) != "stop":
            sends = [p["chat_id"] for m, p in emu.requests if m == "sendMessage"]
            conn.send(len(sends) if command == "total" else Counter(sends))


def rss(pid: int) -> tuple[float, float]:
    """Resident memory of ``pid`` now and at its peak, in MB."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if line.startswith(("VmRSS", "VmHWM")))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run(args: argparse.Namespace) -> None:
    fork = multiprocessing.get_context("fork")
    workdir = Path(tempfile.mkdtemp())
    url = args.database_url or f"sqlite:///{workdir}/run.db"
    print(f"machine load at the start (1, 5, 15 min): {' '.join(open('/proc/loadavg').read().split()[:3])}")
    started = time.perf_counter()
    seeding = fork.Process(target=seed_in_child, args=(url, args.members))
    seeding.start()
    seeding.join()
    print(f"seeded {args.members} members linked on Telegram in {time.perf_counter() - started:.1f} s", flush=True)
    conn, child = fork.Pipe()
    emulator = fork.Process(target=serve_emulator, args=(args.members, child), daemon=True)
    emulator.start()
    token, base_url = conn.recv()

    def ask(command: str):
        conn.send(command)
        return conn.recv()

    port = free_port()
    config = workdir / "config.yaml"
    config.write_text(
        f"database_url: {url}\n"
        f"telegram:\n  token: ${{TELEGRAM_BOT_TOKEN}}\n  api_base_url: {base_url}\n  mode: polling\n"
        f"web:\n  listen: 127.0.0.1:{port}\n"
        "scheduler:\n  quiet_hours: \"00:00-00:00\"\n  tick_seconds: 5\n"
        f"  outbox_rate: {args.rate}\n", encoding="utf-8")
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": token}
    env.pop("HOCTAP_DATABASE_URL", None)
    log = open(workdir / "run.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "--config", str(config), "run"], cwd=workdir,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, process, time.monotonic() + 120,
                     lambda: f"hoctap run did not start: {(workdir / 'run.log').read_text()[-2000:]}")
        up = rss(process.pid)[0]
        print(f"hoctap run is up: {up:.0f} MB", flush=True)
        first = last = None
        quarters: list[tuple[int, float]] = []
        deadline = time.monotonic() + args.members / args.rate * 3 + 120
        while time.monotonic() < deadline:
            total = ask("total")
            now = time.perf_counter()
            if total and first is None:
                first = now
            while len(quarters) < 4 and total >= args.members * (len(quarters) + 1) // 4:
                quarters.append((total, rss(process.pid)[0]))
                print(f"  {total:>7} sent: {quarters[-1][1]:.0f} MB", flush=True)
            if total >= args.members:
                last = now
                break
            time.sleep(0.25)
        peak = rss(process.pid)[1]
        per_chat = ask("count")
    finally:
        process.terminate()
        process.wait(timeout=30)
        conn.send("stop")
        emulator.join(timeout=30)
    ideal = args.members / args.rate
    duplicates = sum(n - 1 for n in per_chat.values() if n > 1)
    print(f"members {args.members}, outbox_rate {args.rate:g}/s, database {url.split(':')[0]}; one `hoctap run` "
          "(Telegram polling, scheduler, outbox sender, web server); emulator and seeding in processes of their own")
    if last is not None:
        elapsed = last - first
        print(f"first to last send: {elapsed:.1f} s (ideal {ideal:.1f} s, {elapsed / ideal:.3f} × N/R); "
              f"{args.members / elapsed:.0f} messages/s")
    else:
        print(f"not finished: {sum(per_chat.values())} of {args.members} sent before the deadline")
    print(f"duplicates / lost: {duplicates} / {args.members - len(per_chat)}")
    print(f"RSS: {up:.0f} MB when up; " + ", ".join(f"{mb:.0f} MB at {n}" for n, mb in quarters)
          + f"; peak {peak:.0f} MB")
    print(f"machine load at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--database-url")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
