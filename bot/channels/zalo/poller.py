"""Long polling: ``ZaloPoller`` deletes any webhook, then asks ``getUpdates`` for one update at a time and
hands each to a ``take`` callback (keep it, then handle it), backing off on failures. It exists because polling is the default way a
process receives Zalo updates (the webhook alternative is served by ``bot/web.py``), and its loop, pacing and
error handling are independent of what is done with an update.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from bot.channels.zalo.client import ZaloClient, ZaloError, backoff
from bot.channels.zalo.updates import well_formed

log = logging.getLogger(__package__)  # "bot.channels.zalo", the one logger name the channel had before the split


class ZaloPoller:
    """``deleteWebhook`` first; then one update per ``getUpdates``; 408 means nothing new. At most one
    call per ``min_interval`` seconds (the platform asks for about 1 s) whatever the answer was: an
    update, nothing, a quick 408 from a proxy, or an error (then longer, with backoff)."""

    def __init__(self, client: ZaloClient, take: Callable[[dict], Awaitable[None]], *, timeout: int = 30,
                 min_interval: float = 1.0):
        self.client, self.take = client, take
        self.timeout, self.min_interval = timeout, min_interval
        self.calls = self.received = 0

    async def run(self) -> None:
        failures = 0
        await self._delete_webhook()
        next_call = time.monotonic()
        while True:
            wait = next_call - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            next_call = time.monotonic() + self.min_interval
            self.calls += 1
            try:
                update = await self.client.get_updates(self.timeout)
                failures = 0
            except ZaloError as exc:
                if exc.status == 408:
                    failures = 0
                    continue  # the normal "nothing new"
                if exc.status == 400 and "webhook" in exc.description.lower():
                    log.warning("Zalo: a webhook is set; deleting it to poll (%s)", exc.description)
                    await self._delete_webhook()
                    continue
                wait = max(backoff(failures, base=1.0, cap=60.0), self.min_interval)
                failures += 1
                level = logging.ERROR if exc.status == 401 else logging.WARNING
                log.log(level, "Zalo: getUpdates failed (%s); again in %.1fs", exc, wait)
                next_call = time.monotonic() + wait
                continue
            for item in update if isinstance(update, list) else [update]:
                if well_formed(item):
                    self.received += 1
                    await self.take(item)
                elif item:
                    log.info("Zalo: getUpdates gave something that is not a well-formed update; ignored")

    async def _delete_webhook(self) -> None:
        for attempt in range(10):
            try:
                await self.client.delete_webhook()
                return
            except ZaloError as exc:
                wait = backoff(attempt, base=1.0, cap=30.0)
                log.warning("Zalo: deleteWebhook failed (%s); again in %.1fs", exc, wait)
                await asyncio.sleep(wait)
