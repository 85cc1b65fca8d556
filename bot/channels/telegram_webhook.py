"""Telegram by webhook (``telegram.mode: webhook``): ``POST /telegram/webhook`` on the process's web server.

Any number of processes behind one reverse proxy can serve it (polling allows one). The
``X-Telegram-Bot-Api-Secret-Token`` header is compared in constant time before the body is read; the body
is size-limited and parsed like every webhook's (``bot/web.py``). The update is handled (its id recorded
with the work, the reply sent) *before* the 200: a process that dies on the way never answered, so Telegram
delivers the update again, to another process, and the recorded id keeps a redelivery from acting twice. A
handling that failed (the database down, say) answers 500 for the same reason: its transaction, the recorded
id with it, rolled back, so the redelivery is handled afresh.
"""

from __future__ import annotations

import hmac
import logging
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from telegram import Update
from telegram.ext import Application

from bot.channels.telegram import HANDLING_FAILURES, StillFlooded, initialize, with_retries
from bot.web import BadBody, parse_json, read_body

log = logging.getLogger(__name__)
PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ["message", "callback_query"]
SECRET_FORM = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # what setWebhook's secret_token accepts


def _refuse(status: int, why: str) -> Response:
    return JSONResponse({"ok": False, "description": why}, status_code=status)


def webhook_route(app: Application, secret: str) -> Route:
    expected = secret.encode("utf-8")

    async def endpoint(request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
        if not expected or not hmac.compare_digest(given, expected):
            log.warning("Telegram webhook: a request without the right secret token refused")
            return _refuse(403, "Forbidden")
        try:
            body = parse_json(await read_body(request))
        except BadBody as exc:
            log.info("Telegram webhook: %s", exc.description)
            return exc.response()
        if not isinstance(body, dict) or type(body.get("update_id")) is not int:
            return _refuse(400, "Bad request: not a Telegram update")
        try:
            update = Update.de_json(body, app.bot)
        except Exception:  # noqa: BLE001 - a malformed update is refused, never a traceback
            log.info("Telegram webhook: an update that does not parse; refused")
            return _refuse(400, "Bad request: not a Telegram update")
        if not app.running:  # this process is still starting (or stopping): Telegram delivers it again
            return _refuse(503, "Service unavailable: starting")
        failures: list = []
        reset = HANDLING_FAILURES.set(failures)
        try:
            await app.update_processor.process_update(update, app.process_update(update))
        finally:
            HANDLING_FAILURES.reset(reset)
        if failures:  # e.g. the database was down: its transaction (with the update's id) rolled back
            return _refuse(500, "Internal error: the update was not handled; deliver it again")
        return JSONResponse({"ok": True})

    return Route(PATH, endpoint, methods=["POST"])


async def start_webhook(app: Application, public_url: str, secret: str) -> None:
    """Start ``app`` without an updater and tell Telegram where to post (every process says the same)."""
    await initialize(app)
    if app.post_init:
        await app.post_init(app)
    await app.start()
    url = public_url.rstrip("/") + PATH
    try:
        await with_retries(lambda: app.bot.set_webhook(url, secret_token=secret, allowed_updates=ALLOWED_UPDATES),
                           "setWebhook")
    except StillFlooded:
        pass  # logged; another process (or the next start) sets it
    log.info("Telegram: updates arrive at %s", url)
