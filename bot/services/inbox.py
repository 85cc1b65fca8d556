"""Updates kept from the moment a platform counts them delivered until they are handled.

Telegram's long polling takes every update it handed out as delivered at the next ``getUpdates``, which
python-telegram-bot sends while the batch is still being handled; Zalo's ``getUpdates`` takes an update
as delivered the moment it returns it, and its webhook is answered at once. A process killed in between
(kill -9, a power cut) would lose a member's answer or command. So each update is written here first
(one transaction per batch), and a process starting hands on the ones it finds unhandled: handled means
``processed_updates`` has its key, as the conversation records it. Once its reply went out an update is
marked answered (its row deleted); one recorded and never answered (a kill between the two) is taken up
too, through the conversation's redelivery path, which shows what the member needs to go on and records
nothing twice. Rows live ``KEEP``; older ones are dropped (an update that failed for minutes is not worth a
late answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import and_, delete, exists, select, update

from bot.storage.db import Database, insert_if_new
from bot.storage.models import InboxUpdate, ProcessedUpdate

log = logging.getLogger(__name__)
KEEP = timedelta(minutes=10)
# how long a live process beside a starting one may take to answer an update it kept and write the mark: a
# recorded update still unanswered after that is one a killed process left (``replay_unanswered``)
SETTLE = 5.0
PRUNE_EVERY = timedelta(minutes=1)
FLUSH_WITHIN = 1.0  # seconds an answered update's row may wait for the next batch to delete it
_COLUMNS = ("source", "channel", "update_key", "payload", "received_at")


class Inbox:
    """The kept updates of one poller or webhook (``source``), whose conversation records them under ``channel``.

    A channel marks an update ``answered`` once its reply went out (kept in memory, deleted with the next
    write or within a second): one recorded but not answered is taken up again too, and its reply is worked out
    again by the conversation's redelivery path."""

    def __init__(self, db: Database, source: str, channel: str):
        self.db, self.source, self.channel = db, source, channel
        self._pruned: datetime | None = None
        self._answered: set[str] = set()
        self._lock = threading.Lock()
        self._flusher: asyncio.Task | None = None
        self._handed_on: set[str] = set()  # kept by a process before this one, handed on at the start

    def keep(self, updates: list[tuple[str, dict]], now: datetime) -> set[str]:
        """Write these (key, update) pairs in one transaction (with the answered ones' deletion); returns the keys
        not kept before (a platform may hand an update out twice)."""
        if not updates:
            return set()
        with self.db.session() as s:
            conn = s.connection()
            stmt = insert_if_new(conn.dialect.name, InboxUpdate.__table__, _COLUMNS, returning="update_key")
            fresh = {row[0] for key, update in updates for row in conn.execute(stmt, {
                "source": self.source, "channel": self.channel, "update_key": key,
                "payload": json.dumps(update, ensure_ascii=False, separators=(",", ":")), "received_at": now})}
            self._forget_answered(s)
            if self._pruned is None or now - self._pruned >= PRUNE_EVERY:
                s.execute(delete(InboxUpdate).where(InboxUpdate.source == self.source,
                                                    InboxUpdate.received_at < now - KEEP))
                self._pruned = now
        return fresh

    def answered(self, key: str) -> None:
        """The update's reply went out: its row is deleted with the next ``keep``, or within ``FLUSH_WITHIN`` seconds
        when no batch comes to carry it (one write for many answers under load, not one per answer). A kill in
        between leaves a reply that went out to be worked out again after the restart (shown twice, recorded
        once). Call it in the event loop; ``close`` at a stop writes what waits."""
        with self._lock:
            self._answered.add(key)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_after(FLUSH_WITHIN))

    async def close(self) -> None:
        """At a stop: what was answered is written now, so the next start does not answer it again."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self._flush_logged()

    async def _flush_after(self, delay: float) -> None:
        """Flush every ``delay`` seconds until nothing waits (keys marked while a flush runs are not left behind:
        no new flusher starts while this one runs)."""
        while True:
            await asyncio.sleep(delay)
            await self._flush_logged()
            if not self._answered:
                return

    async def _flush_logged(self) -> None:
        """``flush``; a database that fails leaves those updates to be answered again after a restart."""
        try:
            await asyncio.to_thread(self.flush)
        except Exception as exc:  # noqa: BLE001 - the replies went out; at worst they are worked out again later
            log.warning("%s: answered updates could not be marked so (%s)", self.source, exc.__class__.__name__)

    def flush(self) -> None:
        """Delete the updates answered since the last write."""
        if self._answered:
            with self.db.session() as s:
                self._forget_answered(s)

    def _forget_answered(self, s) -> None:
        with self._lock:
            keys, self._answered = self._answered, set()
        if keys:
            s.execute(delete(InboxUpdate).where(InboxUpdate.source == self.source,
                                                InboxUpdate.update_key.in_(sorted(keys))))

    def unanswered(self, now: datetime, *, unhandled_only: bool = False) -> list[tuple[str, dict]]:
        """The (key, update) pairs kept in the last ``KEEP`` and never answered, in the order they came
        (``unhandled_only``: only those no conversation has recorded either); older ones are deleted."""
        with self.db.session() as s:
            s.execute(delete(InboxUpdate).where(InboxUpdate.source == self.source, InboxUpdate.received_at < now - KEEP))
        query = select(InboxUpdate.update_key, InboxUpdate.payload).where(InboxUpdate.source == self.source)
        if unhandled_only:
            query = query.where(~_HANDLED)
        with self.db.read_session() as s:
            rows = s.execute(query.order_by(InboxUpdate.id)).all()
        return [(key, json.loads(payload)) for key, payload in rows]

    def claim_unanswered(self, before: datetime) -> list[tuple[str, dict]]:
        """Claim and return the updates kept in the ``KEEP`` before ``before`` that a conversation recorded and no
        reply was marked for, but those this process is still on: each goes to one process to be answered again,
        however many start together. A claim moves the row's time to ``before``: a process started no later no
        longer finds it, and one started later (this one killed while replaying) takes it up again; the row goes
        once the reply is marked answered."""
        with self._lock:
            mine = sorted(self._handed_on | self._answered)
        stmt = (update(InboxUpdate)
                .where(InboxUpdate.source == self.source, _HANDLED, InboxUpdate.received_at < before,
                       InboxUpdate.received_at >= before - KEEP, InboxUpdate.update_key.not_in(mine))
                .values(received_at=before)
                .returning(InboxUpdate.id, InboxUpdate.update_key, InboxUpdate.payload)
                .execution_options(synchronize_session=False))
        with self.db.session() as s:
            rows = s.execute(stmt).all()
        return [(key, json.loads(payload)) for _, key, payload in sorted(rows)]

    async def hand_on_unhandled(self, now: datetime, dispatch: Callable[[dict], object],
                                wanted: Callable[[dict], bool] = lambda update: True) -> int:
        """Dispatch the ``wanted`` updates a process killed before handling them kept (a channel's start); how
        many."""
        kept = await self._hand_on(lambda: self.unanswered(now, unhandled_only=True), dispatch, wanted,
                                   "received before the last stop and never handled: handling")
        with self._lock:
            self._handed_on.update(kept)
        return len(kept)

    async def replay_unanswered(self, started: datetime, replay: Callable[[dict], object],
                                wanted: Callable[[dict], bool] = lambda update: True) -> int:
        """``SETTLE`` seconds after a channel's start (``started``), hand to ``replay`` the ``wanted`` updates kept
        before it that a conversation recorded but whose reply was never marked sent: a process killed between
        the two left the member without it. Waiting lets a live process beside this one (webhooks served by
        several) answer its own first. How many."""
        await asyncio.sleep(SETTLE)
        try:
            kept = await self._hand_on(lambda: self.claim_unanswered(started), replay, wanted,
                                       "recorded before the last stop and never answered: answering")
        except Exception:  # noqa: BLE001 - the database: those members type again, as without this
            log.exception("%s: the updates recorded before the last stop and never answered could not be read",
                          self.source)
            return 0
        finally:
            with self._lock:
                self._handed_on.clear()  # handled by now, or answered again by the next start
        return len(kept)

    async def _hand_on(self, fetch: Callable[[], list[tuple[str, dict]]], dispatch: Callable[[dict], object],
                       wanted: Callable[[dict], bool], what: str) -> list[str]:
        """Dispatch what ``fetch`` returns and is ``wanted``; the keys dispatched."""
        kept = [(key, u) for key, u in await asyncio.to_thread(fetch) if wanted(u)]
        for _, update in kept:
            dispatch(update)
        if kept:
            log.warning("%s: %d update(s) %s them now", self.source, len(kept), what)
        return [key for key, _ in kept]

    @staticmethod
    def sources_kept(db: Database, prefix: str, now: datetime) -> list[str]:
        """The sources starting with ``prefix`` that hold updates of the last ``KEEP`` not answered (the branches'
        Zalo bots served by webhook, looked up only when traffic names them)."""
        with db.read_session() as s:
            return list(s.scalars(select(InboxUpdate.source).where(
                InboxUpdate.source.startswith(prefix), InboxUpdate.received_at >= now - KEEP).distinct()))

    def keys(self) -> list[str]:
        """The keys of every update kept (Telegram confirms up to the newest of them before it polls again)."""
        with self.db.read_session() as s:
            return list(s.scalars(select(InboxUpdate.update_key).where(InboxUpdate.source == self.source)))


_HANDLED = exists().where(and_(ProcessedUpdate.channel == InboxUpdate.channel,
                               ProcessedUpdate.update_key == InboxUpdate.update_key))
