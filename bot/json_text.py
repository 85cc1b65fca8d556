"""JSON from outside (webhook bodies, polled updates) decoded into text every layer can store.

JSON may carry a lone UTF-16 surrogate (``"\\ud800"``): Python decodes it, but no UTF-8 encoder, database or
messenger takes it, so one broken emoji would fail the update (a 500 the OA retries for an hour). ``loads``
replaces each by U+FFFD where a body is decoded, before anything keeps or handles it.
"""

from __future__ import annotations

import json
import re
from typing import Any

_MAYBE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")  # an escaped surrogate, or one written raw (CESU-8)
_LONE = re.compile("[\ud800-\udfff]")  # after decoding, pairs are one character: any surrogate left is lone


def loads(raw: bytes) -> Any:
    """``json.loads`` with lone surrogates replaced (the walk happens only when ``raw`` may hold one)."""
    value = json.loads(raw)
    return without_lone_surrogates(value) if may_hold_surrogates(raw) else value


def may_hold_surrogates(raw: bytes) -> bool:
    """Whether ``raw`` may decode to a lone surrogate (false positives: escaped pairs, which are harmless)."""
    return _MAYBE.search(raw) is not None


def without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE.sub("\ufffd", value)
    if isinstance(value, list):
        return [without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in value.items()}
    return value
