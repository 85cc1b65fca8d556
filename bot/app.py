"""Start the product: the Telegram bot when a token is set, else the local playground."""

from __future__ import annotations

import logging
import sys

from bot.config import Settings
from bot.services.chat import ChatService
from bot.storage.db import Database


def setup_logging(*secrets: str) -> None:
    from bot.channels.telegram import RedactSecrets

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(*secrets))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry the token in URLs


def chat_service(settings: Settings, db: Database, channel: str = "telegram") -> ChatService:
    from bot.channels.telegram import TRAITS

    return ChatService(db, TRAITS, settings.tz)


def run(settings: Settings) -> int:
    token = settings.telegram.token
    if not token:
        print("TELEGRAM_BOT_TOKEN is not set: starting the local playground instead.", file=sys.stderr)
        return run_playground(settings)
    from bot.channels.telegram import TelegramChannel, TelegramTransport

    setup_logging(token)
    db = Database(settings.database_url)
    db.upgrade()
    work = {}

    async def start_scheduled_work(app) -> None:
        work["runner"] = scheduled_work(settings, db, {"telegram": TelegramTransport(app.bot)})
        work["runner"].start()

    async def stop_scheduled_work(app) -> None:
        if "runner" in work:
            await work["runner"].shutdown()

    app = TelegramChannel(chat_service(settings, db)).build(
        token, settings.telegram.api_base_url, on_start=start_scheduled_work, on_stop=stop_scheduled_work)
    app.run_polling(allowed_updates=["message", "callback_query"])
    return 0


def scheduled_work(settings: Settings, db: Database, transports):
    """The scheduler tick and outbox sender, with the digest and closing reports."""
    from bot.scheduling.due import schedule_from
    from bot.scheduling.reports import ReportBuilder
    from bot.scheduling.runner import ScheduledWork

    schedule = schedule_from(settings)
    return ScheduledWork(db, schedule, transports, rate=settings.scheduler.outbox_rate,
                         report_builder=ReportBuilder(settings), interval=settings.scheduler.tick_seconds)


def run_scheduler(settings: Settings) -> int:
    """``hoctap scheduler``: the scheduled side alone, for deployments that separate it."""
    import asyncio

    from telegram import Bot

    from bot.channels.telegram import TelegramTransport

    token = settings.telegram.token
    if not token:
        print("error: TELEGRAM_BOT_TOKEN is not set; the scheduler needs it to send", file=sys.stderr)
        return 2
    setup_logging(token)
    db = Database(settings.database_url)
    db.upgrade()

    async def main() -> None:
        import signal

        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        async with Bot(token, base_url=settings.telegram.api_base_url) as bot:
            runner = scheduled_work(settings, db, {"telegram": TelegramTransport(bot)})
            runner.start()
            try:
                await stop.wait()
            finally:
                await runner.shutdown()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def run_playground(settings: Settings, as_member: str | None = None, script: str | None = None) -> int:
    from bot.channels.playground import Playground

    db = Database(settings.database_url)
    db.upgrade()
    lines = None
    if script:
        lines = open(script, encoding="utf-8").read().splitlines()
    return Playground(settings, db).run(as_member, lines)
