"""The monthly Zalo message quota: ``ZaloQuota`` counts in the database what Zalo sent this calendar month,
warns the operator near the limit, and refuses (``QuotaRefusal``) a broadcast that cannot be sent in full.
It exists because Zalo plans cap messages per month, and both the live conversation, the outbox transport and
the scheduler (through ChatService) must consult the same budget.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.storage.db import Database
from bot.storage.models import ChannelUsage, ChatAccount, OutboxMessage
from bot.timeutil import utcnow

KNOWN_FOR = 5.0  # seconds a count read or written here answers ``used_up`` without the database ...
KNOWN_MARGIN = 100  # ... while at least this many messages are left (other processes send meanwhile)

log = logging.getLogger(__package__)  # "bot.channels.zalo", the one logger name the channel had before the split


@dataclass(frozen=True)
class QuotaRefusal:
    """A broadcast that does not fit in what is left of the month's quota."""

    needed: int
    left: int
    used: int
    pending: int
    quota: int
    month: str  # YYYY-MM

    def __str__(self) -> str:
        return (f"Zalo monthly quota: it needs {self.needed} message(s) but only {self.left} of {self.quota} "
                f"are left for {self.month} ({self.used} sent, {self.pending} waiting in the outbox); "
                "nothing of it was sent")

    @property
    def text(self) -> str:
        year, month = self.month.split("-")
        return (f"chưa gửi: cần {self.needed} tin nhắn Zalo nhưng hạn mức tháng {month}/{year} của gói Zalo "
                f"chỉ còn {self.left} tin (đã dùng {self.used}/{self.quota}). Chưa tin nào được gửi; đề nghị "
                "quản trị viên nâng gói Zalo, hoặc đồng chí nhắc trực tiếp.")


class ZaloQuota:
    """Counts what Zalo sent this month (local calendar month) in the database, warns the operator
    at 80%, and refuses a broadcast that cannot be sent in full (``refusal``: the budget that
    ChatService and the scheduler ask before they enqueue one)."""

    channel = "zalo"

    def __init__(self, db: Database, monthly: int | None, tz: ZoneInfo, *,
                 channels: Iterable[str] = ("telegram", "zalo"), warn_at: float = 0.8):
        self.db, self.monthly, self.tz = db, monthly or None, tz
        self.channels, self.warn_at = tuple(channels), warn_at
        self._logged: tuple | None = None
        self._logged_at = 0.0
        self.exhausted: str | None = None  # the month whose quota this process saw used up
        self._known: tuple[str, int, float] | None = None  # (month, count, monotonic time read)

    def month(self, now: datetime) -> str:
        return now.astimezone(self.tz).strftime("%Y-%m")

    def used(self, now: datetime | None = None) -> int:
        with self.db.session() as s:
            return self._used(s, now or utcnow())

    def _used(self, s: Session, now: datetime) -> int:
        row = s.get(ChannelUsage, (self.channel, self.month(now)))
        return row.sent if row is not None else 0

    def add(self, count: int, now: datetime | None = None) -> int:
        """Record ``count`` messages sent; returns this month's total."""
        now = now or utcnow()
        month = self.month(now)
        table = ChannelUsage.__table__
        with self.db.session() as s:
            insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            total = s.scalar(insert(table).values(channel=self.channel, month=month, sent=count, updated_at=now)
                             .on_conflict_do_update(index_elements=["channel", "month"],
                                                    set_={"sent": table.c.sent + count, "updated_at": now})
                             .returning(table.c.sent))
        self._known = (month, total, time.monotonic())
        if self.monthly:
            before = total - count
            if total >= self.monthly:
                self.exhausted = month
            if before < self.monthly <= total:
                log.error("Zalo: the monthly quota is used up: %d of %d messages in %s; Zalo refuses more "
                          "until next month or a larger plan", total, self.monthly, month)
            elif before < self.warn_at * self.monthly <= total:
                log.warning("Zalo: %d of %d messages of the monthly quota used in %s (%d%%)", total,
                            self.monthly, month, 100 * total // self.monthly)
        return total

    def used_up(self, now: datetime) -> bool:
        """Nothing is left of this month's quota (seen by this process, or counted in the database by
        any process; read without taking SQLite's write lock). Far from the limit, a count this process
        read or wrote in the last few seconds answers without the database: a broadcast through 2,000
        bots would otherwise read once per message."""
        if not self.monthly:
            return False
        month = self.month(now)
        if self.exhausted == month:
            return True
        known = self._known
        if (known is not None and known[0] == month and known[1] < self.monthly - KNOWN_MARGIN
                and time.monotonic() - known[2] < KNOWN_FOR):
            return False
        with self.db.read_session() as s:
            used = self._used(s, now)
        self._known = (month, used, time.monotonic())
        return used >= self.monthly

    def describe(self, now: datetime | None = None) -> str:
        now = now or utcnow()
        used = self.used(now)
        if not self.monthly:
            return f"Zalo: {used} message(s) sent in {self.month(now)} (no monthly quota set)"
        return f"Zalo: {used} of {self.monthly} messages of the monthly quota used in {self.month(now)}"

    def prefer_zalo(self, s: Session, member_ids: Iterable[int]) -> set[int]:
        """Members whose outbound messages go to Zalo: it is their most recently used messenger."""
        ids = list(dict.fromkeys(member_ids))
        first: dict[int, str] = {}
        for i in range(0, len(ids), 1000):
            rows = s.execute(
                select(ChatAccount.member_id, ChatAccount.channel)
                .where(ChatAccount.member_id.in_(ids[i:i + 1000]), ChatAccount.channel.in_(self.channels))
                .order_by(ChatAccount.member_id, ChatAccount.last_seen_at.desc().nullslast(), ChatAccount.id))
            for mid, channel in rows:
                first.setdefault(mid, channel)
        return {mid for mid, channel in first.items() if channel == self.channel}

    def refusal(self, s: Session, member_ids: Iterable[int], now: datetime, *, purpose: str | None = None,
                closes_at: datetime | None = None) -> QuotaRefusal | None:
        """None when one message to each of these members fits in what is left this month (every message
        costs the same here, whatever its ``purpose`` and its round's deadline ``closes_at``)."""
        if not self.monthly:
            return None
        needed = len(self.prefer_zalo(s, member_ids))
        if not needed:
            return None
        counts = dict(s.execute(
            select(OutboxMessage.member_id, func.count()).where(
                OutboxMessage.status.in_(("pending", "claimed", "sending"))).group_by(OutboxMessage.member_id)).all())
        pending = sum(counts[mid] for mid in self.prefer_zalo(s, counts))
        used = self._used(s, now)
        left = self.monthly - used - pending
        if needed <= left:
            return None
        refusal = QuotaRefusal(needed, max(left, 0), used, pending, self.monthly, self.month(now))
        key = (refusal.needed, refusal.left, refusal.month)
        if key != self._logged or time.monotonic() - self._logged_at > 3600:
            self._logged, self._logged_at = key, time.monotonic()
            log.error("%s", refusal)
        return refusal
