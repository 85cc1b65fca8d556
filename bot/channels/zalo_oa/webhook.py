"""``POST /zalo-oa/webhook``: Zalo's signed events, checked, acknowledged at once, handled in the background.

The signature is ``X-ZEvent-Signature: mac=<hex>`` with mac = sha256(app_id + raw body + timestamp + OA
secret key) (plain SHA-256 with the OA's key, not HMAC, per the spec). Which timestamp is canonical is
UNCONFIRMED: the body's ``timestamp`` and the ``X-ZEvent-Timestamp`` header are both tried, each compared
in constant time. The timestamp that verified must be recent (``max_age``: Zalo retries for about an hour,
and a replay inside that is harmless because events are idempotent on ``msg_id``) and not from the future.
Bodies over ``MAX_BODY`` get 413, malformed JSON 400, a bad or stale signature 403, before any work.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.web import BadBody, parse_json, read_body

log = logging.getLogger(__package__)
PATH = "/zalo-oa/webhook"
SIGNATURE_HEADER = "X-ZEvent-Signature"
TIMESTAMP_HEADER = "X-ZEvent-Timestamp"
MAX_BODY = 64 * 1024
FUTURE_SKEW = 300.0


def mac(app_id: str, raw: bytes, timestamp: str, oa_secret: str) -> str:
    return hashlib.sha256(app_id.encode() + raw + timestamp.encode() + oa_secret.encode()).hexdigest()


def _refuse(status: int, why: str) -> Response:
    return JSONResponse({"error": status, "message": why}, status_code=status)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None beyond ``limit`` (or a client gone before it arrived whole: nobody reads the answer)."""
    try:
        return await read_body(request, limit)
    except BadBody:
        return None


def verified_timestamp(app_id: str, secret: str, raw: bytes, body: dict, headers) -> str | None:
    """The event time (epoch milliseconds, as signed: the body's or the header's) whose signature matches, or
    None."""
    given = headers.get(SIGNATURE_HEADER, "").strip()
    given = (given[4:] if given.lower().startswith("mac=") else given).lower()  # hex: ABCDEF is abcdef
    candidates = [str(body.get("timestamp") or ""), headers.get(TIMESTAMP_HEADER, "")]
    found = None
    for ts in candidates:  # both compared every time: no early exit to time
        ok = hmac.compare_digest(mac(app_id, raw, ts, secret).encode(), given.encode("ascii", "replace"))
        if ok and found is None and ts.isascii() and ts.isdigit():
            found = ts
    return found


def webhook_endpoint(take: Callable[[dict], Awaitable[None]], app_id: str, oa_secret: str, *, max_age: float = 7200,
                     clock: Callable[[], float] = time.time, max_body: int = MAX_BODY):
    async def endpoint(request: Request) -> Response:
        raw = await _read_limited(request, max_body)
        if raw is None:
            return _refuse(413, "body too large")
        try:
            body = parse_json(raw)  # bounded nesting: a deep body is a 400, never a RecursionError
        except BadBody:
            return _refuse(400, "not JSON")
        if not isinstance(body, dict):
            return _refuse(400, "a JSON object is expected")
        signed = verified_timestamp(app_id, oa_secret, raw, body, request.headers)
        if signed is None:
            log.warning("Zalo OA webhook: a request with a wrong signature refused")
            return _refuse(403, "bad signature")
        if not body.get("timestamp"):  # signed by the header's time only: the event is that time (its key, its window)
            body = {**body, "timestamp": signed}
        age = clock() - int(signed) / 1000.0
        if age > max_age or age < -FUTURE_SKEW:
            log.warning("Zalo OA webhook: a signed event %.0f s old refused", age)
            return _refuse(403, "stale timestamp")
        await take(body)  # kept before the answer: Zalo does not deliver an answered event again
        return JSONResponse({"error": 0, "message": "ok"})

    return endpoint
