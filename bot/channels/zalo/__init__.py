"""Zalo channel: a small Bot API client on aiohttp, long polling or a webhook, and text-only rendering.

Zalo has no buttons, no edits, no files and 2,000-character messages, so the neutral replies are
rendered as text: choices become a "gõ …" line (ChatService remembers what each typed word means),
an ``edit`` is a new message, a notice (a toast on Telegram) becomes text, charts are photos that
Zalo fetches from our own web server (``bot/web.py``) when a public address is configured.

Updates carry no ``update_id`` and the platform has no acknowledgement, so an update can come back:
``message_id`` is the ``update_key`` that ChatService records in the same transaction as the work
(durable de-duplication). The token sits in the URL path: it is never logged.

One module per job: ``client`` (HTTP client, errors, backoff), ``rendering`` (replies as Zalo text,
``TRAITS``), ``mentions`` (the bot's names in groups), ``channel`` (the conversation), ``poller`` (long polling), ``quota`` (the monthly
quota), ``transport`` (outbox delivery) and ``runtime`` (one process's wiring). This package
re-exports their public names, so ``from bot.channels.zalo import X`` keeps working.
"""

from __future__ import annotations

import logging

from bot.channels.zalo.channel import CHART_FAILED, EVENT_TEXT, NOT_TEXT_HINT, SEND_TRIES, ZaloChannel
from bot.channels.zalo.client import DEFAULT_ZALO_API, ZaloClient, ZaloError, backoff
from bot.channels.zalo.mentions import bot_names, strip_mention
from bot.channels.zalo.poller import ZaloPoller
from bot.channels.zalo.quota import QuotaRefusal, ZaloQuota
from bot.channels.zalo.rendering import (
    TEXT_LIMIT,
    TRAITS,
    Outgoing,
    choice_lines,
    files_note,
    render,
    reply_text,
)
from bot.channels.zalo.runtime import SECRET_HEADER, WEBHOOK_PATH, BackgroundZalo, ZaloOptions, ZaloRuntime
from bot.channels.zalo.transport import ZaloTransport

log = logging.getLogger(__name__)  # the same logger the modules use (``__package__`` there)

__all__ = [
    "CHART_FAILED", "DEFAULT_ZALO_API", "EVENT_TEXT", "NOT_TEXT_HINT", "SECRET_HEADER", "SEND_TRIES", "TEXT_LIMIT",
    "TRAITS", "WEBHOOK_PATH",
    "BackgroundZalo", "Outgoing", "QuotaRefusal", "ZaloChannel", "ZaloClient", "ZaloError", "ZaloOptions",
    "ZaloPoller", "ZaloQuota", "ZaloRuntime", "ZaloTransport",
    "backoff", "bot_names", "choice_lines", "files_note", "render", "reply_text", "strip_mention",
]
