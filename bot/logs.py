"""Logging set-up: secrets never reach a log line, tracebacks included."""

from __future__ import annotations

import logging
from urllib.parse import quote


def redact(text: str, secrets: list[str]) -> str:
    """``text`` without any of ``secrets``, also in their URL-encoded spelling (tokens travel in URLs)."""
    for secret in secrets:
        if secret:
            for spelling in {secret, quote(secret, safe="")}:
                text = text.replace(spelling, "<secret>")
    return text


class RedactingFormatter(logging.Formatter):
    """Formats a record as usual, then removes the secrets from the whole text (message and
    traceback): tokens travel in Bot API URLs, which httpx and error messages repeat."""

    def __init__(self, fmt: str, secrets: list[str]):
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def setup_logging(*secrets: str | None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                            [s for s in secrets if s]))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry the token in URLs
