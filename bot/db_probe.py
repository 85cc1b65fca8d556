"""Database reads for ``/healthz`` and ``/metrics``, kept on one thread of their own with a time limit.

A database that stops answering (a network partition, a hung server) would otherwise leave each probe
waiting in the thread pool that handles members' updates, until those threads are all taken and the
process serves nobody; and the prober would learn nothing. Here at most one read is under way at a time
(callers meanwhile share its answer), and a caller waits for it at most ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class DatabaseProbe:
    def __init__(self, read: Callable[[], Any], timeout: float = 5.0, name: str = "db-probe"):
        self.read, self.timeout = read, timeout
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._running: asyncio.Future | None = None

    async def __call__(self) -> Any:
        """``read()``'s answer; raises TimeoutError when it takes longer than ``timeout``, or what it raised."""
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().run_in_executor(self._pool, self.read)
        return await asyncio.wait_for(asyncio.shield(self._running), self.timeout)
