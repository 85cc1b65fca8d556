"""The Zalo Bot API over HTTP: ``ZaloClient`` and its error, ``ZaloError``, plus the jittered ``backoff``
that every caller retries with. It exists so that everything that talks to Zalo's servers (the conversation,
the poller, the outbox transport, the runtime) shares one client that keeps the token out of errors and logs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Awaitable, Callable

import aiohttp

from bot import json_text

log = logging.getLogger(__name__)
DEFAULT_ZALO_API = "https://bot-api.zaloplatforms.com"
CONNECT = 5.0  # seconds to connect: a call that could not connect was surely not made
UNAUTHORIZED = 401  # the spec: a bad token (revoked, or reset in Bot Creator)


def http_pool(timeout: float = 15.0) -> aiohttp.ClientSession:
    """A connection pool that many bots' clients share (the caller closes it), made in the event loop
    that uses it. aiohttp, not httpx: a call costs about a quarter of the CPU (every message a member
    gets on Zalo is one call)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), cookie_jar=aiohttp.DummyCookieJar(),
                                 timeout=aiohttp.ClientTimeout(total=timeout))


class ZaloError(Exception):
    """A refused or failed call: ``status`` is Zalo's error code (or the HTTP status); None when
    the request itself failed (network, timeout)."""

    def __init__(self, status: int | None, description: str, *, maybe_delivered: bool = False):
        super().__init__(f"{status or 'network'}: {description}")
        self.status, self.description = status, description
        self.maybe_delivered = maybe_delivered  # the request left and no answer came in time

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in (408, 429) or self.status >= 500


class ZaloClient:
    """``POST {base_url}/bot{token}/{method}`` with a JSON body; answers ``{ok, result}``."""

    def __init__(self, token: str, base_url: str = DEFAULT_ZALO_API, *, timeout: float = 15.0,
                 http: aiohttp.ClientSession | None = None):
        """``http``: a pool shared by many bots' clients (``http_pool``; the caller closes it); by default
        the client makes its own on its first call, and ``aclose`` closes it."""
        self._token = token
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._owns_http = http is None
        self._http = http
        # awaited when Zalo refuses the token (401), before the error is raised: who must act is told
        self.on_unauthorized: Callable[[], Awaitable[None]] | None = None

    def __repr__(self) -> str:
        return f"ZaloClient({self._base!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or (self._owns_http and self._http.closed):
            self._http = http_pool(self._timeout)
        return self._http

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        url = f"{self._base}/bot{self._token}/{method}"
        try:
            total = timeout or self._timeout
            async with self._session().post(url, json=params or {}, allow_redirects=False,
                                            timeout=aiohttp.ClientTimeout(total=total,
                                                                          sock_connect=min(total, CONNECT))) as r:
                status, raw = r.status, await r.read()
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:  # nothing left: safe again
            raise ZaloError(None, f"{method}: could not connect ({type(exc).__name__})") from None
        except asyncio.TimeoutError:  # it left: Zalo may have done it (a message delivered)
            raise ZaloError(None, f"{method}: no answer in time", maybe_delivered=True) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            # the connection broke once the request was on its way: as a timeout, it may have been done
            raise ZaloError(None, f"{method}: {type(exc).__name__}", maybe_delivered=True) from None
        except aiohttp.ClientError as exc:  # some (a bad address) quote the URL, token and all
            raise ZaloError(None, f"{method}: {self._redact(str(exc)) or type(exc).__name__}") from None
        try:
            body = json_text.loads(raw)  # a lone surrogate in a member's text must not fail the update's keeping
        except ValueError:
            raise ZaloError(status, f"{method}: HTTP {status} without JSON") from None
        if isinstance(body, dict) and body.get("ok") is True:
            return body.get("result")
        body = body if isinstance(body, dict) else {}
        code = body.get("error_code", body.get("errorCode", status))
        try:
            code = int(code)
        except (TypeError, ValueError):
            code = status
        if UNAUTHORIZED in (code, status) and self.on_unauthorized is not None:
            try:
                await self.on_unauthorized()
            except Exception:  # noqa: BLE001 - telling is a courtesy: the caller still learns of the 401
                log.exception("Zalo: telling of a refused token failed")
        raise ZaloError(code, self._redact(str(body.get("description") or body.get("message") or "refused")))

    async def get_me(self) -> dict[str, Any]:
        return await self.call("getMe")

    async def get_updates(self, timeout: int) -> Any:
        """One update, or ZaloError 408 when there was nothing new within ``timeout`` seconds."""
        return await self.call("getUpdates", {"timeout": str(timeout)}, timeout=timeout + 10)

    async def delete_webhook(self) -> Any:
        return await self.call("deleteWebhook")

    async def set_webhook(self, url: str, secret_token: str) -> dict[str, Any]:
        return await self.call("setWebhook", {"url": url, "secret_token": secret_token})

    async def get_webhook_info(self) -> dict[str, Any] | None:
        """The webhook set, or None (Zalo answers 404 when there is none)."""
        try:
            return await self.call("getWebhookInfo")
        except ZaloError as exc:
            if exc.status == 404:
                return None
            raise

    async def send_message(self, chat_id: str, text: str) -> dict[str, Any]:
        return await self.call("sendMessage", {"chat_id": chat_id, "text": text})

    async def send_photo(self, chat_id: str, photo_url: str, caption: str | None = None) -> dict[str, Any]:
        params = {"chat_id": chat_id, "photo": photo_url}
        if caption:
            params["caption"] = caption
        return await self.call("sendPhoto", params)

    async def send_chat_action(self, chat_id: str, action: str = "typing") -> None:
        await self.call("sendChatAction", {"chat_id": chat_id, "action": action})

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with jitter (Zalo's 429 has no retry_after)."""
    return min(base * 2 ** attempt, cap) * random.uniform(0.5, 1.5)
