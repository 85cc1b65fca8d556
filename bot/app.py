"""Start the product: every channel whose token is set (Telegram, Zalo), else the local playground."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Awaitable, Callable

from bot.config import Settings
from bot.logs import learn_secrets, setup_logging
from bot.reports.replies import report_replies
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
                       study_links=study_links(settings), console_url=settings.web_server.public_url,
                       reports=report_replies)


def study_links(settings: Settings):
    """Members' study links, when the pages are served (``web.public_url`` and HOCTAP_WEB_SECRET)."""
    web = settings.web_server
    if not web.public_url or not web.secret:
        return None
    from bot.services.web_links import StudyLinks

    return StudyLinks(web.public_url, web.secret.encode("utf-8"))


def study_pages_route(settings: Settings, db: Database):
    """The study pages (``bot.webapp``) mounted at ``/hoc`` on the one web server."""
    from starlette.routing import Mount

    from bot.webapp.site import PagesConfig, create_pages

    web = settings.web_server
    pages = create_pages(PagesConfig(db, web.secret.encode("utf-8"), web.public_url, settings.tz,
                                     telegram_token=settings.telegram.token))
    return Mount("/hoc", app=pages)


def console_route(settings: Settings, db: Database, budget=None):
    """The web console (``bot.console``) mounted at ``/quantri`` on the one web server; ``budget``: what a
    reminder sent from it must fit in, as in the chat."""
    from starlette.routing import Mount

    from bot.console.app import create_console
    from bot.scheduling.due import schedule_from

    public_url = settings.web_server.public_url or ""
    oa = None
    if settings.zalo_oa.enabled:  # the admins' "Kết nối với Zalo" page
        from bot.channels.zalo_oa.runtime import callback_url, token_store

        oa = (token_store(settings.zalo_oa, db), callback_url(settings.zalo_oa, public_url))
    console = create_console(db, settings.tz, quiet=schedule_from(settings).quiet,
                             secure_cookie=public_url.startswith("https://"),
                             bot_name=settings.telegram.bot_username or "", zalo_link=settings.zalo.share_link or "",
                             budget=budget, links=study_links(settings), oa=oa)
    return Mount("/quantri", app=console)


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


def has_zalo_bots(db: Database) -> bool:
    """Branch bots are registered (``hoctap zalo bots add``): Zalo runs even without ZALO_BOT_TOKEN."""
    from sqlalchemy import select

    from bot.storage.models import ZaloBot

    with db.session() as s:
        return s.scalar(select(ZaloBot.id).limit(1)) is not None


def registered_tokens(db: Database) -> list[str]:
    """The branch bots' tokens, for the log filter."""
    from sqlalchemy import select

    from bot.storage.models import ZaloBot

    with db.session() as s:
        return list(s.scalars(select(ZaloBot.token)))


def _registered_bots(settings: Settings) -> bool:
    from pathlib import Path

    from sqlalchemy.engine import make_url

    try:  # no upgrade, no new file: a database never set up has no bots, and stays as it is
        url = make_url(settings.database_url)
        if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
            return False
        return has_zalo_bots(Database(settings.database_url))
    except Exception:  # noqa: BLE001 - a database that cannot be used is reported when the bot starts
        return False


def fleet_budget(settings: Settings, db: Database, quota):
    """With branch bots, broadcasts must fit each bot's own monthly quota (``FleetBudget``)."""
    if not settings.zalo.monthly_quota or not has_zalo_bots(db):
        return quota
    from bot.channels.zalo.fleet import FleetBudget

    return FleetBudget(db, quota, settings.zalo.monthly_quota, settings.tz,
                       **({"default_name": settings.zalo.bot_name} if settings.zalo.bot_name else {}))


def run(settings: Settings) -> int:
    if (not settings.telegram.token and not settings.zalo.token and not settings.zalo_oa.enabled
            and not _registered_bots(settings)):
        deployed = [why for why, yes in (("telegram.mode is webhook", settings.telegram.mode == "webhook"),
                                         ("web.public_url is set", bool(settings.web_server.public_url)),
                                         ("the database is PostgreSQL", settings.database_url.startswith("postgres")))
                    if yes]
        if deployed:  # a production configuration missing its token: say so, never serve a playground
            print(f"error: neither TELEGRAM_BOT_TOKEN nor ZALO_BOT_TOKEN is set, and this configuration is a "
                  f"deployment ({', '.join(deployed)}): set the token; the local playground runs only without "
                  "these", file=sys.stderr)
            return 2
        print("Neither TELEGRAM_BOT_TOKEN nor ZALO_BOT_TOKEN is set: starting the local playground instead.",
              file=sys.stderr)
        return run_playground(settings)
    if settings.zalo.token and settings.zalo.mode == "webhook" and not settings.zalo.webhook_secret:
        print("error: zalo.mode is webhook but ZALO_WEBHOOK_SECRET is not set (8-256 characters)", file=sys.stderr)
        return 2
    if settings.telegram.token and settings.telegram.mode == "webhook":
        from bot.channels.telegram_webhook import SECRET_FORM

        if not SECRET_FORM.match(settings.telegram.webhook_secret or ""):
            print("error: telegram.mode is webhook but TELEGRAM_WEBHOOK_SECRET is not set to 1-256 characters "
                  "A-Z, a-z, 0-9, _ and -", file=sys.stderr)
            return 2
        if not settings.web_server.public_url:
            print("error: telegram.mode is webhook but web.public_url is not set", file=sys.stderr)
            return 2
    return start_and_serve(settings, lambda db: serve(settings, db))


def start_and_serve(settings: Settings, main: Callable[[Database], Awaitable[None]]) -> int:
    """Open the database and run ``main`` until it stops; a failure to start is one line without
    secrets and exit status 2 (bot/startup.py)."""
    setup_logging(*secrets_of(settings), log_format=settings.log_format)

    def start() -> int:
        db = Database(settings.database_url)
        db.upgrade()
        learn_secrets(*registered_tokens(db))
        asyncio.run(main(db))
        return 0

    return start_or_explain(settings, start)


def needs_web_server(settings: Settings) -> bool:
    """A web server starts for a webhook, for files Zalo fetches, or when the ``web`` section asks for one
    (/healthz, /metrics, pages)."""
    return (settings.web is not None or (bool(settings.telegram.token) and settings.telegram.mode == "webhook")
            or (bool(settings.zalo.token) and (settings.zalo.mode == "webhook" or bool(settings.zalo.public_url)))
            or settings.zalo_oa.enabled)


async def serve(settings: Settings, db: Database, stop: asyncio.Event | None = None, *, clock=None) -> None:
    """Run every configured channel and the scheduled work in this event loop until ``stop`` is set
    (SIGINT/SIGTERM set it when this runs in the main thread). One web server serves every webhook,
    files, /healthz and /metrics."""
    import signal
    import threading
    from dataclasses import replace

    from bot.metrics import metrics_route
    from bot.web import WebServer, create_app, health_route

    stop = stop or asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    quota, oa = zalo_quota(settings, db), oa_budget(settings, db)
    budget = budgets(await asyncio.to_thread(fleet_budget, settings, db, quota), oa)
    web_settings = settings.web_server
    metrics = metrics_route(db, {"zalo_messages": quota, "zalo_oa_dong": oa})
    routes = [] if web_settings.metrics_listen else [metrics]  # else on a listener of its own, below
    if study_links(settings) is not None:
        routes.append(study_pages_route(settings, db))
    elif web_settings.public_url:
        logging.getLogger(__name__).info("the study pages are off: set HOCTAP_WEB_SECRET to serve them")
    if web_settings.public_url:
        routes.append(console_route(settings, db, budget))
    web_app = create_app(db=db, routes=routes)
    web = WebServer(web_app, web_settings.listen) if needs_web_server(settings) else None
    transports: dict = {}
    closers: list = []
    try:
        if web_settings.metrics_listen:  # what the proxy forwards never includes it
            from starlette.applications import Starlette

            scrape = WebServer(Starlette(routes=[metrics, health_route(db)]), web_settings.metrics_listen)
            await scrape.start()
            closers.append(scrape.stop)
        if web is not None:
            web_app.state.starting = True  # /healthz and unmounted paths answer 503 until every channel is up
            await web.start()  # first: Telegram and Zalo check the webhook when it is set
        if settings.telegram.token:
            from bot.channels.telegram import TelegramChannel, TelegramTransport, initialize

            webhook = settings.telegram.mode == "webhook"
            app = TelegramChannel(chat_service(settings, db, "telegram", budget)).build(
                settings.telegram.token, settings.telegram.api_base_url, webhook=webhook)
            if webhook:
                from bot.channels.telegram_webhook import start_webhook, webhook_route
                from bot.web import mount

                mount(web_app, [webhook_route(app, settings.telegram.webhook_secret)])
                closers.append(app.shutdown)
                await start_webhook(app, web_settings.public_url, settings.telegram.webhook_secret)
                closers.append(app.stop)
            else:
                await initialize(app)
                closers.append(app.shutdown)
                if app.post_init:
                    await app.post_init(app)
                await app.updater.start_polling(allowed_updates=["message", "callback_query"])
                await app.start()
                closers += [app.stop, app.updater.stop]  # run in reverse: the updater first
            transports["telegram"] = TelegramTransport(app.bot)
            closers.append(transports["telegram"].aclose)
        if settings.zalo.token or await asyncio.to_thread(has_zalo_bots, db):
            from bot.channels.zalo import ZaloOptions, ZaloRuntime

            options = replace(ZaloOptions.from_settings(settings.zalo), public_url=web_settings.public_url)
            zalo = ZaloRuntime(options, chat_service(settings, db, "zalo", budget), quota=quota,
                               bot_quota=settings.zalo.monthly_quota or None, web_app=web_app)
            await zalo.start()
            closers.append(zalo.stop)
            transports["zalo"] = zalo.transport
        if oa is not None:
            from bot.channels.zalo_oa import OARuntime

            oa_runtime = OARuntime(settings.zalo_oa, chat_service(settings, db, "zalo_oa", budget), oa,
                                   web_app=web_app)
            await oa_runtime.start()
            closers.append(oa_runtime.stop)
            transports["zalo_oa"] = oa_runtime.transport
        runner = scheduled_work(settings, db, transports, budget)
        runner.start()
        closers.append(runner.shutdown)
        web_app.state.starting = False
        await stop.wait()
    finally:
        if web is not None:
            closers.append(web.stop)  # first: no new request while the channels stop
        for close in reversed(closers):
            try:
                await close()
            except Exception:  # noqa: BLE001 - stop the others anyway
                logging.getLogger(__name__).exception("while stopping")


def scheduled_work(settings: Settings, db: Database, transports, budget=None):
    """The scheduler tick and outbox sender, with the digest and closing reports."""
    from bot.scheduling.reports import ReportBuilder
    from bot.scheduling.runner import ScheduledWork

    from bot.metrics import measured

    return ScheduledWork(db, due_schedule(settings, budget), measured(transports), rate=settings.scheduler.outbox_rate,
                         report_builder=ReportBuilder(settings), interval=settings.scheduler.tick_seconds)


def due_schedule(settings: Settings, budget=None):
    """The scheduler's rules with the channels' ``budget`` and the members' study links: the same for the running
    scheduler and for ``hoctap scheduler run-due``."""
    from dataclasses import replace

    from bot.scheduling.due import schedule_from

    return replace(schedule_from(settings), budget=budget, links=study_links(settings))


def run_scheduler(settings: Settings) -> int:
    """``hoctap scheduler``: the scheduled side alone, for deployments that separate it."""
    import asyncio

    from bot.channels.telegram import TelegramTransport, sending_bot

    token = settings.telegram.token
    if not token and not settings.zalo.token and not settings.zalo_oa.enabled and not _registered_bots(settings):
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
        budget = budgets(fleet_budget(settings, db, quota), oa)
        async with AsyncExitStack() as stack:
            transports = {}
            if token:
                bot = await stack.enter_async_context(sending_bot(token, settings.telegram.api_base_url))
                transports["telegram"] = TelegramTransport(bot)
                stack.push_async_callback(transports["telegram"].aclose)
            if settings.zalo.token or has_zalo_bots(db):
                from bot.channels.zalo.client import http_pool
                from bot.channels.zalo.fleet import FleetTransport, ZaloFleet

                http = http_pool()  # one pool for every bot
                stack.push_async_callback(http.close)
                default = None
                if settings.zalo.token:
                    client = ZaloClient(settings.zalo.token, settings.zalo.api_base_url, http=http)
                    await client.get_me()  # a wrong token or address stops the start, as on Telegram
                    default = ZaloTransport(client, rate=settings.zalo.rate, quota=quota)
                fleet = ZaloFleet(db, chat_service(settings, db, "zalo", budget), http,
                                  api_base_url=settings.zalo.api_base_url, tz=settings.tz,
                                  monthly_quota=settings.zalo.monthly_quota or None, rate=settings.zalo.rate)
                transports["zalo"] = FleetTransport(fleet, default)
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

        playground = OAPlayground(settings, db)
    else:
        playground = (ZaloPlayground if channel == "zalo" else Playground)(settings, db)
    if not web:
        return playground.run(as_member, lines)
    import secrets

    from bot.webapp.server import BackgroundPages

    if not playground.prepare():
        return 1
    server = playground_console(settings, db, playground)
    try:
        # a fresh secret each time: links of an earlier playground stop working
        with BackgroundPages(db, secrets.token_bytes(32), tz=settings.tz) as pages:
            playground.pages = pages
            return playground.run(as_member, lines)
    finally:
        server.stop()


PLAYGROUND_CADRE = "CB002"


def playground_console(settings: Settings, db: Database, playground):
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
    server = ThreadedWebServer(create_app(console=console), "127.0.0.1:0").start()  # a free port
    with db.session() as s:
        cadre = s.scalar(select(Member).where(Member.code == PLAYGROUND_CADRE))
        token = issue_login(s, cadre, utcnow()) if cadre is not None else None
    playground.console_url = server.url  # /quantri in the chat answers with a link to it
    playground.banner = [f"Trang quản trị: {server.url}/quantri/"]  # printed after the member's study link
    if token:
        playground.banner += [login_url(server.url, token),
                              f"(đường dẫn vào cho cán bộ {PLAYGROUND_CADRE}, dùng một lần trong 5 phút; trong chat gõ /quantri)"]
    return server
