"""One chat's updates in order, chats in parallel: what every webhook-fed channel needs.

A webhook answers at once and hands the update over; the channel then handles each chat's (or
user's) updates one at a time in arrival order, and different chats concurrently. A lock exists
only while a chat has work queued, so memory follows traffic, not the number of chats ever seen.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable


class InOrderPerKey:
    """Runs each key's jobs one at a time, in the order they were submitted."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}
        self.tasks: set[asyncio.Task] = set()

    def submit(self, key: str, job: Callable[[], Awaitable[None]]) -> asyncio.Task:
        """Start ``job()`` after the jobs already queued for ``key``; returns at once."""
        task = asyncio.create_task(self._serial(key, job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for the jobs being run (at shutdown)."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)

    async def _serial(self, key: str, job: Callable[[], Awaitable[None]]) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                await job()
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:  # nobody else queued for this key: forget the lock
                del self._waiting[key]
                self._locks.pop(key, None)
