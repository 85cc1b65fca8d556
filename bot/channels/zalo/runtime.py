"""One process's Zalo side: ``ZaloOptions`` (what it needs from the settings), ``ZaloRuntime`` (starts and
stops the client, the conversation, polling or the webhook, the web server for charts, and the outbox
transport) and ``BackgroundZalo`` (a runtime in its own thread and event loop, for tests, the playground and
benchmarks). It exists so that the wiring of the other Zalo modules is in one place, used by ``bot/app.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from functools import partial
from datetime import datetime
from typing import Any, Awaitable, Callable

import aiohttp

from bot.channels.zalo.channel import ZaloChannel
from bot.channels.zalo.client import DEFAULT_ZALO_API, ZaloClient, http_pool
from bot.channels.zalo.fleet import BotChannel, FleetTransport, ZaloFleet
from bot.channels.zalo.mentions import bot_names
from bot.channels.zalo.poller import ZaloPoller
from bot.channels.zalo.quota import ZaloQuota
from bot.channels.zalo.transport import ZaloTransport
from bot.services.chat import ChatService
from bot.services.inbox import Inbox
from bot.timeutil import utcnow

log = logging.getLogger(__package__)  # "bot.channels.zalo", the one logger name the channel had before the split

SECRET_HEADER = "X-Bot-Api-Secret-Token"
WEBHOOK_PATH = "/zalo/webhook"


@dataclass
class ZaloOptions:
    """What ZaloRuntime needs (from ``settings.zalo``, or built by tests)."""

    token: str = field(repr=False)
    api_base_url: str = DEFAULT_ZALO_API
    mode: str = "polling"  # polling | webhook
    webhook_secret: str | None = field(default=None, repr=False)
    public_url: str | None = None
    listen: str = "127.0.0.1:8080"
    rate: float = 2.0
    bot_name: str | None = None  # the name the Zalo app shows (what members' @mentions write)
    share_link: str | None = None
    poll_timeout: int = 30
    poll_interval: float = 1.0

    @classmethod
    def from_settings(cls, zs) -> ZaloOptions:
        return cls(token=zs.token, api_base_url=zs.api_base_url, mode=zs.mode, webhook_secret=zs.webhook_secret,
                   public_url=zs.public_url, listen=zs.listen, rate=zs.rate, bot_name=zs.bot_name,
                   share_link=zs.share_link)


class ZaloRuntime:
    """The Zalo bots in this process: the default bot (``options.token``, if set) and the branches'
    registered bots (``ZaloFleet``), polling or webhooks, the web server for the webhooks and for
    charts, and the outbox transport. ``start``/``stop`` run in one event loop."""

    def __init__(self, options: ZaloOptions, service: ChatService, *, quota: ZaloQuota | None = None,
                 clock: Callable[[], datetime] = utcnow, bot_quota: int | None = None, web_app=None):
        """``bot_quota``: each branch bot's monthly messages (the plan's 3,000), counted apart;
        ``web_app``: the process's shared web application to mount the webhooks and files on
        (``hoctap run``); without it the runtime serves them on ``options.listen`` itself."""
        self.options, self.service, self.quota, self.clock = options, service, quota, clock
        self.bot_quota, self.web_app = bot_quota, web_app
        self.http: aiohttp.ClientSession | None = None
        self.fleet: ZaloFleet | None = None
        self._bot_polls: list = []
        self._name = "HocTap"
        self.client: ZaloClient | None = None
        self.channel: ZaloChannel | None = None
        self.transport: FleetTransport | None = None
        self.poller: ZaloPoller | None = None
        self.web = None
        self.me: dict[str, Any] = {}
        self._poll_task: asyncio.Task | None = None

    async def start(self) -> None:
        from bot.web import FileShelf, WebServer, create_app, files_route, fleet_webhook_route, mount, zalo_webhook_route

        o = self.options
        if o.token and o.mode == "webhook" and not (o.public_url and o.webhook_secret):
            raise ValueError("zalo webhook mode needs zalo.public_url and ZALO_WEBHOOK_SECRET")
        self.http = http_pool()  # one pool for every bot
        shelf = FileShelf(o.public_url) if o.public_url else None
        try:
            default = await self._start_default(shelf) if o.token else None
        except BaseException:
            await self.http.close()
            raise
        self.fleet = ZaloFleet(self.service.db, self.service, self.http, api_base_url=o.api_base_url,
                               tz=self.service.tz, monthly_quota=self.bot_quota, rate=o.rate, shelf=shelf,
                               default_name=self._name, default_link=o.share_link, clock=self.clock)
        self.transport = FleetTransport(self.fleet, default)
        if self.client is not None:  # refused while running (reset in Bot Creator): the admins are told
            self.client.on_unauthorized = lambda: self.fleet.token_refused(None, self._name)
        # what a process killed mid-handling kept, first: before anything new comes in
        if self.channel is not None:
            await self.channel.take_up_kept()
        for source in await asyncio.to_thread(Inbox.sources_kept, self.service.db, "zalo:", self.clock()):
            bot = await self.fleet.bot_by_pk(int(source.split(":", 1)[1]))
            if bot is not None:
                await bot.channel.take_up_kept()
        hook = self.channel if o.token and o.mode == "webhook" else None
        if self.web_app is not None:
            mount(self.web_app, [zalo_webhook_route(hook, o.webhook_secret), fleet_webhook_route(self.fleet),
                                 files_route(shelf)])
        elif o.public_url:
            self.web = WebServer(create_app(zalo=hook, webhook_secret=o.webhook_secret, shelf=shelf,
                                            fleet=self.fleet), o.listen)
            await self.web.start()
        if o.token:
            await self._receive_default()
        for row in await asyncio.to_thread(self.fleet.polled):
            bot = await self.fleet.bot(row.zalo_id)
            poller = ZaloPoller(bot.client, partial(bot.channel.take, polled=True), timeout=o.poll_timeout,
                                min_interval=o.poll_interval)
            self._bot_polls.append((bot, asyncio.create_task(poller.run())))
            log.info("Zalo: bot %s polls for updates", bot.name)
        if self.quota is not None:
            log.info("%s", await asyncio.to_thread(self.quota.describe, self.clock()))

    async def _start_default(self, shelf) -> ZaloTransport:
        """The default bot (ZALO_BOT_TOKEN): client, conversation and outbox transport."""
        o = self.options
        self.client = ZaloClient(o.token, o.api_base_url, http=self.http)
        self.me = await self.client.get_me() or {}
        me = self.me
        names = bot_names(o.bot_name, me.get("display_name"), me.get("name"), me.get("account_name"))
        self._name = names[0] if names else "(no name)"
        if not (o.bot_name or me.get("display_name") or me.get("name")):
            log.info("Zalo: set zalo.bot_name to the name the Zalo app shows for the bot, so that group "
                     "mentions of it are read apart from what members say (now only @%s)", me.get("account_name"))
        self.channel = BotChannel(self.service, self.client, default_name=self._name, default_link=o.share_link,
                                  bot_names=names, share_link=o.share_link, shelf=shelf, quota=self.quota,
                                  clock=self.clock, inbox=Inbox(self.service.db, "zalo", self.service.traits.name))
        return ZaloTransport(self.client, rate=o.rate, quota=self.quota, clock=self.clock)

    async def _receive_default(self) -> None:
        o, name = self.options, self._name
        if o.mode == "webhook":
            url = o.public_url.rstrip("/") + WEBHOOK_PATH
            result = await self.client.set_webhook(url, o.webhook_secret) or {}
            verification = result.get("verification") or {}
            if verification and not verification.get("ok"):
                log.warning("Zalo: webhook %s saved but its verification failed: %s", url,
                            verification.get("hint") or verification.get("outcome"))
            log.info("Zalo: bot %s receives updates at %s", name, url)
        else:
            self.poller = ZaloPoller(self.client, partial(self.channel.take, polled=True), timeout=o.poll_timeout,
                                     min_interval=o.poll_interval)
            self._poll_task = asyncio.create_task(self.poller.run())
            log.info("Zalo: bot %s polls for updates", name)

    async def stop(self) -> None:
        tasks = [t for t in [self._poll_task] + [t for _, t in self._bot_polls] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poll_task, self._bot_polls = None, []
        if self.channel is not None:
            await self.channel.drain()
        if self.fleet is not None:
            await self.fleet.drain()
        if self.web is not None:
            await self.web.stop()
            self.web = None
        if self.http is not None:
            await self.http.close()
            self.http = None
        self.client = None


class BackgroundZalo:
    """Runs a ZaloRuntime in a thread with its own event loop (tests, playground, benchmarks)."""

    def __init__(self, runtime: ZaloRuntime):
        self.runtime = runtime
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zalo-bot", daemon=True)

    def start(self) -> BackgroundZalo:
        self._thread.start()
        try:
            self.run(self.runtime.start())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            raise
        return self

    def run(self, coro: Awaitable, timeout: float = 30):
        """Run a coroutine in the bot's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def stop(self) -> None:
        try:
            self.run(self.runtime.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundZalo:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
