"""Fixtures for the web console: the product's web app with the console on a real port, a chat to ask
``/quantri`` in, and headless Debian Chromium driven by Selenium (kept apart from conftest.py)."""

from __future__ import annotations

import re
import shutil
from zoneinfo import ZoneInfo

import pytest

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
LINK = re.compile(r"https?://\S+/quantri/vao/\S+")


class Server:
    """``bot.web.create_app`` with the console on a free port; ``clock`` may be moved by a test."""

    def __init__(self, db, clock=None, budget=None):
        from bot.console.app import create_console
        from bot.timeutil import utcnow
        from bot.web import ThreadedWebServer, create_app

        self.clock = clock or utcnow
        app = create_app(console=create_console(db, TZ, clock=lambda: self.clock(), bot_name="hoctap_test_bot",
                                                budget=budget))
        self.server = ThreadedWebServer(app, "127.0.0.1:0")

    def start(self) -> "Server":
        self.server.start()
        self.url = self.server.url
        return self

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def console_server(province):
    server = Server(province).start()
    yield server
    server.stop()


class Chat:
    """One person's chat with the bot (the real ChatService, Telegram's traits): link, then ``/quantri``."""

    def __init__(self, db, base_url: str):
        from bot.channels.telegram import TRAITS
        from bot.services.chat import ChatService

        self.db = db
        self.service = ChatService(db, TRAITS, TZ, console_url=base_url)
        self.linked: set[str] = set()

    def say(self, external_id: str, text: str) -> str:
        from bot.timeutil import utcnow

        outcome = self.service.on_text(external_id, text, utcnow())
        return "\n".join(r.text for r in outcome.replies)

    def login_link(self, member_code: str) -> str:
        from sqlalchemy import select

        from bot.services.linking import create_invites
        from bot.storage.models import Member
        from bot.timeutil import utcnow

        chat_id = f"console-{member_code}"
        if member_code not in self.linked:
            with self.db.session() as s:
                member = s.scalar(select(Member).where(Member.code == member_code))
                code = create_invites(s, [member], utcnow())[member.id]
            self.say(chat_id, f"/start {code}")
            self.linked.add(member_code)
        text = self.say(chat_id, "/quantri")
        found = LINK.search(text)
        assert found, text
        return found.group(0)


@pytest.fixture
def chat(province, console_server):
    return Chat(province, console_server.url)


def _chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(params=[(360, 780), (1280, 900)], ids=["phone", "desktop"])
def browser(request, tmp_path):
    """Headless Chromium at a phone's width and at a desktop's; downloads go to ``browser.downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = _chromium_paths()
    if paths is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/test installs them)")
    width, height = request.param
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--lang=vi"):
        options.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    if width < 500:  # a desktop window has a minimum width; a phone's viewport is emulated
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
    driver.downloads = downloads
    driver.width = width
    yield driver
    driver.quit()
