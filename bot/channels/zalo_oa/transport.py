"""Outbox delivery over the Zalo OA: ``OATransport`` climbs the ladder (free consultation → paid
consultation → ZNS → call list) for each message the product starts, records the rung and its cost with
the outbox row's id (``zalo_oa_sends``), and keeps within the monthly budget.

A member on the call list, or who unfollowed the OA, gets a permanent ``SendError`` whose reason says
"chưa liên lạc được qua Zalo": the outbox then tries their other messenger, and ``/chualam`` shows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, time as clock_time, timedelta, timezone
from typing import Callable

from sqlalchemy import select

from bot.channels.zalo_oa.client import OUT_OF_WINDOW, OAClient
from bot.channels.zalo_oa.ladder import (CALL_LIST, RUNGS, ZNS_HOURS, OABudget, cost_of, record_interaction,
                                         rung_for, unfollowed, zns_allowed)
from bot.channels.zalo_oa.rendering import reply_messages, zns_content
from bot.channels.zalo_oa.tokens import AuthorisationLost, OAError
from bot.domain.messages import local
from bot.domain.phones import normalize_phone
from bot.domain.replies import Reply
from bot.outbox.queue import QuietHours
from bot.storage.models import ChatAccount, Member, OutboxMessage, Round, ZaloOaContact
from bot.timeutil import utcnow

log = logging.getLogger(__package__)


@dataclass
class _Target:
    contact: ZaloOaContact | None
    phone: str | None
    name: str
    purpose: str | None
    closes_at: datetime | None = None
    expires_at: datetime | None = None  # the outbox row's: the message is no use after it


class OATransport:
    channel = "zalo_oa"
    paced = True  # the outbox marks a message ``sending`` when its turn has come (``request_may_leave``)

    def __init__(self, client: OAClient, budget: OABudget, *, rate: float = 5.0,
                 clock: Callable[[], datetime] = utcnow):
        self.client, self.budget, self.rate, self.clock = client, budget, rate, clock
        self.prices = budget.prices
        self._lock = asyncio.Lock()
        self._next = 0.0
        self._held = 0  # đồng this process's sends under way may cost, not recorded yet (``_reserve``)
        # ZNS may go 06:00-21:59 only: the rest of the day is its quiet time, as the outbox's quiet hours are
        self._zns_quiet = QuietHours(clock_time(ZNS_HOURS[1]), clock_time(ZNS_HOURS[0]), budget.tz)
        self._released = 0  # đồng of holds ended so far (their cost recorded, or nothing spent)

    async def _pace(self) -> None:
        """Zalo publishes no per-second limit (UNCONFIRMED): a conservative steady rate. Then the message is in
        flight (``request_may_leave``)."""
        from bot.outbox.sender import request_may_leave

        async with self._lock:
            wait = self._next - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = time.monotonic() + 1.0 / self.rate
        await request_may_leave()

    def _target(self, external_id: str, outbox_id: int | None) -> _Target:
        with self.budget.db.session() as s:
            contact = s.get(ZaloOaContact, external_id)
            if contact is not None:
                s.expunge(contact)
            member = s.scalar(select(Member).join(ChatAccount, ChatAccount.member_id == Member.id)
                              .where(ChatAccount.channel == self.channel, ChatAccount.external_id == external_id))
            row = s.execute(select(OutboxMessage.purpose, Round.closes_at, OutboxMessage.expires_at)
                            .outerjoin(Round, Round.id == OutboxMessage.round_id)
                            .where(OutboxMessage.id == outbox_id)).first() if outbox_id else None
            return _Target(contact, member.phone if member else None, member.full_name if member else "",
                           *(row if row else (None, None, None)))

    async def _reserve(self, rung: str, now: datetime, messages: int) -> int | None:
        """The cost of ``messages`` of ``rung``, held against the month's budget until ``_release``; None
        when the budget cannot pay it. Sends under way in this process count as spent: the check and the
        hold happen with no pause between them, so concurrent sends cannot each take the same last đồng
        (several processes can still, each by at most one send's cost)."""
        cost = cost_of(rung, self.prices) * messages
        if not cost or not self.budget.monthly:
            return cost
        released = self._released
        spent = await asyncio.to_thread(self.budget.used, now)
        # a hold that ended while the month's spending was read may have been recorded after the read: counted
        spent += self._released - released
        if spent + self._held + cost > self.budget.monthly:
            return None
        self._held += cost
        return cost

    def _release(self, held: int | None) -> None:
        if held and self.budget.monthly:
            self._held -= held
            self._released += held

    def _record(self, outbox_id: int | None, external_id: str, rung: str, now: datetime, messages: int = 1) -> None:
        with self.budget.db.session() as s:
            self.budget.record(s, outbox_id, external_id, rung, now, messages)

    async def _record_sent(self, outbox_id: int | None, external_id: str, rung: str, now: datetime,
                           messages: int) -> None:
        """``_record`` of parts that went: a database failing now must not make the outbox send them (and pay for
        them) again; logged, the month's spending is short of them."""
        try:
            await asyncio.to_thread(self._record, outbox_id, external_id, rung, now, messages)
        except Exception as exc:  # noqa: BLE001 - the member has the message: nothing to retry
            log.error("Zalo OA: %d %s message(s) to %s went out but their cost was not recorded (%s)",
                      messages, rung, external_id, exc.__class__.__name__)

    async def deliver(self, external_id: str, reply: Reply, attachment: tuple[str, bytes] | None) -> None:
        from bot.outbox.sender import CURRENT_MESSAGE, SKIP_PARTS, SendError, after_parts, unanswered

        outbox_id, now = CURRENT_MESSAGE.get(), self.clock()
        target = await asyncio.to_thread(self._target, external_id, outbox_id)
        skip = SKIP_PARTS.get()  # parts an earlier try delivered: not sent (nor paid for) twice
        messages = self._messages(reply, attachment)[skip:]  # a long reply is several cs messages, each charged
        rung = rung_for(target.contact, target.phone, target.purpose, self.prices, now, target.closes_at)
        ahead = 0  # parts of ``messages`` an earlier rung of this try delivered before Zalo refused the rest
        try:
            if rung != "free" and target.contact is not None and not unfollowed(target.contact):
                rung = await self._preflight(external_id, target, now) or rung
            for candidate in RUNGS[RUNGS.index(rung):]:
                if candidate == "call_list":
                    break
                if candidate == "paid" and not self.prices.paid_allowed:
                    continue
                if candidate == "zns" and not zns_allowed(target.phone, target.purpose, target.closes_at,
                                                          self.prices, now):
                    continue
                if candidate == "zns" and (wait := (self._zns_quiet.next_allowed(now) - now).total_seconds()):
                    ends = [t for t in (target.closes_at, target.expires_at) if t is not None]
                    if ends and now + timedelta(seconds=wait) >= min(ends):
                        continue  # the round (or the message) ends before 06:00: the call list, not a late ZNS
                    raise SendError("not_yet", "zalo_oa: ZNS is sent from 06:00 to 21:59 only", retry_after=wait)
                rest = messages[ahead:]
                count = 1 if candidate == "zns" else len(rest)  # ZNS: one template message
                held = await self._reserve(candidate, now, count)
                if held is None:
                    log.warning("Zalo OA: the monthly budget cannot pay a %s message to %s; next rung",
                                candidate, external_id)
                    continue
                try:
                    sent = await self._send(candidate, external_id, reply, rest, target, outbox_id)
                except OAError as exc:
                    exc.sent = getattr(exc, "parts_done", 0) + exc.maybe_delivered  # no answer: most likely it went
                    if exc.sent:  # the parts that reached the member are paid for, whatever happens to the rest
                        await self._record_sent(outbox_id, external_id, candidate, now, exc.sent)
                    raise
                else:
                    if sent:  # each part on the rung it went by, paid once
                        await self._record_sent(outbox_id, external_id, candidate, now, sent)
                finally:  # recorded (or failed): the month's spending counts it, or it cost nothing
                    self._release(held)
                if candidate == "zns" or sent == len(rest):
                    return
                ahead += sent  # the rest climbs on
        except AuthorisationLost as exc:
            raise SendError("permanent", exc.description) from None
        except SendError as exc:  # e.g. ZNS outside its hours: the parts already delivered stay delivered
            raise after_parts(exc, skip + ahead) from None
        except OAError as exc:  # from ``_send``, its delivered parts recorded there
            done = skip + ahead + exc.sent
            if exc.maybe_delivered:  # as on Telegram and the Zalo bot: never sent, nor paid for, twice
                raise unanswered(str(exc), done - 1, done if candidate == "zns" else skip + len(messages)) \
                    from None
            if exc.transient:
                raise after_parts(SendError("transient", f"zalo_oa: {exc}"), done) from None
            raise after_parts(SendError("permanent", exc.description), done) from None
        await asyncio.to_thread(self._record, outbox_id, external_id, "call_list", now)
        raise SendError("permanent", CALL_LIST + (" (đã bỏ theo dõi OA)" if unfollowed(target.contact) else ""))

    async def _preflight(self, external_id: str, target: _Target, now: datetime) -> str | None:
        """Ask Zalo when the member last interacted (a call or a menu tap we got no event for may have
        opened the free window): the rung that gives, or None to keep ours."""
        try:
            answer = await self.client.quota(external_id)
        except OAError as exc:
            if isinstance(exc, AuthorisationLost):
                raise
            log.info("Zalo OA: quota pre-flight for %s failed (%s); using our own record", external_id, exc)
            return None
        stamp = answer.get("last_interaction")
        if not isinstance(stamp, (int, float)) or stamp <= 0:
            return None
        seen = datetime.fromtimestamp(stamp / 1000, timezone.utc)
        contact = target.contact
        if contact.last_interaction_at is not None and seen <= contact.last_interaction_at:
            return None
        await asyncio.to_thread(record_interaction, self.budget.db, external_id, seen)
        contact.last_interaction_at = seen
        return rung_for(contact, target.phone, target.purpose, self.prices, now, target.closes_at)

    @staticmethod
    def _messages(reply: Reply, attachment) -> list:
        text = reply.text
        if attachment is not None:
            from bot.channels.zalo.rendering import files_note

            text = f"{text}\n\n{files_note([attachment])}"
        return reply_messages(reply, text)

    async def _send(self, rung: str, external_id: str, reply: Reply, messages: list, target: _Target,
                    outbox_id: int | None) -> int:
        """How many of ``messages`` went (ZNS: one template for all of them): all of them, or fewer when Zalo
        says this rung cannot reach the member (the rest takes the next rung)."""
        if rung == "zns":
            await self._pace()
            phone = (normalize_phone(target.phone or "") or "").lstrip("+")  # 84…
            # Template parameters as the approved template names them (UNCONFIRMED: set when approving it).
            deadline = f"Hạn cuối: {local(target.closes_at, self.budget.tz)}." if target.closes_at else None
            data = {"ho_ten": target.name[:30], "noi_dung": zns_content(reply.text, deadline)}
            await self.client.send_zns(phone, self.prices.zns_template or "", data, f"outbox-{outbox_id}")
            return 1
        for done, message in enumerate(messages):
            await self._pace()
            try:
                await self.client.send_cs(external_id, message.text, message.buttons)
            except OAError as exc:
                if exc.code in OUT_OF_WINDOW:
                    log.info("Zalo OA: %s is out of the window for a %s message (%s)", external_id, rung, exc.code)
                    return done
                exc.parts_done = done  # the ones before it reached the member (and are paid for)
                raise
        return len(messages)
