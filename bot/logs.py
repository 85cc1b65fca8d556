"""Logging set-up: secrets never reach a log line, tracebacks included."""

from __future__ import annotations

import logging
import re
from urllib.parse import quote


def redact(text: str, secrets: list[str]) -> str:
    """``text`` without any of ``secrets``, also in their URL-encoded spelling (tokens travel in URLs)."""
    for secret in secrets:
        if secret:
            for spelling in {secret, quote(secret, safe="")}:
                text = text.replace(spelling, "<secret>")
    return text


_LEARNED: dict[str, set[str]] = {}  # secrets known only once the process runs: bot id -> the bots' tokens
_BOT_ID = re.compile(r"(?<!\d)(\d+)(?::|%3A)")  # "<numeric id>:" opens every Zalo bot token


def learn_secrets(*secrets: str | None) -> None:
    """Remove these too from every log line from now on (``RedactingFormatter``) and from a start-up
    failure (``bot/startup.py``): the tokens of the branch bots, read from the database when the
    process starts and whenever a bot registered meanwhile is first used. They are found by their
    "<numeric id>:" opening, so a line costs the same with 2,000 bots as with one."""
    for secret in secrets:
        if secret:
            shaped = _BOT_ID.match(secret)
            _LEARNED.setdefault(shaped.group(1) if shaped else "", set()).add(secret)


def learned_secrets() -> list[str]:
    """The learned tokens that are not shaped like a bot's (redacted one by one, as given secrets are)."""
    return list(_LEARNED.get("", ()))


def redact_learned(text: str) -> str:
    """``text`` without any learned bot token, in either spelling, found from its "<id>:" opening."""
    if not any(_LEARNED.keys() - {""}):
        return text
    pieces, done = [], 0
    for m in _BOT_ID.finditer(text):
        if m.start() < done:
            continue
        for token in _LEARNED.get(m.group(1), ()):
            for spelling in {token, quote(token, safe="")}:
                if text.startswith(spelling, m.start()):
                    pieces += [text[done:m.start()], "<secret>"]
                    done = m.start() + len(spelling)
                    break
            if done > m.start():
                break
    return "".join(pieces) + text[done:] if pieces else text


class RedactingFormatter(logging.Formatter):
    """Formats a record as usual, then removes the secrets from the whole text (message and
    traceback): tokens travel in Bot API URLs, which httpx and error messages repeat."""

    def __init__(self, fmt: str, secrets: list[str]):
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return redact_learned(redact(super().format(record), self.secrets + learned_secrets()))


class JsonFormatter(RedactingFormatter):
    """One JSON object per line (``log_format: json``): time, level, logger, message, the request id of
    the update being handled (``bot/metrics.py``) and any traceback; secrets removed as in text."""

    def __init__(self, secrets: list[str]):
        super().__init__("%(message)s", secrets)

    def format(self, record: logging.LogRecord) -> str:
        import json

        from bot.metrics import REQUEST_ID

        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact_learned(redact(json.dumps(entry, ensure_ascii=False), self.secrets + learned_secrets()))


def setup_logging(*secrets: str | None, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    kept = [s for s in secrets if s]
    handler.setFormatter(JsonFormatter(kept) if log_format == "json" else
                         RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", kept))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry the token in URLs
