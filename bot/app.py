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
    from bot.channels.telegram import TelegramChannel

    setup_logging(token)
    db = Database(settings.database_url)
    db.upgrade()
    app = TelegramChannel(chat_service(settings, db)).build(token, settings.telegram.api_base_url)
    app.run_polling(allowed_updates=["message", "callback_query"])
    return 0


def run_playground(settings: Settings, as_member: str | None = None, script: str | None = None) -> int:
    from bot.channels.playground import Playground

    db = Database(settings.database_url)
    db.upgrade()
    lines = None
    if script:
        lines = open(script, encoding="utf-8").read().splitlines()
    return Playground(settings, db).run(as_member, lines)
