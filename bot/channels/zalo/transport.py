"""Outbox delivery over Zalo: ``ZaloTransport`` is the transport the outbox sender uses for members whose
messenger is Zalo. It exists apart from the conversation because outbound broadcasts have their own pacing,
their own reaction to 429 (pause every Zalo send, report a transient ``SendError``) and must count each
message against the monthly quota.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Callable

from bot.channels.zalo.client import ZaloClient, ZaloError, backoff
from bot.channels.zalo.quota import ZaloQuota
from bot.channels.zalo.rendering import TEXT_LIMIT, files_note, reply_text
from bot.domain.replies import Reply, split_text
from bot.timeutil import utcnow

log = logging.getLogger(__package__)  # "bot.channels.zalo", the one logger name the channel had before the split
FORBIDDEN, FORBIDDEN_TRIES = 403, 3  # a 403 counts as a refusal from the third try of a message


class ZaloTransport:
    """Outbox delivery over Zalo, paced on its own (``rate`` messages per second for the whole bot)
    and counted against the monthly quota. A 429 pauses Zalo sends with jittered backoff."""

    channel = "zalo"
    paced = True  # the outbox marks a message ``sending`` when its turn has come (``request_may_leave``)

    def __init__(self, client: ZaloClient, *, rate: float = 2.0, quota: ZaloQuota | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.client, self.rate, self.quota, self.clock = client, rate, quota, clock
        self._lock = asyncio.Lock()
        self._next = 0.0
        self._paused_until = 0.0
        self._strikes = 0

    async def _pace(self) -> None:
        async with self._lock:
            wait = max(self._next, self._paused_until) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = time.monotonic() + 1.0 / self.rate

    async def deliver(self, external_id: str, reply: Reply, attachment: tuple[str, bytes] | None) -> None:
        from bot.outbox.sender import EARLIER_TRIES, SKIP_PARTS, SendError, after_parts, request_may_leave, unanswered

        text = reply_text(reply)
        if attachment is not None:
            text = f"{text}\n\n{files_note([attachment])}"
        parts, skip = split_text(text, TEXT_LIMIT), SKIP_PARTS.get()  # skip: parts an earlier try delivered
        for done, part in enumerate(parts[skip:], start=skip):
            await self._pace()
            await request_may_leave()
            try:
                await self.client.send_message(external_id, part)
            except ZaloError as exc:
                if exc.maybe_delivered:  # as on Telegram: never sent twice
                    if self.quota is not None:
                        await asyncio.to_thread(self.quota.add, 1, self.clock())  # most likely it went
                    raise unanswered(f"Zalo: {exc}", done, len(parts)) from None
                if exc.status == 429:
                    wait = backoff(self._strikes, base=1.0, cap=120.0)
                    self._strikes += 1
                    self._paused_until = max(self._paused_until, time.monotonic() + wait)
                    log.warning("Zalo: quota exceeded (429); pausing Zalo sends for %.1fs", wait)
                    raise after_parts(SendError("transient", "Zalo: quota exceeded (429)"), done) from None
                # 403 is documented as "internal error" (and may be a block: Zalo does not say): tried
                # again, then taken as a refusal so that the member's other messenger is tried
                internal = exc.status == FORBIDDEN and EARLIER_TRIES.get() < FORBIDDEN_TRIES - 1
                if exc.transient or exc.status == 401 or internal:
                    raise after_parts(SendError("transient", f"Zalo: {exc}"), done) from None
                raise after_parts(SendError("permanent", f"Zalo: {exc.description}"), done) from None
            self._strikes = 0
            if self.quota is not None:
                await asyncio.to_thread(self.quota.add, 1, self.clock())
