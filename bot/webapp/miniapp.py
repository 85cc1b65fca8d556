"""Telegram Mini App ``initData``, checked exactly as Telegram specifies.

secret = HMAC-SHA256(key="WebAppData", msg=bot token); the data-check string is every received field
except ``hash``, as ``key=value`` lines sorted by key and joined by ``\\n``; ``hash`` must equal
hex(HMAC-SHA256(key=secret, msg=data-check string)). A stale ``auth_date`` is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl

MAX_AGE = timedelta(hours=24)


@dataclass
class InitDataCheck:
    status: str  # ok | missing | tampered | stale
    user_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def data_check_string(fields: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "hash")


def sign_init_data(fields: dict[str, str], bot_token: str) -> str:
    """The ``hash`` Telegram would add to ``fields`` (for the emulator and tests)."""
    secret = hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()
    return hmac.new(secret, data_check_string(fields).encode(), hashlib.sha256).hexdigest()


def check_init_data(init_data: str, bot_token: str, now: datetime, max_age: timedelta = MAX_AGE) -> InitDataCheck:
    if not init_data or not bot_token:
        return InitDataCheck("missing")
    try:
        fields = dict(parse_qsl(init_data, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        return InitDataCheck("tampered")
    given = fields.get("hash", "")
    if not hmac.compare_digest(sign_init_data(fields, bot_token).encode(), given.encode("utf-8", "replace")):
        return InitDataCheck("tampered")
    try:
        auth_date = int(fields.get("auth_date", ""))
        user_id = int(json.loads(fields.get("user", "{}"))["id"])
    except (ValueError, KeyError, TypeError):
        return InitDataCheck("tampered")
    age = now.timestamp() - auth_date
    if age > max_age.total_seconds() or age < -300:
        return InitDataCheck("stale", user_id)
    return InitDataCheck("ok", user_id)
