"""APScheduler ticks; the process holding the lease runs due work; every process runs an outbox sender.

APScheduler's job stores cannot be shared between processes, so it only ticks: every process may
tick, and a lease row with an expiry (works on SQLite and PostgreSQL) lets one of them act. The
senders of all processes share the queue and the rate (``bot/outbox/sender.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import datetime, timedelta
from typing import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from bot.metrics import LEADER
from bot.outbox.sender import OutboxSender, Transport
from bot.scheduling.due import Schedule, prune_processed_updates, run_due
from bot.storage.db import Database
from bot.storage.models import Lease
from bot.timeutil import utcnow

log = logging.getLogger(__name__)
LEASE = "scheduler"


def try_lease(db: Database, holder: str, now: datetime, ttl: timedelta, name: str = LEASE) -> bool:
    """Take or renew the lease; True while this holder has it."""
    with db.session() as s:
        result = s.execute(
            update(Lease).where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
            .values(holder=holder, expires_at=now + ttl)
        )
        if result.rowcount == 1:
            return True
    try:
        with db.session() as s:
            if s.get(Lease, name) is not None:
                return False
            s.add(Lease(name=name, holder=holder, expires_at=now + ttl))
        return True
    except IntegrityError:
        return False


def release_lease(db: Database, holder: str, name: str = LEASE) -> None:
    with db.session() as s:
        s.execute(update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=utcnow()))


class ScheduledWork:
    """Ticks every ``interval`` seconds; the lease holder runs due work; each process keeps its sender going."""

    def __init__(self, db: Database, schedule: Schedule, transports: dict[str, Transport], *, rate: float,
                 report_builder=None, interval: float = 15.0, clock: Callable[[], datetime] = utcnow):
        self.db, self.schedule, self.transports = db, schedule, transports
        self.rate, self.report_builder, self.interval, self.clock = rate, report_builder, interval, clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self.scheduler = AsyncIOScheduler(timezone=schedule.tz)
        self.sender: OutboxSender | None = None
        self._sender_task: asyncio.Task | None = None

    def start(self) -> None:
        self.scheduler.add_job(self.tick, IntervalTrigger(seconds=self.interval), id="tick", coalesce=True,
                               max_instances=1, misfire_grace_time=None,
                               next_run_time=datetime.now(self.schedule.tz))
        self.scheduler.start()

    async def tick(self) -> None:
        if self._sender_task is None or self._sender_task.done():
            if self._sender_task is not None and not self._sender_task.cancelled() and self._sender_task.exception():
                log.error("outbox sender stopped; starting it again", exc_info=self._sender_task.exception())
            self.sender = OutboxSender(self.db, self.transports, rate=self.rate,
                                       quiet=self.schedule.quiet, clock=self.clock)
            self._sender_task = asyncio.create_task(self.sender.run())
        now = self.clock()
        leader = await asyncio.to_thread(try_lease, self.db, self.holder, now, timedelta(seconds=self.interval * 3))
        LEADER.set(1 if leader else 0)
        if not leader:
            return
        try:
            report = await asyncio.to_thread(run_due, self.db, now, self.schedule, self.report_builder)
            await asyncio.to_thread(prune_processed_updates, self.db, now)
            for job in report.jobs:
                log.info("scheduled: %s", job)
            for dropped in report.dropped:
                log.info("dropped: %s", dropped)
        except Exception:  # noqa: BLE001 - one bad tick must not stop the scheduler
            log.exception("scheduled work failed at %s", now)

    async def _stop_sender(self) -> None:
        if self.sender is not None:
            self.sender.stop()
        if self._sender_task is not None:
            await asyncio.gather(self._sender_task, return_exceptions=True)
        self.sender, self._sender_task = None, None

    async def shutdown(self) -> None:
        self.scheduler.shutdown(wait=False)
        LEADER.set(0)
        await self._stop_sender()
        await asyncio.to_thread(release_lease, self.db, self.holder)
