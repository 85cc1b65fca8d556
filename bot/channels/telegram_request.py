"""python-telegram-bot's HTTP layer over aiohttp (``AiohttpRequest``).

PTB's default, httpx, costs about 2 ms of CPU per Bot API call on a small server (its connection pool
checks every connection on every request); aiohttp costs a fifth of that. A button press is two calls
(the toast and the edit), so the client is most of what a quiz answer costs. PTB keeps everything else:
it encodes the parameters, parses the answers and turns failures into its own exceptions; this class only
moves bytes, and maps aiohttp's failures to PTB's ``TimedOut`` and ``NetworkError`` as ``HTTPXRequest`` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Callable
from urllib.parse import urlencode

import aiohttp
from telegram import Update
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from bot import json_text

log = logging.getLogger(__name__)

_TOKEN_IN_URL = re.compile(r"/bot[^/\s]+")  # the Bot API's URLs: <base>/bot<token>/<method>
DEFAULT_TIMEOUT = 5.0  # HTTPXRequest's read, write and connect defaults
MEDIA_WRITE_TIMEOUT = 20.0  # HTTPXRequest's for uploads
FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what HTTPXRequest sends, encoded here once


class AiohttpRequest(BaseRequest):
    """One aiohttp session with at most ``connections`` connections (PTB's ``connection_pool_size``)."""

    def __init__(self, connections: int = 256, timeout: float = DEFAULT_TIMEOUT):
        self._connections, self._timeout = connections, timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": self.USER_AGENT})

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                         write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                         connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                         pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data is not None and request_data.contains_files else None
        fields = request_data.json_parameters if request_data is not None else None
        read = self._timeout if isinstance(read_timeout, DefaultValue) else read_timeout
        write = (MEDIA_WRITE_TIMEOUT if files else self._timeout) if isinstance(write_timeout, DefaultValue) \
            else write_timeout
        connect = self._timeout if isinstance(connect_timeout, DefaultValue) else connect_timeout
        pool = 1.0 if isinstance(pool_timeout, DefaultValue) else pool_timeout
        # aiohttp has no write timeout: the whole request may take the write and the read time together
        total = None if read is None or write is None else read + write + (connect or 0) + (pool or 0)
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)
        if files:
            body = aiohttp.FormData()
            for name, value in (fields or {}).items():
                body.add_field(name, value)
            for name, (filename, content, mimetype) in files.items():
                body.add_field(name, content, filename=filename, content_type=mimetype)
        else:
            # bytes, not the dict: given a dict aiohttp builds a FormData and a multipart writer per call
            # (a third of a call's cost) only to url-encode it in the end
            body = urlencode(fields).encode() if fields else None
        try:
            async with self._session.request(method, url, data=body, timeout=timeout,
                                             headers=FORM if body and not files else None) as response:
                return response.status, await response.read()
        except asyncio.TimeoutError as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:  # some (a bad scheme, a bad address) quote the URL, token and all
            raise NetworkError(f"aiohttp.{exc.__class__.__name__}: {_TOKEN_IN_URL.sub('/bot<token>', str(exc))}") \
                from None


class KeptUpdatesRequest(AiohttpRequest):
    """The ``getUpdates`` request of a polling bot: each batch is handed to ``keep`` (``bot/services/inbox.py``,
    run in a thread) before python-telegram-bot sees it, so before its next ``getUpdates`` tells Telegram the
    batch arrived. A batch that cannot be kept fails the call like a network error: python-telegram-bot asks
    again, and Telegram, told nothing, hands the batch out again.

    An update python-telegram-bot cannot read (it and Telegram disagree on a field) would fail its whole batch,
    at every poll: it is replaced by its bare ``update_id`` (kept so too), which no handler takes and which still
    moves the offset past it, and logged, as the webhook refuses it alone."""

    def __init__(self, keep: Callable[[list[tuple[str, dict]]], Any], **kwargs):
        super().__init__(**kwargs)
        self._keep = keep

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         *args, **kwargs) -> tuple[int, bytes]:
        status, body = await super().do_request(url, method, request_data, *args, **kwargs)
        if status != 200 or not url.endswith("/getUpdates"):
            return status, body
        try:
            updates = json_text.loads(body).get("result") or []  # keepable: lone surrogates replaced
        except (ValueError, AttributeError):
            return status, body  # PTB says what is wrong with it
        if not isinstance(updates, list):
            return status, body
        readable = [readable_or_bare(u) for u in updates]
        if any(r is not u for r, u in zip(readable, updates)) or json_text.may_hold_surrogates(body):
            # python-telegram-bot gets what is kept: no unreadable update, no lone surrogate (a reply quoting one
            # could not be sent)
            updates = readable
            body = json.dumps({"ok": True, "result": updates}, ensure_ascii=False).encode()
        batch = [(str(u["update_id"]), u) for u in updates if isinstance(u, dict) and "update_id" in u]
        if batch:
            try:
                await asyncio.to_thread(self._keep, batch)
            except Exception as exc:  # noqa: BLE001 - the database: the batch is asked for again
                raise NetworkError(f"the updates could not be kept ({exc.__class__.__name__}); asking again") from None
        return status, body


def readable_or_bare(update):
    """``update`` itself when python-telegram-bot reads it; else (logged) only its ``update_id``, which reads as an
    update with nothing in it: one member's unreadable message does not hold up the others'."""
    if not isinstance(update, dict) or type(update.get("update_id")) is not int:
        return update  # PTB says what is wrong with it
    try:
        Update.de_json(update, None)
    except Exception as exc:  # noqa: BLE001 - any field PTB refuses
        log.warning("update %s: python-telegram-bot cannot read it (%s: %s); skipped",
                    update["update_id"], exc.__class__.__name__, str(exc)[:200])
        return {"update_id": update["update_id"]}
    return update
