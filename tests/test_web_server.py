"""One web server per process: Telegram by webhook (secret header, retried deliveries), /healthz, /metrics,
JSON logs with a request id, and the ``web`` settings."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from bench.webhook_fleet import free_port
from tests.conftest import a_long_write
from bot.config import ConfigError, SchedulerSettings, Settings, TelegramSettings, WebSettings, load_settings

SECRET = "webhook-Secret_123"
PUBLIC = "https://bot.example.vn"


def wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {port}")


@contextmanager
def serving(settings: Settings, db):
    """``hoctap run``'s serve() in a thread of its own until the block ends."""
    from bot.app import serve

    loop, stop = asyncio.new_event_loop(), asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve(settings, db, stop)), daemon=True)
    thread.start()
    try:
        wait_listening(int(settings.web_server.listen.rsplit(":", 1)[1]))
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
    assert not thread.is_alive()


def webhook_settings(db, emulator, port: int) -> Settings:
    return Settings(database_url=db.url,
                    telegram=TelegramSettings(token=emulator.token, api_base_url=emulator.base_url, mode="webhook",
                                              webhook_secret=SECRET),
                    web=WebSettings(listen=f"127.0.0.1:{port}", public_url=PUBLIC),
                    scheduler=SchedulerSettings(tick_seconds=3600))


def link(emulator, invite, code: str, user_id: int):
    user = emulator.user(user_id)
    user.send_text(f"/start {invite(code)}")
    user.wait_for(lambda u: "Liên kết thành công" in (u.last() or {}).get("text", ""), timeout=15)
    return user


def test_telegram_by_webhook_serves_a_member_on_the_one_web_server_with_health_and_metrics(province, invite):
    from bot.emulators.telegram import TelegramEmulator

    port = free_port()
    with TelegramEmulator(webhook_targets=[f"http://127.0.0.1:{port}"]) as emulator:
        with serving(webhook_settings(province, emulator, port), province):
            member = link(emulator, invite, "DV010", 7301)
            member.send_text("/hoc")
            # the scheduler's announcement of the round may come after the reply: look at the newest two
            member.wait_for(lambda u: any("Hạn" in m.get("text", "") for m in u.recent(2)), timeout=15)
            assert "64-KH/TU" in next(m for m in reversed(member.messages) if "Hạn" in m.get("text", ""))["text"]
            health = httpx.get(f"http://127.0.0.1:{port}/healthz")
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        [hook] = emulator.calls("setWebhook")
        assert hook["url"] == f"{PUBLIC}/telegram/webhook" and hook["secret_token"] == SECRET
        assert hook["allowed_updates"] == ["message", "callback_query"]
        assert not emulator.calls("getUpdates")  # no polling beside the webhook
        assert emulator.updates_pending() == 0
    assert health.status_code == 200 and health.text == "ok"
    handled = [line for line in metrics.splitlines() if line.startswith('hoctap_updates_total{channel="telegram"}')]
    assert handled and float(handled[0].split()[-1]) >= 2  # /start and /hoc
    assert 'hoctap_update_seconds_bucket{channel="telegram"' in metrics
    assert "hoctap_scheduler_leader 1.0" in metrics.splitlines()  # the only process leads
    assert "hoctap_db_connections_in_use" in metrics


def test_metrics_on_a_listener_of_their_own_are_not_served_where_the_proxy_forwards(province, invite):
    """``web.metrics_listen``: Prometheus scrapes a private port; the public listener knows no /metrics, whatever
    the proxy in front lets through."""
    from dataclasses import replace

    from bot.emulators.telegram import TelegramEmulator

    port, private = free_port(), free_port()
    with TelegramEmulator(webhook_targets=[f"http://127.0.0.1:{port}"]) as emulator:
        settings = webhook_settings(province, emulator, port)
        settings = replace(settings, web=replace(settings.web, metrics_listen=f"127.0.0.1:{private}"))
        with serving(settings, province):
            link(emulator, invite, "DV010", 7305)
            public = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            scraped = httpx.get(f"http://127.0.0.1:{private}/metrics", timeout=10)
            health = httpx.get(f"http://127.0.0.1:{private}/healthz", timeout=10)
    assert public.status_code == 404
    assert scraped.status_code == 200 and 'hoctap_updates_total{channel="telegram"}' in scraped.text
    assert health.status_code == 200


def test_a_webhook_delivery_that_fails_is_retried_and_handled_once(province, invite):
    """Every other attempt goes to a backend that is down (as behind a proxy with a dead process)."""
    from bot.emulators.telegram import TelegramEmulator

    port, dead = free_port(), free_port()
    with TelegramEmulator(webhook_targets=[f"http://127.0.0.1:{dead}", f"http://127.0.0.1:{port}"],
                          webhook_retry_delay=0.05) as emulator:
        with serving(webhook_settings(province, emulator, port), province):
            member = link(emulator, invite, "DV010", 7302)
            for _ in range(3):
                member.mark()
                member.send_text("/ketqua")
                member.wait_for(lambda u: "Kết quả" in u.last()["text"] or "chưa" in u.last()["text"], timeout=15)
            time.sleep(0.5)  # a second handling would show now
            info = emulator.webhook_info()
        assert emulator.webhook.failures and all("Connection failed" in why for _, _, why in emulator.webhook.failures)
        assert info["last_error_message"].startswith("Connection failed") and info["pending_update_count"] == 0
        texts = [m["text"] for m in member.messages if not m["text"].startswith("📢")]  # not the round's announcement
        assert len([t for t in texts if "Liên kết thành công" in t]) == 1
        assert len(texts) == 4, (texts, emulator.webhook.delivered, emulator.webhook.failures)  # linked, one answer per /ketqua


def test_the_telegram_webhook_refuses_what_telegram_would_not_send(province):
    """A wrong or missing secret, an oversized, malformed or non-update body: refused, nothing handled."""
    from bot.emulators.telegram import TelegramEmulator

    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/webhook"
    update = {"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"},
                                          "from": {"id": 5, "is_bot": False, "first_name": "X"}, "text": "/hoc"}}
    with TelegramEmulator() as emulator:
        with serving(webhook_settings(province, emulator, port), province):
            emulator.reset_log()
            assert httpx.post(url, json=update).status_code == 403
            assert httpx.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}).status_code == 403
            ok = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            assert httpx.post(url, content=b"x" * 70_000, headers=ok).status_code == 413
            assert httpx.post(url, content=b"{not json", headers=ok).status_code == 400
            assert httpx.post(url, content=b"[" * 100 + b"]" * 100, headers=ok).status_code == 400
            assert httpx.post(url, json={"update_id": "1"}, headers=ok).status_code == 400
            assert httpx.post(url, json=[1, 2], headers=ok).status_code == 400
            assert not emulator.calls("sendMessage")  # nothing reached the bot
            assert httpx.post(url, json=update, headers=ok).status_code == 200
            assert emulator.calls("sendMessage")  # the real update was answered before the 200


def test_a_telegram_text_with_a_broken_emoji_lone_surrogate_is_answered_never_a_500(province):
    """JSON allows "\\ud800", which no encoder takes: read as U+FFFD, so Telegram is not made to deliver it again."""
    import json

    from bot.emulators.telegram import TelegramEmulator

    port = free_port()
    update = {"update_id": 2, "message": {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"},
                                          "from": {"id": 5, "is_bot": False, "first_name": "X"}, "text": "\ud800 /hoc"}}
    with TelegramEmulator() as emulator:
        with serving(webhook_settings(province, emulator, port), province):
            emulator.reset_log()
            deadline = time.monotonic() + 10
            while True:  # 503 while the process is still starting
                answer = httpx.post(f"http://127.0.0.1:{port}/telegram/webhook", content=json.dumps(update).encode(),
                                    headers={"X-Telegram-Bot-Api-Secret-Token": SECRET,
                                             "Content-Type": "application/json"}, timeout=10)
                if answer.status_code != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert answer.status_code == 200 and emulator.calls("sendMessage")


def asgi_requests(app, *requests: tuple[str, str, dict]) -> list[httpx.Response]:
    """The app's answers to (method, path, httpx keyword arguments) requests, in order, in process (no server):
    what Starlette's TestClient did, without it."""
    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.request(method, path, **kwargs) for method, path, kwargs in requests]

    return asyncio.run(send_all())


def test_healthz_is_503_when_the_database_does_not_answer(tmp_path):
    from bot.storage.db import Database
    from bot.web import create_app

    gone = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    [response] = asgi_requests(create_app(db=gone), ("GET", "/healthz", {}))
    assert response.status_code == 503 and response.text == "database unavailable"


def test_metrics_count_the_outbox_by_channel_and_status_from_the_database(province):
    from starlette.applications import Starlette

    from bot.domain.replies import Reply
    from bot.metrics import metrics_route
    from bot.outbox import queue
    from bot.storage.models import Member, OutboxMessage
    from bot.timeutil import utcnow

    now = utcnow()
    with province.session() as s:
        ids = [m.id for m in s.query(Member).limit(3)]
        for i, mid in enumerate(ids):
            queue.enqueue(s, dedupe_key=f"t:{i}", purpose=queue.REPLY, member_id=mid, reply=Reply("x"), now=now,
                          not_before=now - timedelta(seconds=90))
        s.flush()
        row = s.query(OutboxMessage).first()
        row.status, row.channel = "uncertain", "zalo"
    text = asgi_requests(Starlette(routes=[metrics_route(province)]), ("GET", "/metrics", {}))[0].text
    assert 'hoctap_outbox_messages{channel="zalo",status="uncertain"} 1.0' in text
    assert 'hoctap_outbox_messages{channel="",status="pending"} 2.0' in text
    assert 'hoctap_outbox_messages{channel="zalo",status="failed"} 0.0' in text  # zero, not missing
    oldest = next(line for line in text.splitlines() if line.startswith("hoctap_outbox_oldest_due_seconds "))
    assert float(oldest.split()[1]) >= 90  # the two pending rows have waited since they were due


def test_json_logs_carry_the_request_id_of_the_update_and_no_secret(capsys):
    from bot.logs import setup_logging
    from bot.metrics import handling

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("s3cret-token", log_format="json")
    try:
        with handling("telegram") as request_id:
            logging.getLogger("bot.test").info("handling with s3cret-token inside")
        logging.getLogger("bot.test").info("outside any update")
    finally:  # no handler left on this test's captured stderr, which closes with the test
        root.handlers[:] = handlers
        root.setLevel(level)
    inside, outside = [json.loads(line) for line in capsys.readouterr().err.splitlines()[-2:]]
    assert inside["request_id"] == request_id and inside["level"] == "INFO" and inside["logger"] == "bot.test"
    assert inside["message"] == "handling with <secret> inside"
    assert "request_id" not in outside


def test_the_web_section_serves_every_webhook_and_old_listen_keys_still_work(tmp_path):
    config = tmp_path / "config.yaml"

    def load(text: str) -> Settings:
        config.write_text(text, encoding="utf-8")
        return load_settings(config, {})

    s = load("web:\n  listen: 0.0.0.0:9000\n  public_url: https://bot.example.vn\nlog_format: json\n")
    assert s.web_server == WebSettings("0.0.0.0:9000", "https://bot.example.vn") and s.log_format == "json"
    old = load("zalo:\n  listen: 127.0.0.1:8088\n  public_url: https://z.example.vn\n")
    assert old.web_server == WebSettings("127.0.0.1:8088", "https://z.example.vn")
    for text, message in [
        ("zalo:\n  listen: 127.0.0.1:8088\nzalo_oa:\n  listen: 127.0.0.1:8089\n",
         "one web server now serves every webhook; write web: {listen: HOST:PORT, public_url: https://...} instead"),
        ("web:\n  listen: 127.0.0.1:9000\nzalo_oa:\n  listen: 127.0.0.1:8089\n",
         "zalo_oa.listen: the web section's listen now serves every webhook; remove zalo_oa.listen"),
        ("telegram:\n  mode: webhook\n", "web.public_url: telegram.mode webhook needs the server's public https URL"),
        ("telegram:\n  mode: hook\n", "telegram.mode: expected polling or webhook, got 'hook'"),
        ("web:\n  port: 1\n", "web.port: unknown setting (known: listen, metrics_listen, public_url, secret)"),
        ("log_format: xml\n", "log_format: expected text or json, got 'xml'"),
    ]:
        with pytest.raises(ConfigError) as info:
            load(text)
        assert str(info.value).endswith(message), info.value


def test_webhook_mode_without_a_secret_is_refused_at_start(workdir, capsys):
    from bot.cli import main

    (workdir / "config.yaml").write_text(
        "telegram:\n  token: ${TELEGRAM_BOT_TOKEN}\n  mode: webhook\nweb:\n  public_url: https://bot.example.vn\n",
        encoding="utf-8")
    import os

    os.environ["TELEGRAM_BOT_TOKEN"] = "1:abc"
    try:
        assert main(["--config", "config.yaml", "run"]) == 2
    finally:
        del os.environ["TELEGRAM_BOT_TOKEN"]
    assert "TELEGRAM_WEBHOOK_SECRET is not set" in capsys.readouterr().err


def test_health_and_metrics_answer_at_once_while_a_long_write_holds_the_database(province):
    """A scrape or a health check during a long write (a roster import, a province's announcement) must
    not wait for it: Prometheus and the proxy give up after a few seconds and call the process dead."""
    from bot.metrics import metrics_route
    from bot.web import create_app

    with a_long_write(province):
        started = time.perf_counter()
        health, metrics = asgi_requests(create_app(routes=[metrics_route(province)], db=province),
                                        ("GET", "/healthz", {}), ("GET", "/metrics", {}))
        took = time.perf_counter() - started
    assert health.status_code == 200 and metrics.status_code == 200
    assert "hoctap_outbox_messages" in metrics.text
    assert took < 5, f"health and metrics waited {took:.1f}s for the writer"


def test_a_process_still_starting_is_not_healthy_and_asks_early_webhook_events_to_come_again(province):
    """The port opens before the channels are up (Telegram's setWebhook is slow here): the proxy's health check
    keeps traffic away (503) and an event for a webhook not mounted yet gets 503 (delivered again), not 404."""
    from bot.emulators.telegram import TelegramEmulator

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with TelegramEmulator(webhook_targets=[base]) as emulator:
        emulator.hold(None)  # Bot API calls outside any chat (getMe, setWebhook) hang until released
        with serving(webhook_settings(province, emulator, port), province):
            health = httpx.get(f"{base}/healthz")
            early = httpx.post(f"{base}/zalo-oa/webhook", json={"event_name": "follow"})
            emulator.release(None)
            deadline = time.monotonic() + 15
            while httpx.get(f"{base}/healthz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            ready = httpx.get(f"{base}/healthz")
            unknown = httpx.post(f"{base}/zalo-oa/webhook", json={"event_name": "follow"})
    assert (health.status_code, health.text, health.headers.get("retry-after")) == (503, "starting", "1")
    assert early.status_code == 503
    assert (ready.status_code, ready.text) == (200, "ok")
    assert unknown.status_code == 404  # no OA here: once started, an unknown path is not found


def test_an_update_arriving_while_the_process_is_still_starting_is_left_for_telegram_to_deliver_again(caplog):
    """Behind a proxy a restarted process takes requests before its bot is ready: the update gets a 503,
    which Telegram retries (to this or another process), never a 500 with a traceback."""
    from starlette.applications import Starlette

    from bot.channels.telegram_webhook import webhook_route
    from bot.emulators.telegram import TelegramEmulator
    from telegram.ext import ApplicationBuilder

    update = {"update_id": 7, "message": {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"},
                                          "from": {"id": 5, "is_bot": False, "first_name": "X"}, "text": "/hoc"}}
    with TelegramEmulator() as emulator:
        app = ApplicationBuilder().token(emulator.token).base_url(emulator.base_url).updater(None).build()
        with caplog.at_level(logging.WARNING):
            [response] = asgi_requests(Starlette(routes=[webhook_route(app, SECRET)]), (
                "POST", "/telegram/webhook", {"json": update, "headers": {"X-Telegram-Bot-Api-Secret-Token": SECRET}}))
    assert response.status_code == 503
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_an_update_whose_handling_failed_is_answered_500_and_handled_when_telegram_delivers_it_again(
        province, invite, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from bot.emulators.telegram import TelegramEmulator
    from bot.services.chat import ChatService

    port = free_port()
    with TelegramEmulator(webhook_targets=[f"http://127.0.0.1:{port}"], webhook_retry_delay=0.05) as emulator:
        with serving(webhook_settings(province, emulator, port), province):
            member = link(emulator, invite, "DV010", 7303)
            real, blips = ChatService.on_text, []

            def database_down_once(self, *args, **kwargs):
                if not blips:
                    blips.append(1)
                    raise OperationalError("SELECT 1", {}, Exception("connection refused"))
                return real(self, *args, **kwargs)

            monkeypatch.setattr(ChatService, "on_text", database_down_once)
            member.mark()
            member.send_text("/hoc")
            # the scheduler's announcement of the round may come after the reply: look at the newest two
            member.wait_for(lambda u: any("Hạn" in m.get("text", "") for m in u.recent(2)), timeout=15)
            assert "64-KH/TU" in next(m for m in reversed(member.messages) if "Hạn" in m.get("text", ""))["text"]
            time.sleep(0.5)  # the 200 follows the reply
            info = emulator.webhook_info()
        assert blips == [1] and any("500" in why for _, _, why in emulator.webhook.failures)
        assert info["pending_update_count"] == 0


def test_a_database_that_hangs_gets_a_503_in_seconds_and_metrics_still_show_the_process(tmp_path):
    """A PostgreSQL server that takes the connection and never answers (a partition): health checks and
    scrapes, however many, answer within their time limit; the process's own figures are still scraped."""
    from bot.metrics import metrics_route
    from bot.storage.db import Database
    from bot.web import HEALTH_TIMEOUT, ThreadedWebServer, create_app

    silent = socket.socket()  # accepts (the kernel's backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    hung = Database(f"postgresql+psycopg://hoctap@127.0.0.1:{silent.getsockname()[1]}/hoctap")
    server = ThreadedWebServer(create_app(db=hung, routes=[metrics_route(hung)]), "127.0.0.1:0").start()

    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*[client.get("/healthz") for _ in range(20)], client.get("/metrics"))

    try:
        started = time.monotonic()
        *checks, scrape = asyncio.run(many())
        took = time.monotonic() - started
    finally:
        server.stop()
        hung.dispose()
        silent.close()
    assert [r.status_code for r in checks] == [503] * 20 and took < HEALTH_TIMEOUT + 3
    assert scrape.status_code == 200 and "hoctap_database_up 0.0" in scrape.text
    assert "hoctap_updates_total" in scrape.text or "hoctap_update_seconds" in scrape.text


def test_an_update_that_fails_the_same_way_every_time_is_taken_not_delivered_again_and_again(province, invite,
                                                                                               caplog):
    """A failure that is no database blip (here a reply Telegram refuses: the chat is one it does not know) would
    fail again on every redelivery: it is logged and answered as taken."""
    from bot.emulators.telegram import TelegramEmulator

    port = free_port()
    poison = {"update_id": 99, "message": {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"},
                                           "from": {"id": 5, "is_bot": False, "first_name": "Lạ"}, "text": "/hoc"}}
    with TelegramEmulator(webhook_targets=[f"http://127.0.0.1:{port}"]) as emulator:
        with serving(webhook_settings(province, emulator, port), province):
            link(emulator, invite, "DV010", 7304)  # the bot is up
            with caplog.at_level(logging.ERROR):
                response = httpx.post(f"http://127.0.0.1:{port}/telegram/webhook", json=poison, timeout=10,
                                      headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
            forged = httpx.post(f"http://127.0.0.1:{port}/telegram/webhook", json=poison, timeout=10,
                                headers={"X-Telegram-Bot-Api-Secret-Token": "not-the-secret"})
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert response.status_code == 200 and forged.status_code == 403
    assert any("update 99 failed" in r.getMessage() for r in caplog.records)  # the operator still learns of it
    figures = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines() if line[:1] != "#"}
    assert figures['hoctap_update_failures_total{channel="telegram"}'] >= 1
    assert figures['hoctap_webhook_requests_total{channel="telegram",status="403"}'] >= 1


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def members_server(db, **surfaces):
    """The one web server with the study pages and the console (and ``surfaces``), on a free port."""
    from bot.console.app import create_console
    from bot.web import ThreadedWebServer, create_app
    from bot.webapp.site import PagesConfig, create_pages
    from tests.conftest import WEB_SECRET

    app = create_app(pages=create_pages(PagesConfig(db, WEB_SECRET, "http://127.0.0.1")),
                     console=create_console(db, ZoneInfo("Asia/Ho_Chi_Minh")), **surfaces)
    return ThreadedWebServer(app, "127.0.0.1:0").start()


def test_a_phone_that_drops_its_connection_mid_post_leaves_no_error_in_the_log(province):
    """A member on a mobile network sends an answer, the Mini App login or a console form and loses the
    connection halfway through the body: nothing failed on our side, so no ERROR and no traceback is logged."""
    from bot.channels.zalo_oa.webhook import webhook_endpoint

    async def take(event):  # never reached: no event arrives whole
        raise AssertionError(event)

    server = members_server(province, zalo_oa=webhook_endpoint(take, "app", "oa-secret"))
    seen = _Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(seen)
    try:
        for path in ("/hoc/tg", "/hoc/dot/1/lambai", "/hoc/bai/1", "/quantri/vao/x", "/zalo-oa/webhook"):
            with socket.create_connection(("127.0.0.1", server.web.port), timeout=5) as sock:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded"
                             "\r\nContent-Length: 100\r\n\r\nabc".encode())
            time.sleep(0.3)  # the server notices the closed connection
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # still serving
    finally:
        for logger in loggers:
            logger.removeHandler(seen)
        server.stop()
    assert not [r for r in seen.records if r.levelno >= logging.ERROR or r.exc_info], \
        [(r.name, r.getMessage()) for r in seen.records]


def test_a_missing_or_extra_trailing_slash_redirects_on_the_same_site_whatever_host_the_request_names(province):
    """``/quantri`` → ``/quantri/``, ``/hoc/ketqua/`` → ``/hoc/ketqua``: the Location is a path on the site the
    browser asked, never a host taken from the request's Host header (a poisoned cache would send members away)."""
    server = members_server(province)
    try:
        with httpx.Client(base_url=server.url, timeout=10, headers={"Host": "evil.example"}) as forged:
            moved = {path: forged.get(path) for path in ("/quantri", "/hoc", "/hoc/ketqua/", "/quantri/nhatky/?a=1")}
        followed = httpx.get(f"{server.url}/quantri", follow_redirects=True, timeout=10)
        gone = httpx.get(f"{server.url}/khong-co/", timeout=10)
    finally:
        server.stop()
    assert {path: (r.status_code, r.headers["location"]) for path, r in moved.items()} == {
        "/quantri": (307, "/quantri/"), "/hoc": (307, "/hoc/"), "/hoc/ketqua/": (307, "/hoc/ketqua"),
        "/quantri/nhatky/?a=1": (307, "/quantri/nhatky?a=1")}
    assert followed.status_code == 401 and str(followed.url) == f"{server.url}/quantri/"
    assert gone.status_code == 404


def test_a_browser_off_the_members_pages_reads_vietnamese_not_found_and_wrong_method(province):
    """Someone types the bare address, or opens a webhook's address, in a browser: a short Vietnamese line."""
    server = members_server(province)
    try:
        home, webhook = httpx.get(f"{server.url}/", timeout=10), httpx.get(f"{server.url}/zalo/webhook", timeout=10)
    finally:
        server.stop()
    assert (home.status_code, home.text) == (404, "Không tìm thấy trang này.")
    assert (webhook.status_code, webhook.text) == (405, "Địa chỉ này không mở được theo cách này.")
    assert webhook.headers["allow"] == "POST" and "charset=utf-8" in webhook.headers["content-type"]
