"""The branch bots' tokens and the Zalo OA's at rest: encrypted with Fernet (``cryptography``) under a key derived from
``HOCTAP_TOKEN_KEY``, else from the web secret (``HOCTAP_WEB_SECRET``), so a copy of the database alone
does not hand out the bots. ``EncryptedText`` is the column type: rows written without a key, or before
tokens were encrypted, are plain and still read; ``rotate`` writes the new token encrypted.

The key is set once per process from the settings (``use_key``); losing it (or changing the web secret
without ``HOCTAP_TOKEN_KEY``) makes the stored tokens unreadable: back it up beside the database.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

PREFIX = "fernet:"  # what marks an encrypted value (a plain token starts with its numeric id)
_fernet: Fernet | None = None


class TokenKeyError(Exception):
    """A stored token cannot be read with the configured key."""


def derive(secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"hoctap zalo bot tokens").derive(
        secret.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def use_key(secret: str | None) -> None:
    """Encrypt tokens from now on with a key derived from ``secret`` (None: store them plain)."""
    global _fernet
    _fernet = derive(secret) if secret else None


def has_key() -> bool:
    return _fernet is not None


def seal(value: str) -> str:
    return PREFIX + _fernet.encrypt(value.encode("utf-8")).decode("ascii") if _fernet is not None else value


def unseal(value: str) -> str:
    if not value.startswith(PREFIX):
        return value  # written before tokens were encrypted, or without a key
    if _fernet is None:
        raise TokenKeyError("the stored Zalo secrets (bot tokens, webhook secrets, the OA's tokens) are encrypted "
                            "but no key is set: set HOCTAP_TOKEN_KEY (or the web secret) as when they were stored")
    try:
        return _fernet.decrypt(value[len(PREFIX):].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise TokenKeyError("the stored Zalo secrets (bot tokens, webhook secrets, the OA's tokens) were encrypted "
                            "with another key: set HOCTAP_TOKEN_KEY (or the web secret) as when they were stored, or "
                            "reset each bot's token in Bot Creator and run hoctap zalo bots rotate, and connect the "
                            "Zalo OA again from the console") from None


class EncryptedText(TypeDecorator):
    """Text encrypted with the process's token key when written; plain rows read as they are."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else seal(value)

    def process_result_value(self, value, dialect):
        return None if value is None else unseal(value)
