"""Deliver outbox rows: paced globally and per chat, retried, marked right after each send.

Channels provide a ``Transport``; the sender picks the member's channel (the one they used last,
falling back to another on a permanent refusal), keeps to ``rate`` messages per second overall and
one per ``per_chat_interval`` into a chat, waits ``retry_after`` on 429 (for every chat: the limit
is the bot's), backs off on network errors and 5xx, and never retries a permanent refusal.

Every process runs one sender. Each renews a lease of its own (``queue.beat``): the senders alive
share ``rate`` equally, and rows claimed by a sender whose lease ran out are settled by the others
(``queue.reconcile``). Claims are serialised and give a member one message at a time (``queue.claim``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import random
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, Protocol

from sqlalchemy import bindparam, select

from bot.domain.replies import Reply
from bot.outbox import queue
from bot.outbox.queue import QuietHours
from bot.storage.db import Database
from bot.storage.models import ChatAccount
from bot.timeutil import utcnow

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8
CLAIM_SECONDS = 1.0  # each claim takes about this many seconds' worth of rows (at ``rate``)
MAX_CLAIM = 1000
BEAT_SECONDS = 2.0  # each sender renews its lease this often...
LEASE_SECONDS = 10.0  # ...for this long: a sender silent this long is taken for dead
TICK = 0.02  # sends start in groups at least this far apart, marked ``sending`` in one statement per group
# the members' messenger accounts, the one used last first (their first choice)
_ACCOUNTS = (select(ChatAccount.member_id, ChatAccount.channel, ChatAccount.external_id, ChatAccount.bot_id)
             .where(ChatAccount.member_id.in_(bindparam("members", expanding=True)))
             .order_by(ChatAccount.last_seen_at.desc().nullslast(), ChatAccount.id))
GROUP = 20  # ... and at most 250 ms apart, so that a group has about this many sends at low rates
MARK_DELAY = 0.1  # a status change waits at most this long for the next group's write
# A status write the database refused is tried again, ever later (up to 30 s apart), this many times
# (about 7 minutes): an outage loses no mark, and a mark that can never be written stops blocking the rest.
MARK_TRIES = 20
STOP_WAIT = 5.0  # at a stop, status writes the database refuses are tried again for this long
IN_FLIGHT_WAIT = 60.0  # at a stop, the sends under way are waited for this long, then cancelled
# The outbox row being delivered, for transports that record per-message facts (the Zalo OA's rung and cost).
CURRENT_MESSAGE: contextvars.ContextVar[int | None] = contextvars.ContextVar("outbox_message", default=None)
# Parts of a long message (sent as several platform messages) that an earlier try already delivered on
# this channel: the transport starts after them, and reports how far it got in ``SendError.parts_done``.
SKIP_PARTS: contextvars.ContextVar[int] = contextvars.ContextVar("outbox_skip_parts", default=0)
# How many earlier tries this message had (a transport may read an ambiguous refusal differently on a retry).
EARLIER_TRIES: contextvars.ContextVar[int] = contextvars.ContextVar("outbox_earlier_tries", default=0)
# For a transport that paces its own requests (``paced``): writes ``sending`` for the message, called by
# ``request_may_leave`` once its turn has come (a message waiting its turn is not in flight: a kill then must
# put it back in the queue, not leave it ``uncertain``). False: another sender took the message over.
BEFORE_REQUEST: contextvars.ContextVar[Callable[[], Awaitable[bool]] | None] = contextvars.ContextVar(
    "outbox_before_request", default=None)


async def request_may_leave() -> None:
    """Called by a paced transport right before each request leaves: the first call marks the message
    ``sending``; raises SendError ``taken_over`` when another sender has it."""
    mark = BEFORE_REQUEST.get()
    if mark is None:
        return
    BEFORE_REQUEST.set(None)
    if not await mark():
        raise SendError("taken_over", "taken over by another sender")


class SendError(Exception):
    """Why a send failed: ``retry_after`` (429), ``transient`` (network, 5xx), ``permanent``, ``uncertain``
    (the request left but no answer came: it may have been delivered, so it is never sent again),
    ``taken_over`` (another sender has the message: nothing was sent here), or ``not_yet`` (it may go
    ``retry_after`` seconds from now, e.g. when a channel's sending hours begin: not a failed try)."""

    def __init__(self, kind: str, reason: str, retry_after: float | None = None, parts_done: int = 0):
        super().__init__(reason)
        self.kind, self.reason, self.retry_after = kind, reason, retry_after
        self.parts_done = parts_done  # parts of the message delivered, this try's and earlier ones


def after_parts(exc: SendError, parts_done: int) -> SendError:
    """``exc`` saying that ``parts_done`` parts of the message were delivered before it."""
    exc.parts_done = parts_done
    return exc


def unanswered(reason: str, part: int, parts: int) -> SendError:
    """Part ``part`` (from 0) of ``parts`` left and got no answer in time: the messenger may have delivered it,
    so it is never sent again. The last part: ``uncertain``. An earlier one counts as delivered and the rest
    follows on a retry."""
    if part + 1 < parts:
        return after_parts(SendError("transient", f"{reason} (part {part + 1}); perhaps delivered, not sent again"),
                           part + 1)
    return after_parts(SendError("uncertain", f"{reason}; perhaps delivered"), part)


class Transport(Protocol):
    channel: str

    async def deliver(self, external_id: str, reply: Reply, attachment: tuple[str, bytes] | None) -> None:
        """Send or raise SendError."""


@dataclass
class SenderStats:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    uncertain: int = 0
    cpu_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)


class OutboxSender:
    def __init__(self, db: Database, transports: dict[str, Transport], *, rate: float = 25.0,
                 per_chat_interval: float = 1.0, worker: str | None = None, quiet: QuietHours | None = None,
                 clock: Callable[[], datetime] = utcnow, idle_poll: float = 0.5, max_in_flight: int = 24):
        self.db, self.transports = db, transports
        self.rate, self.per_chat_interval = rate, per_chat_interval
        # each sender its own name (≤ 25 characters: its lease is ``sender:<worker>``)
        self.worker = worker or f"{socket.gethostname()[:12]}-{os.getpid()}-{secrets.token_hex(2)}"
        self.quiet, self.clock = quiet, clock
        self.idle_poll, self.max_in_flight = idle_poll, max_in_flight
        self.stats = SenderStats()
        self._share = rate  # this sender's part of ``rate``: rate / senders alive
        self._bodies: dict[int, dict] = {}  # shared bodies of broadcasts, by id (a few at a time)
        self._chat_ready: dict[tuple[str, str], float] = {}
        self._chat_pruned = time.monotonic()
        self._last_stamp = datetime.min.replace(tzinfo=timezone.utc)  # of this sender's latest claim
        self._paused_until = 0.0
        self._in_flight: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self._marks: list[_Mark] = []
        self._marks_waiting = asyncio.Event()
        self._closing = False  # run() is ending: the flusher leaves the last writes to ``_write_last_marks``
        self._stopping_at: float | None = None  # when run() began to stop (refused marks are given up soon after)
        self._claim_failures = 0  # claims refused in a row
        self._flushing = 0  # status writes under way
        self._starting = 0  # sends of groups still being marked ``sending``
        self._tick = TICK

    # -- loop -------------------------------------------------------------------------------------
    async def run(self, until_idle: bool = False) -> SenderStats:
        """Send until stopped (or, with ``until_idle``, until nothing is due and nothing in flight). A sender
        may run again after an ``until_idle`` run (one stopped stays stopped)."""
        self._closing, self._stopping_at = False, None
        await asyncio.to_thread(self._beat)  # alive before the first claim, so no other sender settles it
        beating = asyncio.create_task(self._keep_beating())
        flusher = asyncio.create_task(self._flush_marks())
        tokens, last = 1.0, time.monotonic()
        worked = last  # when a claim last brought rows
        batch: deque[OutboxSender._Job] = deque()  # claimed, not yet started
        claiming: asyncio.Future | None = None  # the next claim, taken while the rows in hand are sent
        drained = False  # the last claim found nothing: the next waits until the rows in hand are started
        claim_after = 0.0  # after a refused claim, the next waits until then
        try:
            while not self._stop.is_set():
                now_mono = time.monotonic()
                rate = self._share
                # sends start in groups, about GROUP at a time (one status write per group), within 20-250 ms
                self._tick = tick = min(0.25, max(TICK, GROUP / rate))
                # a group may make up for the previous sleep's overshoot (else every late wake-up loses sends)
                tokens = min(max(1.0, 2 * rate * tick), tokens + (now_mono - last) * rate)
                last = now_mono
                if now_mono < self._paused_until:
                    await asyncio.sleep(self._paused_until - now_mono)
                    continue
                size = max(1, min(MAX_CLAIM, math.ceil(rate * CLAIM_SECONDS)))
                if claiming is not None and claiming.done():
                    claimed, claiming = self._claimed(claiming), None
                    refused = claimed is None
                    if refused:  # the database refused: what is in hand goes on, claims wait
                        claim_after = now_mono + _backoff(self._claim_failures)
                        claimed = []
                    drained = not claimed
                    if claimed:
                        batch.extend(claimed)
                        worked = now_mono
                    elif not batch:
                        now = self.clock()
                        if (until_idle and not refused and not self._in_flight and not self._marks
                                and not self._flushing
                                and not (now_mono - worked < self.per_chat_interval + 2
                                         and await self._maybe_due(now))):
                            break  # nothing due, or only what pacing keeps another sender's for now
                        await self._idle()
                        continue
                if claiming is None and now_mono < claim_after:
                    if not batch:
                        await self._idle(claim_after - now_mono)
                        continue
                elif claiming is None and (not batch or (not drained and len(batch) <= size // 2)):
                    # the next second's rows are claimed while these are sent: the sends never wait for a claim
                    now = self.clock()
                    claiming = asyncio.ensure_future(asyncio.to_thread(self._claim, now, size, self._purposes(now)))
                if not batch:
                    await asyncio.wait({claiming})
                    continue
                allowed = self._purposes(self.clock())
                if allowed is not None and any(job.purpose not in allowed for job in batch):
                    # quiet hours began while these were in hand (or during a flood-control wait): back to the
                    # queue, where the claim leaves them until morning
                    held = [(job.id, job.claimed_at) for job in batch if job.purpose not in allowed]
                    batch = deque(job for job in batch if job.purpose in allowed)
                    self._mark_later(queue.release, self.worker, held)
                    log.info("outbox: quiet hours: %d message(s) in hand go back to the queue", len(held))
                    continue
                room = self.max_in_flight - len(self._in_flight) - self._starting
                if tokens < 1 or room < 1:
                    await asyncio.sleep(max((1 - tokens) / rate, tick))
                    continue
                jobs = [batch.popleft() for _ in range(min(int(tokens), room, len(batch)))]
                tokens -= len(jobs)
                self._starting += len(jobs)
                self._track(self._start_group(jobs))  # the next group need not wait for this one's write
        finally:
            self._stopping_at = time.monotonic()
            for mark in self._marks:  # a refused change waiting its pause is tried once more before STOP_WAIT
                mark.due = min(mark.due, self._stopping_at + STOP_WAIT)
            self._marks_waiting.set()
            if claiming is not None:  # also when cancelled: the claim's thread runs to its end
                claimed = (await asyncio.gather(claiming, return_exceptions=True))[0]
                batch.extend(claimed if isinstance(claimed, list) else ())
            if batch:  # stopped with rows in hand: back to the queue at once
                self._mark_later(queue.release, self.worker, [(job.id, job.claimed_at) for job in batch])
            await self._settle_in_flight()
            beating.cancel()
            self._closing = True  # the flusher ends after its write under way (never cancelled half-way)
            self._marks_waiting.set()
            await asyncio.gather(beating, flusher, return_exceptions=True)
            await self._write_last_marks()
            await asyncio.to_thread(self._leave)
        return self.stats

    async def _settle_in_flight(self) -> None:
        """At a stop: the sends under way finish and have their outcome written (a group's task starts
        further sends: waited for too). Any still running after IN_FLIGHT_WAIT are cancelled: their rows are
        settled as a stopped sender's (claimed: back to the queue; sending: uncertain)."""
        give_up = time.monotonic() + IN_FLIGHT_WAIT
        while self._in_flight and (left := give_up - time.monotonic()) > 0:
            await asyncio.wait(list(self._in_flight), timeout=left)
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    def _purposes(self, now: datetime) -> tuple[str, ...] | None:
        """In quiet hours only replies to members' own actions go out (held back by flood control)."""
        return (queue.REPLY,) if self.quiet is not None and self.quiet.next_allowed(now) != now else None

    def _sendable(self, job: _Job) -> bool:
        return bool(job.accounts) and (job.expires_at is None or self.clock() < job.expires_at)

    def _track(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        task.add_done_callback(_log_failure)

    async def _start_group(self, jobs: list[_Job]) -> None:
        """Mark the group ``sending`` (one write), then send each (the group's task counts for one in
        flight while it writes: ``max_in_flight`` bounds the requests, not exactly)."""
        try:
            mine = await self._mark_sending(jobs)
        except Exception:  # noqa: BLE001 - the database failed: nothing was sent, put the rows back
            log.exception("outbox: could not mark %d message(s) as sending; they go back to the queue", len(jobs))
            self._mark_later(queue.release, self.worker, [(job.id, job.claimed_at) for job in jobs])
            return
        finally:
            self._starting -= len(jobs)
        for job in jobs:
            marked = (job.id, job.claimed_at) in mine
            if marked or not self._sendable(job) or self._paced(job.accounts[0][0]):
                self._track(self._deliver(job, marked=marked))
            else:
                log.info("outbox: message %d was taken over by another sender; not sent here", job.id)

    async def _mark_sending(self, jobs: list[_Job]) -> set[tuple[int, datetime]]:
        """``sending`` for the jobs about to start, in one statement (with the status changes waiting
        to be written: one transaction per group of sends), before their requests leave: from then
        on a crash leaves the outcome unknown. The (id, claim stamp) still this sender's."""
        return await self._apply_marks([(job.id, job.accounts[0][0], job.claimed_at) for job in jobs
                                        if self._sendable(job) and not self._paced(job.accounts[0][0])])

    def _paced(self, channel: str) -> bool:
        """The channel's transport waits its own turn before a request (``request_may_leave`` marks then)."""
        return bool(getattr(self.transports[channel], "paced", False))

    def _beat(self) -> None:
        """Renew this sender's lease, take its share of the rate, settle what dead senders left."""
        with self.db.session() as s:
            now = self.clock()
            alive = queue.beat(s, self.worker, now, timedelta(seconds=LEASE_SECONDS))
            requeued, uncertain = queue.reconcile(s, now, alive)
        self._share = self.rate / max(1, len(alive))
        if requeued:
            log.warning("outbox: %d claimed message(s) of a stopped sender are pending again", requeued)
        if uncertain:
            log.warning("outbox: %d message(s) were in flight when a sender stopped: recorded as uncertain, "
                        "not sent again (secretaries see them in /chualam)", uncertain)

    async def _keep_beating(self) -> None:
        while True:
            await asyncio.sleep(BEAT_SECONDS)
            try:
                await asyncio.to_thread(self._beat)
            except Exception:  # noqa: BLE001 - a busy database must not stop the sends; next beat retries
                log.exception("outbox: could not renew the sender's lease")

    def _leave(self) -> None:
        """Give up the lease at a stop; a database that refuses only delays that until the lease runs out
        (other senders then settle this one's rows as they do a dead sender's): the stop still ends cleanly."""
        try:
            with self.db.session() as s:
                queue.leave(s, self.worker)
        except Exception:  # noqa: BLE001 - see above
            log.warning("outbox: could not give up the sender's lease at the stop; it runs out by itself",
                        exc_info=True)

    def stop(self) -> None:
        self._stop.set()

    async def _idle(self, seconds: float | None = None) -> None:
        try:  # asyncio.timeout, not wait_for: a cancel arriving as the wait ends is never swallowed
            async with asyncio.timeout(self.idle_poll if seconds is None else seconds):
                await self._stop.wait()
        except TimeoutError:
            pass

    async def _maybe_due(self, now: datetime) -> bool:
        """Is anything due now (True when the database cannot say: ``until_idle`` keeps going)?"""
        try:
            return await asyncio.to_thread(self._any_due, now, self._purposes(now))
        except Exception:  # noqa: BLE001 - a refused read must not end the sends as if all were done
            log.exception("outbox: could not tell whether messages are due; trying again shortly")
            return True

    def _claimed(self, claiming: asyncio.Future) -> list[_Job] | None:
        """The claim's rows, or None when the database refused it (logged; the sender goes on)."""
        try:
            claimed = claiming.result()
        except Exception:  # noqa: BLE001 - a busy or unreachable database must not stop the sends in hand
            self._claim_failures += 1
            log.exception("outbox: could not claim messages (%d time(s) in a row); trying again shortly",
                          self._claim_failures)
            return None
        self._claim_failures = 0
        return claimed

    # -- one message ------------------------------------------------------------------------------
    @dataclass
    class _Job:
        id: int
        reply: Reply
        attachment: tuple[str, bytes] | None
        accounts: list[tuple[str, str, int | None]]  # (channel, external id, bot), preferred first
        expires_at: datetime | None
        attempts: int
        channel: str | None = None  # the channel of the last try, and the parts it delivered
        parts_sent: int = 0
        purpose: str = ""  # queue.REPLY (may go out in quiet hours), announce, remind, ...
        claimed_at: datetime | None = None  # its claim's stamp: every status change is made only while it holds

    def _any_due(self, now: datetime, purposes: tuple[str, ...] | None) -> bool:
        with self.db.read_session() as s:
            return queue.any_due(s, now, purposes)

    def _claim(self, now: datetime, limit: int, purposes: tuple[str, ...] | None = None) -> list[_Job]:
        started = time.thread_time()
        # each claim its own stamp, even by a clock that stands still (``queue.claim``)
        stamp = self._last_stamp = max(now, self._last_stamp + timedelta(microseconds=1))
        with self.db.session() as s:
            rows = queue.claim(s, self.worker, now, limit, purposes, self.per_chat_interval, stamp)
            stale = queue.no_longer_true(s, rows, now)
            for r in rows:
                if r.id in stale:
                    log.info("outbox: message %d dropped: %s", r.id, stale[r.id])
                    queue.mark_dropped(s, r.id, stale[r.id], stamp)
                    self.stats.dropped += 1
            rows = [r for r in rows if r.id not in stale]
            member_ids = {r.member_id for r in rows}
            accounts: dict[int, list[tuple[str, str, int | None]]] = {}
            if member_ids:
                for member_id, channel, external_id, bot_id in s.connection().execute(
                        _ACCOUNTS, {"members": list(member_ids)}):
                    if channel in self.transports:
                        accounts.setdefault(member_id, []).append((channel, external_id, bot_id))
            replies = self._replies(s, rows)
            jobs = [self._Job(r.id, replies[r.id], (r.attachment_name, r.attachment) if r.attachment_name else None,
                              accounts.get(r.member_id, []), r.expires_at, r.attempts, r.channel, r.parts_sent or 0,
                              r.purpose, stamp)
                    for r in rows]
        self.stats.cpu_seconds += time.thread_time() - started
        return jobs

    def _replies(self, s, rows) -> dict[int, Reply]:
        """Each row's Reply; rows of one broadcast without a part of their own share one object."""
        missing = {r.body_id for r in rows if r.body_id is not None} - self._bodies.keys()
        if missing:
            if len(self._bodies) > 64:
                self._bodies.clear()
            self._bodies.update(queue.bodies(s, missing))
        shared: dict[int, Reply] = {}
        out = {}
        for r in rows:
            if r.body_id is None:
                out[r.id] = queue.payload_reply(r.payload)
            elif r.payload:
                out[r.id] = queue.payload_reply(queue.full_payload(r.payload, self._bodies[r.body_id]))
            else:
                if r.body_id not in shared:
                    shared[r.body_id] = queue.payload_reply(self._bodies[r.body_id])
                out[r.id] = shared[r.body_id]
        return out

    async def _deliver(self, job: _Job, marked: bool = False) -> None:
        """``marked``: already ``sending`` on the member's first channel."""
        CURRENT_MESSAGE.set(job.id)
        now = self.clock()
        if job.expires_at is not None and now >= job.expires_at:
            log.info("outbox: message %d is past its usefulness (%s); dropped", job.id, job.expires_at)
            await self._mark(queue.mark_dropped, job.id, "expired before it could be sent", job.claimed_at)
            self.stats.dropped += 1
            return
        if not job.accounts:
            await self._mark(queue.mark_failed, job.id, None, "not linked to any messenger", job.claimed_at)
            self.stats.failed += 1
            return
        reason = ""
        for channel, external_id, via in job.accounts:
            await self._wait_for_chat(channel, external_id)
            paced = not marked and self._paced(channel)  # marked when its turn comes (``request_may_leave``)
            BEFORE_REQUEST.set((lambda c=channel: self._mark(queue.mark_sending, job.id, c, self.worker,
                                                             job.claimed_at)) if paced else None)
            if not marked and not paced and not await self._mark(queue.mark_sending, job.id, channel, self.worker,
                                                                 job.claimed_at):
                log.info("outbox: message %d was taken over by another sender; not sent here", job.id)
                return
            marked = False  # a fallback channel is marked on its own
            try:
                # ``via``: the Zalo bot the member linked with (a branch's own bot); None: the channel's bot
                extra = {"via": via} if via is not None else {}
                SKIP_PARTS.set(job.parts_sent if channel == job.channel else 0)
                EARLIER_TRIES.set(job.attempts)
                await self.transports[channel].deliver(external_id, job.reply, job.attachment, **extra)
            except SendError as exc:
                if exc.kind == "taken_over":
                    log.info("outbox: message %d was taken over by another sender; not sent here", job.id)
                    return
                if exc.kind == "permanent":
                    reason = f"{channel}: {exc.reason}"
                    continue  # try the member's other messenger
                if exc.kind == "uncertain":  # as after a kill during the request: shown, never sent twice
                    await self._mark(queue.mark_uncertain, job.id, channel, f"{channel}: {exc.reason}", job.claimed_at)
                    self.stats.uncertain += 1
                    return
                await self._retry(job, exc)
                return
            except Exception as exc:  # noqa: BLE001 - an unexpected refusal must not strand the row
                log.exception("outbox: message %d: unexpected error from %s", job.id, channel)
                await self._retry(job, SendError("transient", f"{type(exc).__name__}: {exc}"))
                return
            self._chat_ready[(channel, external_id)] = time.monotonic() + self.per_chat_interval  # from its arrival
            # the send is done: no need to wait
            self._mark_later(queue.mark_sent, job.id, channel, self.clock(), job.claimed_at)
            self.stats.sent += 1
            return
        await self._mark(queue.mark_failed, job.id, job.accounts[-1][0], reason, job.claimed_at)
        self.stats.failed += 1

    async def _wait_for_chat(self, channel: str, external_id: str) -> None:
        key = (channel, external_id)
        while True:
            ready = self._chat_ready.get(key, 0.0)
            now = time.monotonic()
            if now - self._chat_pruned >= max(self.per_chat_interval, 1.0):  # forget chats free again
                self._chat_ready = {k: r for k, r in self._chat_ready.items() if r > now}
                self._chat_pruned = now
            if now >= ready:
                self._chat_ready[key] = now + self.per_chat_interval
                return
            await asyncio.sleep(ready - now)

    async def _retry(self, job: _Job, exc: SendError) -> None:
        if exc.kind == "not_yet":
            await self._mark(queue.retry_later, job.id, self.clock() + timedelta(seconds=exc.retry_after or 60),
                             exc.reason, exc.parts_done, job.claimed_at, False)
            self.stats.retried += 1
            return
        if exc.kind == "retry_after":
            wait = float(exc.retry_after or 1)
            self._paused_until = max(self._paused_until, time.monotonic() + wait)
            log.warning("outbox: flood control, pausing %.1fs", wait)
        elif job.attempts + 1 >= MAX_ATTEMPTS:
            await self._mark(queue.mark_failed, job.id, None, f"gave up after {MAX_ATTEMPTS} attempts: {exc.reason}",
                             job.claimed_at)
            self.stats.failed += 1
            return
        else:
            wait = min(2 ** job.attempts, 300) * (0.5 + random.random())
        await self._mark(queue.retry_later, job.id, self.clock() + timedelta(seconds=wait), exc.reason, exc.parts_done,
                         job.claimed_at)
        self.stats.retried += 1

    async def _mark(self, fn, *args):
        """Record a status change; changes from concurrent sends share one commit (group commit)."""
        return await self._mark_later(fn, *args)

    def _mark_later(self, fn, *args) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(_consume_exception)
        self._marks.append(_Mark(fn, args, done, due=time.monotonic() + MARK_DELAY))
        self._marks_waiting.set()
        return done

    async def _flush_marks(self) -> None:
        """Each status change is written with the next group's ``sending`` when that starts within MARK_DELAY
        (groups are at most 80 ms apart from 250 messages/s on), else here when it is due: a kill leaves at most
        MARK_DELAY of sends unrecorded (uncertain). One the database refused is due after its pause."""
        while not self._closing:
            await self._marks_waiting.wait()
            self._marks_waiting.clear()
            while self._marks and not self._closing:
                wait = min(m.due for m in self._marks) - time.monotonic()
                if wait > 0:  # or sooner, for a new change due earlier
                    try:
                        async with asyncio.timeout(wait):
                            await self._marks_waiting.wait()
                    except TimeoutError:
                        pass
                    self._marks_waiting.clear()
                    continue
                await self._apply_marks()

    async def _write_last_marks(self) -> None:
        """At a stop: the waiting status changes, tried again while the database refuses until STOP_WAIT after
        the stop began (``_keep_for_later`` gives them up then). What is still unwritten is settled by the other
        senders once this one's lease runs out (a claimed row back to the queue, one in flight ``uncertain``:
        never sent twice)."""
        while self._marks:
            wait = min(m.due for m in self._marks) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._apply_marks()

    async def _apply_marks(self, sending: list[tuple[int, str, datetime]] | None = None) -> set[tuple[int, datetime]]:
        """Write the waiting status changes (those the database refused before only once their pause is over),
        and ``sending`` for ``sending`` (id, channel, claim stamp) about to be sent, in one transaction; returns
        the (id, claim stamp) of those still this sender's. When the database refuses, the status changes wait
        for a later try (raised only for ``sending``: nothing of those has left, the caller puts them back)."""
        now = time.monotonic()
        # a send cancelled while it waited for its ``sending`` never left: that mark is not written
        self._marks = [m for m in self._marks if not (m.fn is queue.mark_sending and m.done.cancelled())]
        batch = [m for m in self._marks if not m.tries or m.due <= now]
        if not batch and not sending:
            return set()
        self._marks = [m for m in self._marks if m.tries and m.due > now]
        self._flushing += 1

        def work():
            started = time.thread_time()
            with self.db.session() as s:
                results = _apply_in_batches(s, batch, self.worker) if batch else []
                mine = queue.mark_sending_many(s, sending, self.worker) if sending else set()
            self.stats.cpu_seconds += time.thread_time() - started
            return results, mine

        try:
            results, mine = await asyncio.to_thread(work)
        except Exception as exc:  # noqa: BLE001 - kept for a later try; a mark never written ends in the end
            self._keep_for_later(batch, exc)
            if sending:
                raise
            return set()
        finally:
            self._flushing -= 1
        for mark, result in zip(batch, results):
            if not mark.done.done():
                mark.done.set_result(result)
        return mine

    def _keep_for_later(self, batch: list[_Mark], exc: Exception) -> None:
        """Status changes the database refused go back to the queue, each tried again after its own growing
        pause (``_backoff``). One refused MARK_TRIES times, or once STOP_WAIT has passed since a stop began, is
        given up (its send learns of it; the row is settled as a stopped sender's at the next start), so that
        one bad change cannot hold up every other, nor a stop wait for a database that does not come back."""
        now, kept = time.monotonic(), []
        stop_by = self._stopping_at + STOP_WAIT if self._stopping_at is not None else None
        for mark in batch:
            mark.tries += 1
            if mark.tries < MARK_TRIES and (stop_by is None or now < stop_by):
                mark.due = now + _backoff(mark.tries) if stop_by is None else min(now + _backoff(mark.tries), stop_by)
                kept.append(mark)
            elif not mark.done.done():
                mark.done.set_exception(exc)
        log.error("outbox: the database refused %d status change(s): %s; %d kept for another try",
                  len(batch), exc, len(kept))
        if kept:
            self._marks = kept + self._marks
            self._marks_waiting.set()


@dataclass(slots=True)
class _Mark:
    """A status change waiting to be written (``fn(session, *args)``), and the send that awaits it."""
    fn: Callable
    args: tuple
    done: asyncio.Future
    due: float  # written by then (time.monotonic()); one refused before is not tried again earlier
    tries: int = 0  # times the database refused it


def _backoff(failures: int) -> float:
    """Seconds before the next try after ``failures`` refusals in a row: 0.25 s doubling, at most 30 s."""
    return min(30.0, 0.25 * 2 ** max(0, failures - 1))


def _log_failure(task: asyncio.Task) -> None:
    """A send whose status could not be recorded in the end (its row is settled when this sender stops; the
    status's own failure is logged by ``_consume_exception``)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("outbox: a send ended without its outcome recorded (%s)", type(task.exception()).__name__)


def _consume_exception(done: asyncio.Future) -> None:
    """A mark nobody awaits (``sent``) given up: logged; the row stays ``sending`` and becomes
    ``uncertain`` when its sender stops, never sent twice."""
    if not done.cancelled() and done.exception() is not None:
        log.error("outbox: could not record a status", exc_info=done.exception())


def _apply_in_batches(s, batch: list[_Mark], worker: str) -> list:
    """The results of ``fn(s, *args)`` for each mark, with the two frequent kinds (``sending``,
    ``sent``) written one statement each for the whole batch (one row appears once in a batch:
    each send awaits its mark before the next)."""
    results: list = [None] * len(batch)
    sending = [(i, m.args) for i, m in enumerate(batch)
               if m.fn is queue.mark_sending and m.args[2] == worker and m.args[3] is not None]
    mine = (queue.mark_sending_many(s, [(oid, channel, at) for _, (oid, channel, _w, at) in sending], worker)
            if sending else set())
    for i, (oid, _channel, _w, at) in sending:
        results[i] = (oid, at) in mine
    sent = {i for i, m in enumerate(batch) if m.fn is queue.mark_sent and m.args[3] is not None}
    queue.mark_sent_many(s, [batch[i].args for i in sent])
    batched = {i for i, _ in sending} | sent
    for i, m in enumerate(batch):
        if i not in batched:
            results[i] = m.fn(s, *m.args)
    return results
