"""Start the product: every channel whose token is set (Telegram, Zalo), else the local playground."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Awaitable, Callable

from bot.config import Settings
from bot.logs import setup_logging
from bot.services.chat import ChatService
from bot.startup import secrets_of, start_or_explain
from bot.storage.db import Database


def chat_service(settings: Settings, db: Database, channel: str = "telegram", budget=None) -> ChatService:
    from bot.scheduling.due import schedule_from

    if channel == "zalo":
        from bot.channels.zalo import TRAITS
    elif channel == "zalo_oa":
        from bot.channels.zalo_oa import TRAITS
    else:
        from bot.channels.telegram import TRAITS
    return ChatService(db, TRAITS, settings.tz, schedule_from(settings).quiet, budget=budget,
                       console_url=settings.web.public_url)


def console_server(settings: Settings, db: Database):
    """The product's web pages (the console under /quantri) on ``web.listen``, or None without
    ``web.public_url``."""
    if not settings.web.public_url:
        return None
    from bot.console.app import create_console
    from bot.scheduling.due import schedule_from
    from bot.web import WebServer, create_app

    console = create_console(db, settings.tz, quiet=schedule_from(settings).quiet,
                             secure_cookie=settings.web.public_url.startswith("https://"),
                             bot_name=settings.telegram.bot_username or "", zalo_link=settings.zalo.share_link or "")
    return WebServer(create_app(console=console), settings.web.listen)


def zalo_quota(settings: Settings, db: Database):
    """The Zalo plan's monthly quota (None without a Zalo token or with ``monthly_quota: 0``)."""
    if not settings.zalo.token or not settings.zalo.monthly_quota:
        return None
    from bot.channels.zalo import ZaloQuota

    channels = ("telegram", "zalo") if settings.telegram.token else ("zalo",)
    channels += ("zalo_oa",) if settings.zalo_oa.enabled else ()
    return ZaloQuota(db, settings.zalo.monthly_quota, settings.tz, channels=channels)


def oa_budget(settings: Settings, db: Database):
    """The Zalo OA's prices and monthly budget in đồng (None without an OA)."""
    if not settings.zalo_oa.enabled:
        return None
    from bot.channels.zalo_oa import OABudget, prices_from

    return OABudget(db, settings.zalo_oa.monthly_budget, settings.tz, prices_from(settings.zalo_oa))


def budgets(quota, oa):
    """What ChatService and the scheduler ask before a broadcast: every channel's limit."""
    if oa is None:
        return quota
    from bot.channels.zalo_oa import Budgets

    return Budgets(quota, oa)


def run(settings: Settings) -> int:
    if not settings.telegram.token and not settings.zalo.token and not settings.zalo_oa.enabled:
        print("Neither TELEGRAM_BOT_TOKEN nor ZALO_BOT_TOKEN is set: starting the local playground instead.",
              file=sys.stderr)
        return run_playground(settings)
    if settings.zalo.token and settings.zalo.mode == "webhook" and not settings.zalo.webhook_secret:
        print("error: zalo.mode is webhook but ZALO_WEBHOOK_SECRET is not set (8-256 characters)", file=sys.stderr)
        return 2
    return start_and_serve(settings, lambda db: serve(settings, db))


def start_and_serve(settings: Settings, main: Callable[[Database], Awaitable[None]]) -> int:
    """Open the database and run ``main`` until it stops; a failure to start is one line without
    secrets and exit status 2 (bot/startup.py)."""
    setup_logging(*secrets_of(settings))

    def start() -> int:
        db = Database(settings.database_url)
        db.upgrade()
        asyncio.run(main(db))
        return 0

    return start_or_explain(settings, start)


async def serve(settings: Settings, db: Database, stop: asyncio.Event | None = None, *, clock=None) -> None:
    """Run every configured channel and the scheduled work in this event loop until ``stop`` is set
    (SIGINT/SIGTERM set it when this runs in the main thread)."""
    import signal
    import threading

    stop = stop or asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    quota, oa = zalo_quota(settings, db), oa_budget(settings, db)
    budget = budgets(quota, oa)
    transports: dict = {}
    closers: list = []
    try:
        if settings.telegram.token:
            from bot.channels.telegram import TelegramChannel, TelegramTransport

            app = TelegramChannel(chat_service(settings, db, "telegram", budget)).build(
                settings.telegram.token, settings.telegram.api_base_url)
            await app.initialize()
            closers.append(app.shutdown)
            if app.post_init:
                await app.post_init(app)
            await app.updater.start_polling(allowed_updates=["message", "callback_query"])
            await app.start()
            closers += [app.stop, app.updater.stop]  # run in reverse: the updater first
            transports["telegram"] = TelegramTransport(app.bot)
        if settings.zalo.token:
            from bot.channels.zalo import ZaloOptions, ZaloRuntime

            zalo = ZaloRuntime(ZaloOptions.from_settings(settings.zalo), chat_service(settings, db, "zalo", budget),
                               quota=quota)
            await zalo.start()
            closers.append(zalo.stop)
            transports["zalo"] = zalo.transport
        if oa is not None:
            from bot.channels.zalo_oa import OARuntime

            oa_runtime = OARuntime(settings.zalo_oa, chat_service(settings, db, "zalo_oa", budget), oa)
            await oa_runtime.start()
            closers.append(oa_runtime.stop)
            transports["zalo_oa"] = oa_runtime.transport
        web = console_server(settings, db)
        if web is not None:
            await web.start()
            closers.append(web.stop)
        runner = scheduled_work(settings, db, transports, budget)
        runner.start()
        closers.append(runner.shutdown)
        await stop.wait()
    finally:
        for close in reversed(closers):
            try:
                await close()
            except Exception:  # noqa: BLE001 - stop the others anyway
                logging.getLogger(__name__).exception("while stopping")


def scheduled_work(settings: Settings, db: Database, transports, budget=None):
    """The scheduler tick and outbox sender, with the digest and closing reports."""
    from dataclasses import replace

    from bot.scheduling.due import schedule_from
    from bot.scheduling.reports import ReportBuilder
    from bot.scheduling.runner import ScheduledWork

    schedule = replace(schedule_from(settings), budget=budget)
    return ScheduledWork(db, schedule, transports, rate=settings.scheduler.outbox_rate,
                         report_builder=ReportBuilder(settings), interval=settings.scheduler.tick_seconds)


def run_scheduler(settings: Settings) -> int:
    """``hoctap scheduler``: the scheduled side alone, for deployments that separate it."""
    import asyncio

    from bot.channels.telegram import TelegramTransport, sending_bot

    token = settings.telegram.token
    if not token and not settings.zalo.token and not settings.zalo_oa.enabled:
        print("error: neither TELEGRAM_BOT_TOKEN nor ZALO_BOT_TOKEN is set; the scheduler needs one to send",
              file=sys.stderr)
        return 2

    async def main(db: Database) -> None:
        import signal
        from contextlib import AsyncExitStack

        from bot.channels.zalo import ZaloClient, ZaloTransport

        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        quota, oa = zalo_quota(settings, db), oa_budget(settings, db)
        budget = budgets(quota, oa)
        async with AsyncExitStack() as stack:
            transports = {}
            if token:
                bot = await stack.enter_async_context(sending_bot(token, settings.telegram.api_base_url))
                transports["telegram"] = TelegramTransport(bot)
            if settings.zalo.token:
                client = ZaloClient(settings.zalo.token, settings.zalo.api_base_url)
                stack.push_async_callback(client.aclose)
                await client.get_me()  # a wrong token or address stops the start, as on Telegram
                transports["zalo"] = ZaloTransport(client, rate=settings.zalo.rate, quota=quota)
            if oa is not None:
                from bot.channels.zalo_oa import OAClient, OATransport, token_store

                oa_settings = settings.zalo_oa
                oa_client = OAClient(token_store(oa_settings, db), oa_settings.api_base_url,
                                     oa_settings.business_api_url)
                stack.push_async_callback(oa_client.aclose)
                transports["zalo_oa"] = OATransport(oa_client, oa, rate=oa_settings.rate)
            runner = scheduled_work(settings, db, transports, budget)
            runner.start()
            try:
                await stop.wait()
            finally:
                await runner.shutdown()

    return start_and_serve(settings, main)


PLAYGROUND_DB = "playground.db"


def run_playground(settings: Settings, as_member: str | None = None, script: str | None = None,
                   channel: str = "telegram", at=None, web: bool = False) -> int:
    from pathlib import Path

    from bot.channels.playground import Playground, ZaloPlayground

    # Never the configured database: the playground opens rounds and links made-up chats.
    db = Database(f"sqlite:///{Path.cwd() / PLAYGROUND_DB}")
    db.upgrade()
    if at is not None:
        from bot.channels.playground_day import show_day

        return show_day(Playground(settings, db), at)
    lines = None
    if script:
        lines = open(script, encoding="utf-8").read().splitlines()
    if channel == "zalo-oa":
        from bot.channels.zalo_oa.playground import OAPlayground

        return OAPlayground(settings, db).run(as_member, lines)
    kind = ZaloPlayground if channel == "zalo" else Playground
    playground = kind(settings, db)
    if not web:
        return playground.run(as_member, lines)
    if not playground.prepare():
        return 1
    server = playground_console(settings, db)
    playground.console_url = server.url
    try:
        return playground.run(as_member, lines)
    finally:
        server.stop()


PLAYGROUND_CADRE = "CB002"


def playground_console(settings: Settings, db: Database):
    """The console on ``web.listen`` for the playground, with a login link for the sample cadre printed
    on a line of its own (``http://...``)."""
    from sqlalchemy import select

    from bot.console.app import create_console
    from bot.scheduling.due import schedule_from
    from bot.services.console_access import issue_login, login_url
    from bot.storage.models import Member
    from bot.timeutil import utcnow
    from bot.web import ThreadedWebServer, create_app

    console = create_console(db, settings.tz, quiet=schedule_from(settings).quiet, bot_name="hoctap_playground_bot")
    server = ThreadedWebServer(create_app(console=console), settings.web.listen).start()
    with db.session() as s:
        cadre = s.scalar(select(Member).where(Member.code == PLAYGROUND_CADRE))
        token = issue_login(s, cadre, utcnow()) if cadre is not None else None
    print(f"Trang quản trị: {server.url}/quantri/")
    if token:
        print(login_url(server.url, token))
        print(f"(đường dẫn vào cho cán bộ {PLAYGROUND_CADRE}, dùng một lần trong 5 phút; trong chat gõ /quantri)")
    return server
