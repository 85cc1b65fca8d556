"""The registry of branch bots: each unit's secretary creates the unit's own Zalo bot (a free plan
serves 50 users and 3,000 messages a month per bot) and the operator registers its token here.

``add``/``rotate`` check a token with getMe and point the bot's webhook at
``<public_url>/zalo/<bot id>/webhook`` with a secret of its own (or, for at most ``POLLING_LIMIT``
bots, delete the webhook so the server polls); nothing is stored unless every check passed. The
token is stored in the database (encrypted when a key is set: ``bot/storage/token_key.py``) and never
printed, logged or put in an error.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bot.channels.zalo.client import ZaloClient, ZaloError
from bot.storage.db import Database
from bot.storage.models import ChannelUsage, ChatAccount, Unit, ZaloBot
from bot.storage.token_key import TokenKeyError

MEMBER_CAP = 50  # users a bot of the free plan serves; the 51st is not served by Zalo
MONTHLY_QUOTA = 3000  # messages a month of the free plan
POLLING_LIMIT = 5  # bots this server polls (one held request each); beyond, use webhooks
WEBHOOK_PATH = "/zalo/{zalo_id}/webhook"
_TOKEN = re.compile(r"^(\d{1,32}):([A-Za-z0-9_\-]{1,256})$")


class RegistryError(Exception):
    """Why a bot was not added, rotated or removed (nothing was stored)."""


def usage_key(bot_pk: int) -> str:
    """The ``channel_usage`` key of one bot's monthly count."""
    return f"zalo#{bot_pk}"


def zalo_id_of(token: str) -> str:
    """The numeric id a token starts with; RegistryError for what is not a token."""
    found = _TOKEN.match(token.strip())
    if found is None:
        raise RegistryError("that is not a Zalo bot token: expected <numeric id>:<secret> as Bot Creator shows it")
    return found.group(1)


def webhook_url(public_url: str, zalo_id: str) -> str:
    return public_url.rstrip("/") + WEBHOOK_PATH.format(zalo_id=zalo_id)


@dataclass
class Checked:
    """A token Zalo accepted: the bot's id and name."""

    zalo_id: str
    name: str


async def _check(client: ZaloClient, zalo_id: str) -> Checked:
    try:
        me = await client.get_me() or {}
    except ZaloError as exc:
        if exc.status in (401, 404):
            raise RegistryError("Zalo rejected the token (a typo, or it was reset in Bot Creator): nothing stored") \
                from None
        raise RegistryError(f"cannot check the token with Zalo ({exc.description}): nothing stored") from None
    if str(me.get("id") or zalo_id) != zalo_id:
        raise RegistryError("Zalo answered for another bot than the token names: nothing stored")
    name = str(me.get("display_name") or me.get("name") or me.get("account_name") or f"bot {zalo_id}")
    return Checked(zalo_id, name)


async def _point(client: ZaloClient, mode: str, url: str | None, secret: str) -> str | None:
    """Webhook or polling at Zalo's side; a warning to print, or None."""
    try:
        if mode == "polling":
            await client.delete_webhook()
            return None
        result = await client.set_webhook(url, secret) or {}
    except ZaloError as exc:
        raise RegistryError(f"Zalo refused the webhook ({exc.description}): nothing stored") from None
    verification = result.get("verification") or {}
    if verification and not verification.get("ok"):
        return (f"Zalo saved the webhook {url} but could not reach it: "
                f"{verification.get('hint') or verification.get('outcome')}")
    return None


class Registry:
    """Add, rotate, remove and list branch bots against one database and one Zalo API address."""

    def __init__(self, db: Database, *, api_base_url: str, public_url: str | None, default_token: str | None = None,
                 http: aiohttp.ClientSession | None = None):
        self.db, self.base, self.public_url = db, api_base_url, public_url
        self.default_token, self.http = default_token, http

    def _client(self, token: str) -> ZaloClient:
        return ZaloClient(token, self.base, http=self.http)

    def _unit(self, s: Session, unit_code: str) -> Unit:
        unit = s.scalar(select(Unit).where(Unit.code == unit_code))
        if unit is None:
            raise RegistryError(f"no unit {unit_code!r} (see hoctap units list)")
        return unit

    def _refuse_known(self, s: Session, token: str, zalo_id: str, unit: Unit) -> None:
        if self.default_token and token == self.default_token.strip():
            raise RegistryError("that is the default bot's token (ZALO_BOT_TOKEN): a unit needs a bot of its own")
        taken = s.scalar(select(ZaloBot).where(ZaloBot.zalo_id == zalo_id))
        if taken is not None and taken.unit_id == unit.id:
            raise RegistryError(f"this bot ({taken.name}) is already registered to {unit.code}")
        if taken is not None:
            raise RegistryError(f"this bot ({taken.name}) is already registered to unit {taken.unit.code}: "
                                "one bot serves one unit (remove it there first)")

    async def _check_and_point(self, token: str, zalo_id: str, mode: str) -> tuple[Checked, str, str | None]:
        """getMe, then the webhook (with a new secret) or polling: (the bot, the secret, a warning)."""
        if mode == "webhook" and not self.public_url:
            raise RegistryError("a webhook needs zalo.public_url (the server's public https address); "
                                f"or pass --polling (at most {POLLING_LIMIT} bots)")
        secret = secrets.token_urlsafe(32)
        url = webhook_url(self.public_url, zalo_id) if mode == "webhook" else None
        client = self._client(token)
        try:
            checked = await _check(client, zalo_id)
            return checked, secret, await _point(client, mode, url, secret)
        finally:
            await client.aclose()

    async def add(self, unit_code: str, token: str, now: datetime, *, mode: str = "webhook",
                  share_link: str | None = None) -> tuple[ZaloBot, str | None]:
        """Check and register a unit's bot; (the bot, a warning or None)."""
        token = token.strip()
        zalo_id = zalo_id_of(token)
        with self.db.session() as s:
            unit = self._unit(s, unit_code)
            self._refuse_known(s, token, zalo_id, unit)
            own = s.scalar(select(ZaloBot).where(ZaloBot.unit_id == unit.id))
            if own is not None:
                raise RegistryError(f"{unit.code} already has a bot ({own.name}): use rotate after a token reset, "
                                    "or remove it first")
            if mode == "polling":
                polled = s.scalar(select(func.count()).select_from(ZaloBot).where(ZaloBot.mode == "polling"))
                if polled >= POLLING_LIMIT:
                    raise RegistryError(f"at most {POLLING_LIMIT} bots are polled by one server; set zalo.public_url "
                                        "and register this one with a webhook")
            unit_id = unit.id
        checked, secret, warning = await self._check_and_point(token, zalo_id, mode)
        with self.db.session() as s:
            if s.scalar(select(ZaloBot).where((ZaloBot.zalo_id == zalo_id) | (ZaloBot.unit_id == unit_id))):
                raise RegistryError("registered meanwhile by another command: nothing stored")
            bot = ZaloBot(zalo_id=zalo_id, unit_id=unit_id, name=checked.name[:255], token=token,
                          webhook_secret=secret, mode=mode, share_link=share_link, created_at=now)
            s.add(bot)
            s.flush()
            s.expunge(bot)
        return bot, warning

    async def rotate(self, unit_code: str, token: str, now: datetime) -> tuple[ZaloBot, str | None]:
        """After "reset token" in Bot Creator: the same bot's new token, and a new webhook secret."""
        token = token.strip()
        zalo_id = zalo_id_of(token)
        with self.db.session() as s:
            unit = self._unit(s, unit_code)
            # not the token column: after a lost key (bot/storage/token_key.py) a rotate is the way back
            bot = s.execute(select(ZaloBot.id, ZaloBot.zalo_id, ZaloBot.name, ZaloBot.mode)
                            .where(ZaloBot.unit_id == unit.id)).first()
            if bot is None:
                raise RegistryError(f"{unit.code} has no bot yet: use add")
            if self.default_token and token == self.default_token.strip():
                raise RegistryError("that is the default bot's token (ZALO_BOT_TOKEN): nothing stored")
            if zalo_id != bot.zalo_id:
                other = s.scalar(select(ZaloBot).where(ZaloBot.zalo_id == zalo_id))
                where = f", registered to {other.unit.code}" if other is not None else ""
                raise RegistryError(f"this token is of another bot than {unit.code}'s ({bot.name}){where}: "
                                    "nothing stored")
            try:
                same = token == s.scalar(select(ZaloBot.token).where(ZaloBot.id == bot.id))
            except TokenKeyError:
                same = False  # unreadable: it is replaced
            if same:
                raise RegistryError("this is the token already stored: reset it in Bot Creator first")
            mode, pk = bot.mode, bot.id
        checked, secret, warning = await self._check_and_point(token, zalo_id, mode)
        with self.db.session() as s:
            s.execute(update(ZaloBot).where(ZaloBot.id == pk).values(
                token=token, webhook_secret=secret, rotated_at=now, name=checked.name[:255]))
            row = s.execute(select(ZaloBot.zalo_id, ZaloBot.name, ZaloBot.mode).where(ZaloBot.id == pk)).first()
        return ZaloBot(id=pk, zalo_id=row.zalo_id, name=row.name, mode=row.mode), warning

    async def remove(self, unit_code: str) -> tuple[str, int]:
        """Forget a unit's bot and its members' links through it; (bot name, links removed)."""
        with self.db.session() as s:
            unit = self._unit(s, unit_code)
            bot = s.scalar(select(ZaloBot).where(ZaloBot.unit_id == unit.id))
            if bot is None:
                raise RegistryError(f"{unit.code} has no bot")
            token, name, mode = bot.token, bot.name, bot.mode
            # its users cannot be written to without it: they link again through the unit's next bot
            unlinked = s.execute(delete(ChatAccount).where(ChatAccount.bot_id == bot.id)).rowcount
            s.delete(bot)
        if mode == "webhook":
            client = self._client(token)
            try:
                await client.delete_webhook()
            except ZaloError:
                pass  # the token may be reset already: the bot is gone from here either way
            finally:
                await client.aclose()
        return name, unlinked


def linked_count(s: Session, bot_pk: int) -> int:
    return s.scalar(select(func.count()).select_from(ChatAccount).where(ChatAccount.bot_id == bot_pk)) or 0


def overview(s: Session, month: str) -> list[tuple[str, str, str, int, int]]:
    """(unit code, bot name, mode, members linked, messages sent in ``month``) of every bot."""
    linked = dict(s.execute(select(ChatAccount.bot_id, func.count()).where(ChatAccount.bot_id.is_not(None))
                            .group_by(ChatAccount.bot_id)).all())
    bots = s.execute(select(ZaloBot.id, Unit.code, ZaloBot.name, ZaloBot.mode).join(Unit, Unit.id == ZaloBot.unit_id)
                     .order_by(Unit.code)).all()
    sent = dict(s.execute(select(ChannelUsage.channel, ChannelUsage.sent).where(
        ChannelUsage.month == month, ChannelUsage.channel.like("zalo#%"))).all())
    return [(code, name, mode, linked.get(pk, 0), sent.get(usage_key(pk), 0)) for pk, code, name, mode in bots]
