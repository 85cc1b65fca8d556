"""The Telegram emulator's webhook delivery, as the Bot API describes setWebhook.

Once a webhook is set, each update is POSTed as JSON to it, with ``X-Telegram-Bot-Api-Secret-Token``
when a secret_token was given; at most ``max_connections`` requests are in flight; a response other than
2xx (or none: a refused connection, a timeout) is retried later and noted in getWebhookInfo
(``last_error_date``, ``last_error_message``); after ``max_attempts`` the update is given up. One chat's
updates are delivered one after the other (the next only once the previous got its 2xx), so a bot that
answers after handling sees each chat's updates in order.

Telegram posts to an https URL; here ``targets`` stand for the TLS reverse proxy in front of the bot's
processes: each attempt goes to the next target in turn (round-robin), at the webhook URL's path.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger(__name__)


def chat_of(update: dict[str, Any]) -> Any:
    """The chat an update belongs to (its ordering key)."""
    message = update.get("message")
    if message is None and update.get("callback_query"):
        query = update["callback_query"]
        message = query.get("message") or {"chat": query.get("from")}
    return ((message or {}).get("chat") or {}).get("id")


class WebhookDelivery:
    """A thread that delivers ``state.updates`` while ``state.webhook['url']`` is set."""

    def __init__(self, state, *, targets: list[str] | None = None, retry_delay: float = 0.5,
                 max_attempts: int = 20, timeout: float = 60.0):
        self.state, self.targets = state, list(targets or [])
        self.retry_delay, self.max_attempts, self.timeout = retry_delay, max_attempts, timeout
        self.delivered: list[tuple[int, str]] = []  # (update_id, target) per 2xx
        self.failures: list[tuple[int, str, str]] = []  # (update_id, target, why) per failed attempt
        self._in_flight: set[int] = set()
        self._attempts: dict[int, int] = {}
        self._next_try: dict[int, float] = {}
        self._turn = 0
        self._thread = threading.Thread(target=self._run, name="telegram-webhook", daemon=True)
        self._client = httpx.Client(timeout=timeout)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=10)
        self._client.close()

    # -- scheduling ---------------------------------------------------------------------------
    def _ready(self) -> list[dict[str, Any]]:
        """Updates that may go now: no earlier update of their chat waits, none in flight, not backing off."""
        state, now = self.state, time.monotonic()
        if not state.webhook.get("url"):
            return []
        room = (state.webhook.get("max_connections") or 40) - len(self._in_flight)
        busy, chosen = set(), []
        for update in state.updates:
            chat = chat_of(update)
            if room <= 0:
                break
            if chat in busy:
                continue
            busy.add(chat)
            uid = update["update_id"]
            if uid in self._in_flight or self._next_try.get(uid, 0) > now:
                continue
            chosen.append(update)
            room -= 1
        return chosen

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=100, thread_name_prefix="webhook-post") as pool:
            state = self.state
            while True:
                with state.cond:
                    if state.closed:
                        return
                    if state.allowed_updates:
                        state.updates = [u for u in state.updates if any(k in u for k in state.allowed_updates)]
                    ready = self._ready()
                    if not ready:
                        state.cond.wait(0.05)
                        continue
                    for update in ready:
                        self._in_flight.add(update["update_id"])
                    url, secret = state.webhook["url"], state.webhook.get("secret_token")
                for update in ready:
                    pool.submit(self._post, update, url, secret)

    # -- one attempt ------------------------------------------------------------------------------
    def _target_url(self, url: str) -> str:
        if not self.targets:
            return url
        parts = urlsplit(url)
        target = self.targets[self._turn % len(self.targets)]
        self._turn += 1
        return target.rstrip("/") + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _post(self, update: dict[str, Any], url: str, secret: str | None) -> None:
        uid = update["update_id"]
        with self.state.cond:
            target = self._target_url(url)
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        try:
            response = self._client.post(target, content=json.dumps(update, ensure_ascii=False).encode(),
                                         headers=headers)
            error = None if 200 <= response.status_code < 300 else (
                f"Wrong response from the webhook: {response.status_code} {response.reason_phrase}")
        except httpx.HTTPError as exc:
            error = f"Connection failed: {type(exc).__name__}"
        with self.state.cond:
            self._in_flight.discard(uid)
            if error is None:
                self.delivered.append((uid, target))
                self.state.updates = [u for u in self.state.updates if u["update_id"] != uid]
                self._attempts.pop(uid, None)
                self._next_try.pop(uid, None)
            else:
                self.failures.append((uid, target, error))
                self.state.webhook["last_error_date"] = int(time.time())
                self.state.webhook["last_error_message"] = error
                attempts = self._attempts[uid] = self._attempts.get(uid, 0) + 1
                if attempts >= self.max_attempts:
                    log.warning("Telegram emulator: update %s given up after %d attempts", uid, attempts)
                    self.state.updates = [u for u in self.state.updates if u["update_id"] != uid]
                else:
                    self._next_try[uid] = time.monotonic() + min(self.retry_delay * 2 ** (attempts - 1), 5.0)
            self.state.cond.notify_all()
