"""One process's OA side: ``OARuntime`` wires the token store, the client, the conversation, the webhook on
the product's web server and the outbox transport; ``BackgroundOA`` runs one in its own thread and event
loop (tests, the playground, benchmarks). Used by ``bot/app.py``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Callable

from bot.channels.zalo.runtime import BackgroundZalo
from bot.channels.zalo_oa.callback import PATH as CALLBACK_PATH
from bot.channels.zalo_oa.callback import callback_endpoint
from bot.channels.zalo_oa.channel import OAChannel
from bot.channels.zalo_oa.client import OAClient
from bot.channels.zalo_oa.ladder import OABudget, Prices
from bot.channels.zalo_oa.tokens import TokenStore
from bot.channels.zalo_oa.transport import OATransport
from bot.channels.zalo_oa.webhook import PATH as WEBHOOK_PATH
from bot.channels.zalo_oa.webhook import webhook_endpoint
from bot.services.chat import ChatService
from bot.services.inbox import Inbox
from bot.timeutil import utcnow

log = logging.getLogger(__package__)


def prices_from(settings) -> Prices:
    return Prices(paid=settings.paid_price, zns=settings.zns_price, paid_allowed=settings.paid_consultation,
                  zns_template=settings.zns_template_id, zns_purposes=settings.zns_purposes,
                  zns_last_hours=settings.zns_last_hours)


def token_store(settings, db, clock: Callable[[], datetime] = utcnow) -> TokenStore:
    return TokenStore(db, settings.app_id, settings.app_secret, settings.oauth_url, clock=clock)


def callback_url(settings, web_public_url: str | None) -> str | None:
    """The address registered as the app's callback (``settings``: a ZaloOASettings), None without a public URL."""
    public = settings.public_url or web_public_url
    return public.rstrip("/") + CALLBACK_PATH if public else None


class OARuntime:
    """``settings``: a ZaloOASettings. ``start``/``stop`` run in one event loop."""

    def __init__(self, settings, service: ChatService, budget: OABudget, *, serve_web: bool = True,
                 clock: Callable[[], datetime] = utcnow, web_app=None):
        """``web_app``: the process's shared web application to mount the webhook on (``hoctap run``);
        else, with ``serve_web``, the runtime serves it on ``settings.listen`` itself."""
        self.settings, self.service, self.budget, self.clock = settings, service, budget, clock
        self.serve_web, self.web_app = serve_web, web_app
        self.tokens = token_store(settings, service.db, clock)
        self.client: OAClient | None = None
        self.channel: OAChannel | None = None
        self.transport: OATransport | None = None
        self.web = None

    def endpoint(self):
        return webhook_endpoint(self.channel.take, self.settings.app_id, self.settings.oa_secret_key,
                                max_age=self.settings.signature_max_age, clock=lambda: self.clock().timestamp())

    async def start(self) -> None:
        from starlette.routing import Route

        from bot.web import WebServer, create_app, mount

        s = self.settings
        self.client = OAClient(self.tokens, s.api_base_url, s.business_api_url, clock=self.clock)
        self.channel = OAChannel(self.service, self.client, clock=self.clock,
                                 inbox=Inbox(self.service.db, "zalo_oa", self.service.traits.name))
        await self.channel.take_up_kept()  # what a process killed mid-handling kept, before anything new
        self.transport = OATransport(self.client, self.budget, rate=s.rate, clock=self.clock)
        callback = Route(CALLBACK_PATH, callback_endpoint(self.tokens, self.service.tz, self.clock), methods=["GET"])
        if self.web_app is not None:
            mount(self.web_app, [Route(WEBHOOK_PATH, self.endpoint(), methods=["POST"]), callback])
        elif self.serve_web:
            self.web = WebServer(create_app(zalo_oa=self.endpoint(), routes=[callback]), s.listen)
            await self.web.start()
            log.info("Zalo OA: events at %s/zalo-oa/webhook (port %d)", s.public_url or "", self.web.port)
        log.info("%s", await asyncio.to_thread(self.tokens.status, self.clock()))
        log.info("%s", await asyncio.to_thread(self.budget.describe, self.clock()))

    async def stop(self) -> None:
        if self.web is not None:
            await self.web.stop()
            self.web = None
        if self.channel is not None:
            await self.channel.drain()
        if self.client is not None:
            await self.client.aclose()
            self.client = None


class BackgroundOA(BackgroundZalo):
    """An OARuntime in a thread with its own event loop (the same machinery as the Zalo bot's)."""
