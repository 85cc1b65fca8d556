"""The OA API over httpx: consultation messages with buttons, the quota pre-flight and ZNS template sends.

Every call carries the ``access_token`` header from the ``TokenStore``; error -216 (token invalid or
expired) refreshes once and retries once. Zalo answers HTTP 200 with ``{error, message, data}``: a
non-zero ``error`` raises ``OAError``. The token is in a header, never in a URL, an error or a log line.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Callable

import httpx

from bot.channels.zalo_oa.tokens import OAError, TokenStore
from bot.timeutil import utcnow

logging.getLogger("httpx").setLevel(logging.WARNING)

TOKEN_INVALID = -216
ZNS_TOKEN_EXPIRED = -124  # the spec's "ZNS token expired": the same access token, refreshed the same way
# Errors that mean "this user cannot get a consultation message now" (spec: -224 out of window or quota,
# -230 no interaction for 7 days, -213/-201 not a follower / invalid user): the ladder's next rung.
OUT_OF_WINDOW = (-224, -230, -213, -201)
CONNECT = 5.0  # seconds to connect: a call that could not connect sent nothing and may be tried again


class OAClient:
    def __init__(self, tokens: TokenStore, api_base_url: str = "https://openapi.zalo.me",
                 business_api_url: str = "https://business.openapi.zalo.me", *, timeout: float = 15.0,
                 clock: Callable[[], datetime] = utcnow):
        self.tokens, self.clock = tokens, clock
        self._api, self._business = api_base_url.rstrip("/"), business_api_url.rstrip("/")
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT)),
                                       follow_redirects=False)

    def __repr__(self) -> str:
        return f"OAClient({self._api!r})"

    async def call(self, url: str, body: dict[str, Any], name: str) -> dict[str, Any]:
        for attempt in range(2):
            token = await asyncio.to_thread(self.tokens.current, self.clock())
            try:
                r = await self._http.post(url, json=body, headers={"access_token": token})
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):  # nothing left: safe to try again
                raise OAError(None, f"{name}: could not connect") from None
            except httpx.TimeoutException:  # it left: Zalo may have done it (a message delivered, and paid)
                raise OAError(None, f"{name}: no answer in time", maybe_delivered=True) from None
            except httpx.HTTPError as exc:  # the connection broke once the request was on its way: the same
                raise OAError(None, f"{name}: {type(exc).__name__}", maybe_delivered=True) from None
            if r.status_code != 200:
                raise OAError(r.status_code, f"{name}: HTTP {r.status_code}")
            try:
                answer = r.json()
            except ValueError:
                raise OAError(502, f"{name}: an answer without JSON") from None
            code = int(answer.get("error") or 0) if isinstance(answer, dict) else 502
            if code == 0:
                return answer.get("data") or {}
            if code in (TOKEN_INVALID, ZNS_TOKEN_EXPIRED) and attempt == 0:
                await asyncio.to_thread(self.tokens.refresh, self.clock(), token, True)
                continue  # once: a refreshed token refused too is the error below
            raise OAError(code, f"{name}: {answer.get('message') or 'refused'}")
        raise AssertionError("unreachable: the second try returns or raises")

    async def send_cs(self, user_id: str, text: str, buttons: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A consultation message; ``buttons`` (≤ 5) ride in a template attachment."""
        message: dict[str, Any] = {"text": text}
        if buttons:
            message["attachment"] = {"type": "template", "payload": {"buttons": buttons}}
        return await self.call(f"{self._api}/v3.0/oa/message/cs", {"recipient": {"user_id": user_id},
                                                                  "message": message}, "cs")

    async def quota(self, user_id: str) -> dict[str, Any]:
        return await self.call(f"{self._api}/v3.0/oa/quota/message", {"user_id": user_id}, "quota")

    async def send_zns(self, phone: str, template_id: str, data: dict[str, str], tracking_id: str) -> dict[str, Any]:
        body = {"phone": phone, "template_id": template_id, "template_data": data, "tracking_id": tracking_id}
        return await self.call(f"{self._business}/message/template", body, "zns")

    async def aclose(self) -> None:
        await self._http.aclose()
