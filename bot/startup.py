"""Why ``hoctap run`` or ``hoctap scheduler`` could not start, as one line an operator can act on.

Libraries put secrets in their errors (python-telegram-bot's ``InvalidToken`` quotes the token, URLs
carry it in their path, database URLs carry a password), so a start-up failure never escapes as a
traceback: it becomes ``error: ...`` on stderr and exit status 2, and every secret of the settings is
removed even from text we did not write ourselves.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable
from urllib.parse import urlsplit

from bot.config import Settings
from bot.logs import learned_secrets, redact, redact_learned

log = logging.getLogger(__name__)

TELEGRAM_REJECTED = "Telegram rejected the token — check TELEGRAM_BOT_TOKEN and telegram.api_base_url"
ZALO_REJECTED = "Zalo rejected the token — check ZALO_BOT_TOKEN and zalo.api_base_url"


def secrets_of(settings: Settings) -> list[str]:
    """Every secret the settings hold: bot tokens, the webhook secret, the database password. (The
    branch bots' tokens are in the database: ``bot.logs.learn_secrets`` adds them once it is open.)"""
    from sqlalchemy.engine import make_url

    found = [os.environ.get("HOCTAP_TOKEN_KEY"), settings.telegram.token, settings.telegram.webhook_secret, settings.zalo.token, settings.zalo.webhook_secret,
             settings.zalo_oa.app_secret, settings.zalo_oa.oa_secret_key, settings.web_server.secret]
    try:
        found.append(make_url(settings.database_url).password)
    except Exception:  # noqa: BLE001 - an unparsable URL is refused by the settings already
        pass
    return [s for s in found if s]


def start_or_explain(settings: Settings, start: Callable[[], int]) -> int:
    """``start()``'s exit status; a failure is one secret-free line on stderr and exit status 2."""
    try:
        return start()
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # noqa: BLE001 - whatever failed, no traceback carries a secret out
        print(f"error: {redact_learned(redact(explain(exc, settings), secrets_of(settings) + learned_secrets()))}",
              file=sys.stderr)
        return 2


def explain(exc: Exception, settings: Settings) -> str:
    """A start-up failure in words, naming the setting to check."""
    from sqlalchemy.exc import DBAPIError
    from telegram.error import InvalidToken, NetworkError, TelegramError

    from bot.channels.zalo import ZaloError

    if isinstance(exc, InvalidToken):  # 401 and 404 on getMe: a wrong token or a wrong base URL
        return TELEGRAM_REJECTED
    if isinstance(exc, NetworkError):  # includes TimedOut; a Telegram 5xx is one too
        return (f"cannot reach Telegram at {_host(settings.telegram.api_base_url)} ({exc.message}) — "
                "check telegram.api_base_url and the network")
    if isinstance(exc, TelegramError):
        return f"Telegram refused to start the bot ({exc.message}) — check telegram.api_base_url"
    if isinstance(exc, ZaloError):
        if exc.status in (401, 404):
            return ZALO_REJECTED
        if exc.status is None:
            return (f"cannot reach Zalo at {_host(settings.zalo.api_base_url)} ({exc.description}) — "
                    "check zalo.api_base_url and the network")
        return f"Zalo refused to start the bot ({exc}) — check the zalo settings"
    if isinstance(exc, DBAPIError):
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else "cannot use the database"
        return f"database: {first}"
    from bot.storage.token_key import TokenKeyError

    if isinstance(exc, TokenKeyError):
        return str(exc)
    if isinstance(exc, (OSError, ValueError)):  # a port in use, an incomplete webhook set-up
        return str(exc)
    log.error("start-up failed", exc_info=exc)  # a bug: the traceback goes through the redacting log
    return f"the bot stopped: {type(exc).__name__}: {exc}"


def _host(url: str) -> str:
    """Host and port of a URL, nothing of its path (where Bot API URLs keep the token)."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    except ValueError:
        return "the configured address"
