"""The study pages served in a thread of their own on 127.0.0.1 (a free port): for the playground,
tests and benchmarks, beside a chat that runs in its own loop."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import Callable
from zoneinfo import ZoneInfo

from bot.services.web_links import StudyLinks
from bot.storage.db import Database
from bot.timeutil import utcnow
from bot.webapp.site import PagesConfig, create_pages


class BackgroundPages:
    """``start()`` serves ``/hoc`` and sets ``base`` (``http://127.0.0.1:PORT``) and ``links``."""

    def __init__(self, db: Database, secret: bytes, *, tz: ZoneInfo = ZoneInfo("Asia/Ho_Chi_Minh"),
                 telegram_token: str | None = None, clock: Callable[[], datetime] = utcnow,
                 listen: str = "127.0.0.1:0"):
        self.config = PagesConfig(db, secret, "http://127.0.0.1", tz, telegram_token=telegram_token, clock=clock)
        self.listen = listen
        self.base = ""
        self.links: StudyLinks | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="study-pages", daemon=True)
        self._server = None

    def start(self) -> BackgroundPages:
        from bot.web import WebServer, create_app

        self._server = WebServer(create_app(pages=create_pages(self.config)), self.listen)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(timeout=15)
        self.base = f"http://127.0.0.1:{self._server.port}"
        self.config.public_url = self.base
        self.links = StudyLinks(self.base, self.config.secret)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundPages:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
