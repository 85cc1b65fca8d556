"""Many Zalo bots in one process: the branches' own bots (``zalo_bots``) beside the default bot.

Nothing is kept per bot beyond what its traffic needs: a bot is looked up in the database when an
update or an outbound message names it, and kept in a small cache (``BotCache``) of recently used
bots: a client (sharing one connection pool), its conversation (``BotChannel``), its outbox pacing
and its monthly count. Members link to their own unit's bot (the nearest unit above them that has
one); a code typed to another bot is answered with the right bot's name; a member linked through another bot
(the default one, before their branch had its own) moves by writing to their own bot; a bot that serves
``MEMBER_CAP`` members takes no more (Zalo would not serve the 51st; ``claim_slot`` holds the cap
when members link at the same moment), and the unit's secretary is told through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.channels.zalo.channel import EVENT_TEXT, ZaloChannel
from bot.channels.zalo.client import ZaloClient
from bot.channels.zalo.mentions import bot_names
from bot.channels.zalo.quota import QuotaRefusal, ZaloQuota
from bot.channels.zalo.registry import MEMBER_CAP, linked_count, usage_key
from bot.channels.zalo.transport import ZaloTransport
from bot.channels.zalo.updates import in_group
from bot.domain.oversight_messages import CALL_LIST
from bot.logs import learn_secrets
from bot.domain.replies import Outcome, Reply
from bot.outbox import queue
from bot.services.chat import ChatService, parse_command
from bot.services.inbox import Inbox
from bot.services.linking import code_said, find_code, unit_bot
from bot.storage.db import Database
from bot.storage.models import (
    ChannelUsage, ChatAccount, LinkCode, Member, OutboxMessage, Unit, UnitAncestor, ZaloBot,
)
from bot.timeutil import utcnow

log = logging.getLogger(__package__)

DEFAULT_BOT_NAME = "Học Tập"  # what the secretaries are told the default bot is called, unless configured
CACHE_SIZE = 256  # bots kept ready; the others are read again from the database when they are used
CACHE_SECONDS = 60.0  # a rotated token or a removed bot is seen within this time


def wrong_bot(name: str, link: str | None) -> Reply:
    where = f" tại {link}" if link else " trên Zalo"
    return Reply(f"⚠️ Mã này dành cho bot Zalo «{name}» của chi bộ đồng chí, không phải bot này. Đồng chí mở "
                 f"bot «{name}»{where} rồi gõ lại mã ở đó. Mã vẫn dùng được.")


def not_your_bot(name: str, link: str | None) -> Reply:
    where = f" tại {link}" if link else " trên Zalo"
    return Reply(f"⚠️ Đồng chí đã liên kết tài khoản qua bot Zalo «{name}», không phải bot này. Đồng chí mở bot "
                 f"«{name}»{where} để học tập và làm bài kiểm tra.")


def out_of_quota(name: str, needed: int, left: int, monthly: int, month: str) -> Reply:
    year, mm = month.split("-")
    return Reply(f"⚠️ Bot Zalo «{name}» chỉ còn {left}/{monthly} tin của tháng {mm}/{year} (giới hạn của gói Zalo "
                 f"miễn phí) nhưng đợt gửi này cần {needed} tin qua bot ấy. Các chi bộ khác vẫn nhận đủ. Đồng chí nào "
                 "của bot này có Telegram hoặc OA Zalo sẽ nhận qua kênh đó; người không có kênh khác được ghi "
                 f"«{CALL_LIST}» trong /chualam: đề nghị nhắc trực tiếp, hoặc báo quản trị viên tạo thêm bot.")


def bot_full(name: str) -> Reply:
    return Reply(f"⚠️ Bot Zalo «{name}» đã phục vụ đủ {MEMBER_CAP} người (giới hạn của gói Zalo miễn phí) nên chưa "
                 "liên kết thêm được. Đồng chí báo bí thư chi bộ để được hướng dẫn; mã của đồng chí vẫn giữ nguyên.")


def cannot_move(name: str, old_name: str) -> Reply:
    return Reply(f"⚠️ Bot Zalo «{name}» của chi bộ đã phục vụ đủ {MEMBER_CAP} người (giới hạn của gói Zalo miễn phí) "
                 f"nên chưa chuyển đồng chí sang được. Đồng chí tiếp tục học tập và làm bài qua bot «{old_name}» như "
                 "trước; bí thư chi bộ đã được báo.")


def secretary_told(name: str, member: Member) -> Reply:
    return Reply(f"📣 Bot Zalo «{name}» của chi bộ đã đủ {MEMBER_CAP} người dùng (giới hạn của gói Zalo miễn phí): "
                 f"đồng chí {member.full_name} ({member.code}) chưa liên kết được. Đề nghị đồng chí liên hệ quản trị "
                 "viên để tạo thêm bot hoặc cho đồng chí ấy học qua Telegram.")


@dataclass
class Admission:
    """What a bot does with a code typed by someone not yet linked: a reply instead of linking, or
    ``stamp`` (link, then record the bot on the account)."""

    reply: Reply | None = None
    stamp: bool = False


def admit(s: Session, bot_pk: int | None, external_id: str, text: str, now: datetime, *,
          default_name: str, default_link: str | None) -> Admission:
    """Checks before this bot (``bot_pk``; None for the default) serves a message: a member linked through
    another bot is sent there (each bot's 50 places and 3,000 messages are its branch's), and a code
    is checked before it links an account through this bot."""
    linked = s.execute(select(ChatAccount.bot_id, Member.active, Member.id.label("member_id"), Member.unit_id)
                       .join(Member, Member.id == ChatAccount.member_id)
                       .where(ChatAccount.channel == "zalo", ChatAccount.external_id == external_id)).first()
    if linked is not None and linked.bot_id != bot_pk:
        own = s.get(ZaloBot, linked.bot_id) if linked.bot_id is not None else None
        own_name = own.name if own else default_name
        if linked.active and bot_pk is not None and _own_bot_is(s, linked.unit_id, bot_pk):
            return _move_here(s, bot_pk, external_id, linked.member_id, own_name, now)
        return Admission(not_your_bot(own_name, own.share_link if own else default_link))
    command, arg = parse_command(text)  # as the conversation will read it: /start CODE, start CODE, bare, quoted
    code = (code_said(arg) or arg) if command == "start" and arg else code_said(text.strip()) if command is None else None
    if code is None or (linked is not None and linked.active):  # an active member's chat links nothing anew
        return Admission()
    link = find_code(s, code)
    if link is None or link.used_at is not None:
        return Admission(stamp=bot_pk is not None)
    member = s.get(Member, link.member_id)
    right = unit_bot(s, member.unit_id)
    if (right.id if right else None) != bot_pk:
        return Admission(wrong_bot(right.name, right.share_link) if right else wrong_bot(default_name, default_link))
    if bot_pk is None:
        return Admission()
    moving_within = link.replaces_link and s.scalar(select(ChatAccount.id).where(  # a relink takes no new place
        ChatAccount.channel == "zalo", ChatAccount.member_id == member.id, ChatAccount.bot_id == bot_pk)) is not None
    if linked_count(s, bot_pk) >= MEMBER_CAP and not moving_within:
        _tell_secretaries(s, right, member, now)
        return Admission(bot_full(right.name))
    return Admission(stamp=True)


def claim_slot(s: Session, bot_pk: int, external_id: str, now: datetime) -> Reply | None:
    """Put the bot on the account just linked through it if the bot still serves fewer than
    ``MEMBER_CAP`` members; otherwise undo the link (the code works again) and tell the secretaries.

    ``admit`` counted before the link, but two members linking at once would both pass that count:
    here the count and the stamp are one transaction holding the bot's row (``FOR UPDATE`` on
    PostgreSQL; on SQLite ``BEGIN IMMEDIATE`` already lets one writer at a time). The refusal, or None.
    """
    bot = s.scalar(select(ZaloBot).where(ZaloBot.id == bot_pk).with_for_update())
    account = s.scalar(select(ChatAccount).filter_by(channel="zalo", external_id=external_id, bot_id=None))
    if bot is None or account is None:
        return None
    if linked_count(s, bot_pk) < MEMBER_CAP:
        account.bot_id = bot_pk
        return None
    member = s.get(Member, account.member_id)
    s.execute(update(LinkCode).where(LinkCode.member_id == member.id, LinkCode.used_at == account.linked_at)
              .values(used_at=None))
    s.delete(account)
    _tell_secretaries(s, bot, member, now)
    return bot_full(bot.name)


def _own_bot_is(s: Session, unit_id: int, bot_pk: int) -> bool:
    right = unit_bot(s, unit_id)
    return right is not None and right.id == bot_pk


def _move_here(s: Session, bot_pk: int, external_id: str, member_id: int, old_name: str, now: datetime) -> Admission:
    """A member linked through another bot writes to their own unit's bot: their branch got a bot after they
    linked (through the default bot), or they moved to a branch with one. It is the same Zalo account, so its link
    moves here, freeing the old bot's place, while this bot has room (counted holding its row, as ``claim_slot``)."""
    bot = s.scalar(select(ZaloBot).where(ZaloBot.id == bot_pk).with_for_update())
    account = ChatAccount.channel == "zalo", ChatAccount.external_id == external_id
    if s.scalar(select(ChatAccount.bot_id).where(*account)) == bot_pk:
        return Admission()  # moved meanwhile by the member's message before this one (another process)
    if linked_count(s, bot_pk) >= MEMBER_CAP:
        _tell_secretaries(s, bot, s.get(Member, member_id), now)
        return Admission(cannot_move(bot.name, old_name))
    s.execute(update(ChatAccount).where(*account).values(bot_id=bot_pk))
    log.info("Zalo: a member moved from bot %s to their branch's bot %s", old_name, bot.name)
    return Admission()


def _secretaries(s: Session, bot: ZaloBot | None, unit_ids) -> list[Member]:
    """The secretaries of these units and of every unit above them up to the bot's (the bot's
    unit included): those whose members the bot serves. The default bot (None) serves members
    anywhere: the secretaries of these units."""
    units = list(unit_ids)
    if bot is not None:
        below_bot = select(UnitAncestor.descendant_id).where(UnitAncestor.ancestor_id == bot.unit_id)
        units = select(UnitAncestor.ancestor_id).where(UnitAncestor.descendant_id.in_(units),
                                                       UnitAncestor.ancestor_id.in_(below_bot))
    return list(s.scalars(select(Member).where(Member.unit_id.in_(units), Member.role == "secretary", Member.active)
                          .order_by(Member.id)))


def token_refused(name: str, unit: str) -> Reply:
    return Reply(f"⚠️ Zalo từ chối mã truy cập (token) của bot «{name}» ({unit}): đảng viên của bot này không nhận "
                 "được tin nào. Đồng chí quản trị lấy mã mới của bot trong Zalo Bot Creator rồi chạy "
                 f"'hoctap zalo bots rotate --unit {unit}' để thay.")


def default_token_refused(name: str) -> Reply:
    return Reply(f"⚠️ Zalo từ chối mã truy cập (token) của bot chung «{name}»: đảng viên liên kết qua bot này không "
                 "nhận được tin nào. Đồng chí quản trị lấy mã mới của bot trong Zalo Bot Creator, đặt vào "
                 "ZALO_BOT_TOKEN rồi khởi động lại hoctap.")


def tell_token_refused(db: Database, bot_pk: int | None, name: str, now: datetime, day: str) -> None:
    """The admins, and the secretaries the bot serves (its unit and those below without a bot of their own),
    once a day per bot; of the default bot (``bot_pk`` None, it serves every branch without a bot), the admins."""
    with db.session() as s:
        admins = s.scalars(select(Member).where(Member.role == "admin", Member.active)).all()
        if bot_pk is None:
            for admin in admins:
                queue.enqueue(s, dedupe_key=f"zalo-token:default:{day}:{admin.id}", purpose="alert",
                              member_id=admin.id, reply=default_token_refused(name), now=now)
            return
        bot = s.get(ZaloBot, bot_pk)
        if bot is None:
            return
        unit = s.get(Unit, bot.unit_id)
        below = select(UnitAncestor.descendant_id).where(UnitAncestor.ancestor_id == bot.unit_id)
        secretaries = [m for m in s.scalars(select(Member).where(Member.unit_id.in_(below),
                                                                  Member.role == "secretary", Member.active))
                       if (own := unit_bot(s, m.unit_id)) is not None and own.id == bot.id]
        people = {m.id: m for m in [*admins, *secretaries]}
        for person in people.values():
            queue.enqueue(s, dedupe_key=f"zalo-token:{bot_pk}:{day}:{person.id}", purpose="alert",
                          member_id=person.id, reply=token_refused(name, unit.code), now=now)


def _tell_secretaries(s: Session, bot: ZaloBot, member: Member, now: datetime) -> None:
    secretaries = _secretaries(s, bot, [member.unit_id])
    for sec in secretaries:
        queue.enqueue(s, dedupe_key=f"zalo-full:{bot.id}:{member.id}:{sec.id}", purpose="bot_full",
                      member_id=sec.id, reply=secretary_told(bot.name, member), now=now)
    if not secretaries:
        log.warning("Zalo: bot %s is full and unit %s has no secretary to tell", bot.name, bot.unit_id)


class BotChannel(ZaloChannel):
    """A ZaloChannel that links members only to their own unit's bot (``bot_pk``; None: the default)."""

    def __init__(self, service: ChatService, client: ZaloClient, *, bot_pk: int | None = None,
                 default_name: str = "HocTap", default_link: str | None = None, **kwargs):
        super().__init__(service, client, **kwargs)
        self.bot_pk, self.default_name, self.default_link = bot_pk, default_name, default_link
        self._to_stamp: set[str] = set()  # chats linking through this bot in the update being handled

    async def handle(self, update: dict[str, Any], taken_up: bool = False) -> bool | None:
        message = update.get("message") if isinstance(update.get("message"), dict) else {}
        chat, sender = message.get("chat") or {}, message.get("from") or {}
        private = not in_group(update)
        user_id = str(sender.get("id") or chat.get("id") or "")
        key = message.get("message_id")
        if not (private and update.get("event_name") == EVENT_TEXT and user_id and key):
            return await super().handle(update, taken_up)
        now = self.clock()
        admission = await asyncio.to_thread(self._admit, user_id, str(message.get("text") or ""), now)
        if admission.reply is not None:
            if not await asyncio.to_thread(self.service.first_time, str(key), now):
                return False
            self.handled += 1
            await self.send_outcome(str(chat.get("id") or user_id), Outcome([admission.reply]))
            return None
        if admission.stamp:
            self._to_stamp.add(user_id)
        try:
            return await super().handle(update, taken_up)
        finally:
            if user_id in self._to_stamp:  # no reply was sent
                self._to_stamp.discard(user_id)
                refused = await asyncio.to_thread(self._stamp, user_id, now)
                if refused is not None:
                    await super().send_outcome(str(chat.get("id") or user_id), Outcome([refused]))

    async def send_outcome(self, chat_id: str, outcome: Outcome, user_id: str | None = None) -> int:
        if chat_id in self._to_stamp:  # the bot is on the account before the welcome goes out
            self._to_stamp.discard(chat_id)
            refused = await asyncio.to_thread(self._stamp, chat_id, self.clock())
            if refused is not None:  # full meanwhile: the link was undone, no welcome
                outcome = Outcome([refused])
        return await super().send_outcome(chat_id, outcome, user_id)

    def _admit(self, user_id: str, text: str, now: datetime) -> Admission:
        with self.service.db.session() as s:
            return admit(s, self.bot_pk, user_id, text, now, default_name=self.default_name,
                         default_link=self.default_link)

    def _stamp(self, user_id: str, now: datetime) -> Reply | None:
        if self.bot_pk is None:
            return None
        with self.service.db.session() as s:
            return claim_slot(s, self.bot_pk, user_id, now)


@dataclass
class Bot:
    """A registered bot ready to serve: what the cache keeps."""

    pk: int
    zalo_id: str
    name: str
    secret: str
    mode: str
    client: ZaloClient
    channel: BotChannel
    transport: ZaloTransport
    loaded: float


class ZaloFleet:
    """Every registered bot of the database, looked up when used (``bot``, ``bot_by_pk``)."""

    def __init__(self, db: Database, service: ChatService, http: aiohttp.ClientSession, *, api_base_url: str,
                 tz: ZoneInfo, monthly_quota: int | None = None, rate: float = 2.0, shelf=None,
                 default_name: str = "HocTap", default_link: str | None = None,
                 clock: Callable[[], datetime] = utcnow, cache_size: int = CACHE_SIZE):
        self.db, self.service, self.http, self.base = db, service, http, api_base_url
        self.tz, self.monthly, self.rate, self.shelf, self.clock = tz, monthly_quota, rate, shelf, clock
        self.default_name, self.default_link, self.cache_size = default_name, default_link, cache_size
        self._bots: OrderedDict[str, Bot] = OrderedDict()
        self._by_pk: dict[int, str] = {}
        self._loading: dict[str, asyncio.Future] = {}
        self.loads = 0  # database look-ups of bots (cache misses)
        self._refused: dict[int | None, str] = {}  # bot (None: the default) -> the local day its refusal was told

    def quota(self, bot_pk: int) -> ZaloQuota:
        quota = ZaloQuota(self.db, self.monthly, self.tz, channels=("telegram", "zalo"))
        quota.channel = usage_key(bot_pk)  # counted apart; ``prefer_zalo`` is not used for one bot
        return quota

    def _make(self, row: ZaloBot) -> Bot:
        learn_secrets(row.token)  # registered after this process started: out of its log lines too
        client = ZaloClient(row.token, self.base, http=self.http)
        quota = self.quota(row.id)
        channel = BotChannel(self.service, client, bot_pk=row.id, default_name=self.default_name,
                             default_link=self.default_link, bot_names=bot_names(row.name),
                             share_link=row.share_link, shelf=self.shelf, quota=quota, clock=self.clock,
                             inbox=Inbox(self.db, f"zalo:{row.id}", self.service.traits.name))
        transport = ZaloTransport(client, rate=self.rate, quota=quota, clock=self.clock)
        client.on_unauthorized = lambda pk=row.id, name=row.name: self.token_refused(pk, name)
        return Bot(row.id, row.zalo_id, row.name, row.webhook_secret, row.mode, client, channel, transport,
                   time.monotonic())

    def _load(self, **where) -> Bot | None:
        with self.db.session() as s:
            row = s.scalar(select(ZaloBot).filter_by(**where))
            return self._make(row) if row is not None else None

    def _cached(self, zalo_id: str) -> Bot | None:
        bot = self._bots.get(zalo_id)
        if bot is None:
            return None
        if time.monotonic() - bot.loaded > CACHE_SECONDS and not bot.channel.busy:
            self._forget(zalo_id)
            return None
        self._bots.move_to_end(zalo_id)
        return bot

    def _keep(self, bot: Bot) -> Bot:
        self._bots[bot.zalo_id] = bot
        self._by_pk[bot.pk] = bot.zalo_id
        while len(self._bots) > self.cache_size:
            old = next(iter(self._bots))
            self._forget(old)
        return bot

    def _forget(self, zalo_id: str) -> None:
        bot = self._bots.pop(zalo_id, None)
        if bot is not None:
            self._by_pk.pop(bot.pk, None)

    async def bot(self, zalo_id: str) -> Bot | None:
        """The registered bot with this Zalo id, or None. Requests arriving together for a bot not
        in the cache share one look-up."""
        found = self._cached(zalo_id)
        if found is not None or not (zalo_id.isascii() and zalo_id.isdigit() and len(zalo_id) <= 32):
            return found
        if zalo_id in self._loading:
            return await asyncio.shield(self._loading[zalo_id])
        loading = self._loading[zalo_id] = asyncio.get_running_loop().create_future()
        try:
            self.loads += 1
            found = await asyncio.to_thread(self._load, zalo_id=zalo_id)
            return self._keep(found) if found is not None else None
        finally:
            loading.set_result(self._bots.get(zalo_id))
            del self._loading[zalo_id]

    async def bot_by_pk(self, pk: int) -> Bot | None:
        zalo_id = self._by_pk.get(pk)
        found = self._cached(zalo_id) if zalo_id else None
        if found is None:
            self.loads += 1
            found = await asyncio.to_thread(self._load, id=pk)
            if found is not None:
                found = self._cached(found.zalo_id) or self._keep(found)
        return found

    def polled(self) -> list[ZaloBot]:
        with self.db.session() as s:
            rows = s.scalars(select(ZaloBot).where(ZaloBot.mode == "polling")).all()
            for row in rows:
                s.expunge(row)
            return list(rows)

    async def drain(self) -> None:
        for bot in list(self._bots.values()):
            await bot.channel.drain()

    async def token_refused(self, bot_pk: int | None, name: str) -> None:
        """Zalo refused a bot's token (``bot_pk`` None: the default bot's): its members get nothing until an
        admin replaces it."""
        now = self.clock()
        day = now.astimezone(self.tz).date().isoformat()
        if self._refused.get(bot_pk) == day:
            return  # told today
        self._refused[bot_pk] = day
        log.error("Zalo bot %s%s: Zalo refuses its token (401); nothing reaches its members until it is replaced",
                  name, " (ZALO_BOT_TOKEN)" if bot_pk is None else "")
        await asyncio.to_thread(tell_token_refused, self.db, bot_pk, name, now, day)


class FleetTransport:
    """The outbox's Zalo transport: each message goes out through the bot the member linked with
    (``via``, the account's ``bot_id``), paced and counted per bot; without one, the default bot."""

    channel = "zalo"
    paced = True  # each bot's ZaloTransport: the outbox marks a message ``sending`` when its turn has come

    def __init__(self, fleet: ZaloFleet, default: ZaloTransport | None):
        self.fleet, self.default = fleet, default

    async def deliver(self, external_id: str, reply: Reply, attachment: tuple[str, bytes] | None,
                      via: int | None = None) -> None:
        from bot.outbox.sender import SendError

        if via is None:
            if self.default is None:
                raise SendError("permanent", "Zalo: no default bot (ZALO_BOT_TOKEN) for this member")
            quota = self.default.quota
            if quota is not None and await asyncio.to_thread(quota.used_up, self.fleet.clock()):
                raise SendError("permanent", f"{CALL_LIST}: bot Zalo chung đã dùng hết hạn mức tháng")
            return await self.default.deliver(external_id, reply, attachment)
        bot = await self.fleet.bot_by_pk(via)
        if bot is None:
            raise SendError("permanent", "Zalo: the member's bot was removed")
        quota = bot.transport.quota
        if quota is not None and await asyncio.to_thread(quota.used_up, self.fleet.clock()):
            # the member's other messenger, if any, is tried next (the sender's fallback)
            raise SendError("permanent", f"{CALL_LIST}: bot «{bot.name}» đã dùng hết hạn mức tháng")
        await bot.transport.deliver(external_id, reply, attachment)


class FleetBudget:
    """The broadcast budget when branch bots exist. Each bot, the default bot (``default``, the
    ``ZALO_BOT_TOKEN`` one) included, has its own quota: a broadcast that does not fit one bot still
    goes out, split per bot: the other bots' members get it, the short bot's members get it while it
    has messages, then through their other messenger or they are on ``/chualam``'s call list
    (``FleetTransport``), and the secretaries of its members and the admins are told which bot is short
    (once a day per bot). With one bot and no fleet, ``ZaloQuota`` refuses a broadcast whole instead."""

    def __init__(self, db: Database, default: ZaloQuota | None, monthly: int | None, tz: ZoneInfo,
                 default_name: str = DEFAULT_BOT_NAME):
        self.db, self.default, self.monthly, self.tz = db, default, monthly, tz
        self.default_name = default_name

    def _routes(self, s: Session, member_ids: list[int]) -> dict[int, int | None]:
        """member -> the bot (None: the default bot) of members whose preferred messenger is Zalo."""
        first: dict[int, tuple[str, int | None]] = {}
        for i in range(0, len(member_ids), 1000):
            for mid, channel, bot in s.execute(
                    select(ChatAccount.member_id, ChatAccount.channel, ChatAccount.bot_id)
                    .where(ChatAccount.member_id.in_(member_ids[i:i + 1000]))
                    .order_by(ChatAccount.member_id, ChatAccount.last_seen_at.desc().nullslast(), ChatAccount.id)):
                first.setdefault(mid, (channel, bot))
        return {mid: bot for mid, (channel, bot) in first.items() if channel == "zalo"}

    def shortfalls(self, s: Session, member_ids, now: datetime) -> dict[int | None, tuple[list[int], int]]:
        """Bots a message to each of these members does not fit: bot (None: the default bot) -> (its
        members, messages left)."""
        ids = list(dict.fromkeys(member_ids))
        routes = self._routes(s, ids)
        needed: dict[int | None, list[int]] = {}
        for mid in ids:
            if mid in routes and (routes[mid] is not None or self.default is not None):
                needed.setdefault(routes[mid], []).append(mid)
        if not needed:
            return {}
        waiting = dict(s.execute(select(OutboxMessage.member_id, func.count()).where(
            OutboxMessage.status.in_(("pending", "claimed", "sending"))).group_by(OutboxMessage.member_id)).all())
        pending: dict[int | None, int] = {}
        for mid, bot in self._routes(s, list(waiting)).items():
            pending[bot] = pending.get(bot, 0) + waiting[mid]
        month = now.astimezone(self.tz).strftime("%Y-%m")
        short = {}
        for bot in sorted(needed, key=lambda pk: -1 if pk is None else pk):
            key, monthly = (usage_key(bot), self.monthly) if bot is not None else (self.default.channel,
                                                                                   self.default.monthly)
            if not monthly:
                continue
            row = s.get(ChannelUsage, (key, month))
            left = monthly - (row.sent if row is not None else 0) - pending.get(bot, 0)
            if len(needed[bot]) > left:
                short[bot] = (needed[bot], max(left, 0))
        return short

    def refusal(self, s: Session, member_ids, now: datetime, **_kind) -> QuotaRefusal | None:
        """Never refuses: each bot that is short is named to those who can act (see the class)."""
        for bot_pk, (members, left) in self.shortfalls(s, list(member_ids), now).items():
            self._tell_short(s, s.get(ZaloBot, bot_pk) if bot_pk is not None else None, members, left, now)
        return None

    def _tell_short(self, s: Session, bot: ZaloBot | None, members: list[int], left: int, now: datetime) -> None:
        """``bot`` None: the default bot, whose members are anywhere in the province."""
        month = now.astimezone(self.tz).strftime("%Y-%m")
        name = bot.name if bot is not None else self.default_name
        monthly = self.monthly if bot is not None else self.default.monthly
        log.error("Zalo bot %s: a broadcast needs %d message(s), %d left in %s: its members beyond that get it "
                  "through another messenger or are on the call list", name, len(members), left, month)
        units = set(s.scalars(select(Member.unit_id).where(Member.id.in_(members[:1000]))))
        secretaries = _secretaries(s, bot, units)
        admins = s.scalars(select(Member).where(Member.role == "admin", Member.active)).all()
        day = now.astimezone(self.tz).date().isoformat()
        reply = out_of_quota(name, len(members), left, monthly, month)
        for person in {m.id: m for m in [*secretaries, *admins]}.values():
            queue.enqueue(s, dedupe_key=f"zalo-quota:{bot.id if bot is not None else 'default'}:{day}:{person.id}",
                          purpose="bot_quota", member_id=person.id, reply=reply, now=now)
