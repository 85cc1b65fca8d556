"""Logging set-up: secrets never reach a log line, tracebacks included."""

from __future__ import annotations

import logging


class RedactingFormatter(logging.Formatter):
    """Formats a record as usual, then removes the secrets from the whole text (message and
    traceback): tokens travel in Bot API URLs, which httpx and error messages repeat."""

    def __init__(self, fmt: str, secrets: list[str]):
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "<secret>")
        return text


def setup_logging(*secrets: str | None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", list(secrets)))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry the token in URLs
