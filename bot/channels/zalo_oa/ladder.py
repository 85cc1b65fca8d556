"""Windows and money: who the OA may write to, by which rung, at what cost, within which budget.

Every interaction (a text, a tap, a follow) is recorded in ``zalo_oa_contacts``. A message the product
starts climbs the ladder set for the deployment: a free consultation message (last interaction ≤ 48 h),
a paid one (≤ 7 days, if allowed), a ZNS template to the member's phone (if a template id is set, for the
purposes allowed, 06:00-21:59), else the secretary's call list. ``OABudget`` sums what each rung cost this
month (``zalo_oa_sends``), warns at 80% and refuses a broadcast whose estimated cost does not fit.
Prices are UNCONFIRMED in the spec: they are settings.
"""

from __future__ import annotations

import logging
import time as clock_time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, false, func, literal, null, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.channels.zalo.quota import ZaloQuota
from bot.domain.messages import thousands
from bot.domain.oversight_messages import CALL_LIST  # the wording /chualam shows
from bot.storage.db import Database
from bot.storage.models import ChatAccount, Member, OutboxMessage, Round, ZaloOaContact, ZaloOaSend
from bot.timeutil import utcnow

log = logging.getLogger(__package__)
CHANNEL = "zalo_oa"
FREE_WINDOW = timedelta(hours=48)
PAID_WINDOW = timedelta(days=7)
ZNS_HOURS = (6, 22)  # 06:00-21:59 local time
RUNGS = ("free", "paid", "zns", "call_list")


@dataclass(frozen=True)
class Prices:
    paid: int = 55
    zns: int = 300
    paid_allowed: bool = False
    zns_template: str | None = None
    zns_purposes: tuple[str, ...] = ("remind", "nudge")
    zns_last_hours: int = 48  # 0: any time before the deadline


def record_interaction(db: Database, user_id: str, now: datetime, following: bool | None = None) -> bool:
    """A text, a tap or a follow at ``now`` (the event's own time) renews the windows; ``following``
    False records an unfollow (no renewal). Events come out of order: nothing moves back in time, and of a
    follow and an unfollow the later in time holds, whichever is delivered last (a late retry changes
    nothing). A text or a tap from someone never seen to unfollow counts as following: members who followed
    before the bot came send no follow event. Returns whether the member follows the OA now, as far as we know
    (True for someone never seen to unfollow)."""
    table = ZaloOaContact.__table__

    def latest(column):  # ``now`` typed as the column, stored as naive UTC on PostgreSQL
        return case((column > now, column), else_=literal(now, column.type))

    values: dict = {"updated_at": latest(table.c.updated_at)}
    if following is not False:
        values["last_interaction_at"] = latest(table.c.last_interaction_at)
    if following is True:
        stale = and_(table.c.unfollowed_at.is_not(None), table.c.unfollowed_at > now)
        values["following"] = case((stale, table.c.following), else_=true())
        values["unfollowed_at"] = case((stale, table.c.unfollowed_at), else_=null())
        values["followed_at"] = latest(table.c.followed_at)
    elif following is None:  # no unfollow seen: they can write to us (rows stored False before this was so)
        values["following"] = case((table.c.unfollowed_at.is_(None), true()), else_=table.c.following)
    elif following is False:
        stale = and_(table.c.followed_at.is_not(None), table.c.followed_at > now)
        values["following"] = case((stale, table.c.following), else_=false())
        values["unfollowed_at"] = case((stale, table.c.unfollowed_at), else_=latest(table.c.unfollowed_at))
    with db.session() as s:
        insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
        first = {"updated_at": now, "following": following is not False,
                 "unfollowed_at": now if following is False else None,
                 "followed_at": now if following is True else None}
        if following is not False:
            first["last_interaction_at"] = now
        row = s.execute(insert(table).values({"user_id": user_id, **first})
                        .on_conflict_do_update(index_elements=["user_id"], set_=values)
                        .returning(table.c.following, table.c.unfollowed_at)).first()
        return bool(row.following) or row.unfollowed_at is None


def unfollowed(contact: ZaloOaContact | None) -> bool:
    """The member unfollowed the OA and has not followed since: the OA sends them nothing. Not so for one never
    seen to follow (they followed before the bot came, and just typed)."""
    return contact is not None and contact.unfollowed_at is not None and not contact.following


def zns_allowed(phone: str | None, purpose: str | None, closes_at: datetime | None, prices: Prices,
                now: datetime) -> bool:
    """A template is set, the member has a phone, and the message is of a kind and a time ZNS is kept for."""
    if not (prices.zns_template and phone):
        return False
    if purpose is not None and purpose not in prices.zns_purposes:
        return False
    return not (prices.zns_last_hours and closes_at is not None
                and closes_at - now > timedelta(hours=prices.zns_last_hours))


def rung_for(contact: ZaloOaContact | None, phone: str | None, purpose: str | None, prices: Prices,
             now: datetime, closes_at: datetime | None = None) -> str:
    """The cheapest rung that can reach this member now (before budget and hours)."""
    if unfollowed(contact):
        return "call_list"  # an unfollowed member gets nothing from the OA
    age = now - contact.last_interaction_at if contact is not None and contact.last_interaction_at else None
    if age is not None and age <= FREE_WINDOW:
        return "free"
    if age is not None and age <= PAID_WINDOW and prices.paid_allowed:
        return "paid"
    return "zns" if zns_allowed(phone, purpose, closes_at, prices, now) else "call_list"


def cost_of(rung: str, prices: Prices) -> int:
    return {"paid": prices.paid, "zns": prices.zns}.get(rung, 0)


@dataclass(frozen=True)
class BudgetRefusal:
    """A broadcast whose estimated cost does not fit in what is left of the month's OA budget."""

    needed: int
    left: int
    spent: int
    budget: int
    month: str

    def __str__(self) -> str:
        return (f"Zalo OA monthly budget: it needs about {self.needed:,} đ but only {self.left:,} đ of "
                f"{self.budget:,} đ are left for {self.month} ({self.spent:,} đ spent or committed); nothing of it "
                "was sent")

    @property
    def text(self) -> str:
        year, month = self.month.split("-")
        return (f"chưa gửi: cần khoảng {thousands(self.needed)} đ tin Zalo OA nhưng ngân sách tháng {month}/{year} chỉ "
                f"còn {thousands(self.left)} đ (đã dùng {thousands(self.spent)}/{thousands(self.budget)} đ). Chưa tin nào được gửi; đề nghị "
                "quản trị viên nâng ngân sách, hoặc đồng chí nhắc trực tiếp.")


class OABudget(ZaloQuota):
    """The OA's monthly budget in đồng; shares ``month`` and ``prefer_zalo`` (who gets outbound
    messages on this channel: their most recently used messenger) with the Zalo bot's quota guard."""

    channel = CHANNEL

    def __init__(self, db: Database, monthly: int | None, tz: ZoneInfo, prices: Prices, *,
                 channels: Iterable[str] = ("telegram", "zalo", CHANNEL), warn_at: float = 0.8):
        super().__init__(db, monthly, tz, channels=channels, warn_at=warn_at)
        self.prices = prices

    def spent(self, s: Session, now: datetime) -> int:
        return int(s.scalar(select(func.coalesce(func.sum(ZaloOaSend.cost), 0))
                            .where(ZaloOaSend.month == self.month(now))) or 0)

    def used(self, now: datetime | None = None) -> int:
        with self.db.read_session() as s:
            return self.spent(s, now or utcnow())

    def estimate(self, s: Session, member_ids: Iterable[int], now: datetime, purpose: str | None = None,
                 closes_at: datetime | None = None) -> int:
        """What one message of ``purpose`` (about a round closing at ``closes_at``) to each of these members
        would cost on the OA now, on the rung the sender would take (members whose messenger is another one
        cost nothing here). One each: a broadcast (an announcement, a reminder) always fits one Zalo message
        within the document checker's limits on code, title and note."""
        return sum(self._cost(phone, contact, purpose, closes_at, now)
                   for phone, contact in self._reach(s, member_ids).values())

    def _reach(self, s: Session, member_ids: Iterable[int]) -> dict[int, tuple[str | None, ZaloOaContact | None]]:
        """The phone and OA contact of each of these members whose messages go by the OA."""
        ids, reach = sorted(self.prefer_zalo(s, member_ids)), {}
        for i in range(0, len(ids), 1000):
            reach.update((mid, (phone, contact)) for mid, phone, contact in s.execute(
                select(Member.id, Member.phone, ZaloOaContact)
                .join(ChatAccount, (ChatAccount.member_id == Member.id) & (ChatAccount.channel == CHANNEL))
                .outerjoin(ZaloOaContact, ZaloOaContact.user_id == ChatAccount.external_id)
                .where(Member.id.in_(ids[i:i + 1000]))))
        return reach

    def _cost(self, phone, contact, purpose: str | None, closes_at: datetime | None, now: datetime) -> int:
        return cost_of(rung_for(contact, phone, purpose, self.prices, now, closes_at), self.prices)

    def record(self, s: Session, outbox_id: int | None, user_id: str, rung: str, now: datetime,
               messages: int = 1) -> int:
        """What sending ``messages`` Zalo messages of ``rung`` for one outbox row cost, recorded."""
        cost = cost_of(rung, self.prices) * messages
        before = self.spent(s, now)
        s.add(ZaloOaSend(outbox_id=outbox_id, user_id=user_id, rung=rung, cost=cost, month=self.month(now),
                         sent_at=now))
        if self.monthly and cost:
            total = before + cost
            if before < self.warn_at * self.monthly <= total:
                log.warning("Zalo OA: %s đ of the %s đ monthly budget spent in %s (%d%%)", f"{total:,}",
                            f"{self.monthly:,}", self.month(now), 100 * total // self.monthly)
        return cost

    def refusal(self, s: Session, member_ids: Iterable[int], now: datetime, *, purpose: str | None = None,
                closes_at: datetime | None = None) -> BudgetRefusal | None:
        """None when the broadcast's estimated cost fits in what is left this month (the messages
        waiting in the outbox count as committed). ``purpose`` and ``closes_at`` (its round's deadline)
        choose the rung as the sender will: an announcement never goes by ZNS unless configured so."""
        if not self.monthly:
            return None
        needed = self.estimate(s, member_ids, now, purpose, closes_at)
        if not needed:
            return None
        waiting = s.execute(select(OutboxMessage.member_id, OutboxMessage.purpose, Round.closes_at)
                            .outerjoin(Round, Round.id == OutboxMessage.round_id)
                            .where(OutboxMessage.status.in_(("pending", "claimed", "sending")))).all()
        reach = self._reach(s, {mid for mid, _kind, _deadline in waiting})
        committed = self.spent(s, now) + sum(self._cost(*reach[mid], kind, deadline, now)  # each row, as it will go
                                             for mid, kind, deadline in waiting if mid in reach)
        left = self.monthly - committed
        if needed <= left:
            return None
        refusal = BudgetRefusal(needed, max(left, 0), committed, self.monthly, self.month(now))
        key = (refusal.needed, refusal.left, refusal.month)
        if key != self._logged or clock_time.monotonic() - self._logged_at > 3600:
            self._logged, self._logged_at = key, clock_time.monotonic()
            log.error("%s", refusal)
        return refusal

    def describe(self, now: datetime | None = None) -> str:
        now = now or utcnow()
        spent = self.used(now)
        if not self.monthly:
            return f"Zalo OA: {spent:,} đ spent in {self.month(now)} (no monthly budget set)"
        return f"Zalo OA: {spent:,} of {self.monthly:,} đ of the monthly budget spent in {self.month(now)}"


class Budgets:
    """Several channels' budgets asked as one (the Zalo bot's quota and the OA's đồng)."""

    def __init__(self, *budgets):
        self.budgets = [b for b in budgets if b is not None]

    def refusal(self, s: Session, member_ids, now: datetime, **kind):
        ids = list(member_ids)
        for budget in self.budgets:
            refusal = budget.refusal(s, ids, now, **kind)
            if refusal is not None:
                return refusal
        return None
