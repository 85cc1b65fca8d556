"""Database reads for ``/healthz`` and ``/metrics``, kept on a thread of their own with a time limit.

A database that stops answering (a network partition, a hung server) would otherwise leave each probe
waiting in the thread pool that handles members' updates, until those threads are all taken and the
process serves nobody; and the prober would learn nothing. Here at most one read is under way at a time
(callers meanwhile share its answer), on a daemon thread (a read stuck at shutdown does not hold the process
up), and a caller waits for it at most ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable


class DatabaseProbe:
    def __init__(self, read: Callable[[], Any], timeout: float = 5.0, name: str = "db-probe"):
        self.read, self.timeout, self.name = read, timeout, name
        self._running: asyncio.Future | None = None

    async def __call__(self) -> Any:
        """``read()``'s answer; raises TimeoutError when it takes longer than ``timeout``, or what it raised."""
        loop = asyncio.get_running_loop()
        if self._running is None or self._running.done() or self._running.get_loop() is not loop:
            self._running = self._start(loop)
        return await asyncio.wait_for(asyncio.shield(self._running), self.timeout)

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        future = loop.create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even with nobody waiting

        def settle(result: Any, error: BaseException | None) -> None:
            if not future.done():
                future.set_exception(error) if error is not None else future.set_result(result)

        def work() -> None:
            try:
                result, error = self.read(), None
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:
                pass  # the loop has closed: nobody is waiting

        threading.Thread(target=work, name=self.name, daemon=True).start()
        return future
