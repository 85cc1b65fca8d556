"""The OA's authorisation: the PKCE permission URL and callback from the command line, refreshing the
single-use refresh token once under a database lock (threads with their own engines, as processes would
be, on SQLite and PostgreSQL), -216 → refresh once and retry, and a lost authorisation reported loudly."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from bot.channels.zalo_oa import AuthorisationLost, TokenStore
from bot.channels.zalo_oa.tokens import pkce_challenge
from bot.outbox import queue
from bot.storage.db import Database
from bot.storage.models import OutboxMessage, ZaloOaAuth
from bot.timeutil import utcnow
from tests.messengers import say
from tests.test_zalo_oa_channel import OAProcess, authorize, oa_link, oa_settings


def tokens_in_db(db) -> tuple[str, str]:
    with db.session() as s:
        row = s.get(ZaloOaAuth, "oa")
        return row.access_token, row.refresh_token


def test_authorize_prints_a_pkce_url_and_callback_stores_the_tokens(cli, workdir, oa_emulator, monkeypatch, db):
    (workdir / "config.yaml").write_text(
        f"zalo_oa:\n  app_id: '{oa_emulator.app_id}'\n  public_url: https://bot.example.vn\n"
        f"  oauth_url: {oa_emulator.base_url}\n  api_base_url: {oa_emulator.base_url}\n", encoding="utf-8")
    monkeypatch.setenv("ZALO_OA_APP_SECRET", oa_emulator.app_secret)
    monkeypatch.setenv("ZALO_OA_SECRET_KEY", oa_emulator.oa_secret)
    assert "not authorised" in cli("zalo-oa", "status").out
    printed = cli("zalo-oa", "authorize")
    url = next(line for line in printed.lines if "/v4/oa/permission?" in line)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["redirect_uri"] == "https://bot.example.vn/zalo-oa/callback"
    with db.session() as s:
        row = s.get(ZaloOaAuth, "oa")
        assert pkce_challenge(row.code_verifier) == query["code_challenge"] and row.state == query["state"]
        assert row.code_verifier not in printed.out
    callback = oa_emulator.approve(url)
    forged = callback.replace(f"state={query['state']}", "state=forged")
    assert "does not match" in cli("zalo-oa", "callback", forged).err
    done = cli("zalo-oa", "callback", callback)
    assert done.code == 0 and "Zalo OA authorised" in done.out
    access, refresh = tokens_in_db(db)
    assert access and refresh and access not in done.out and refresh not in done.out
    assert "authorised; access token valid for 25.0 h" in cli("zalo-oa", "status").out
    assert "older than 10 minutes" not in cli("zalo-oa", "callback", callback).err  # the code is single-use
    assert tokens_in_db(db) == (access, refresh)


def test_concurrent_refreshes_spend_the_single_use_refresh_token_once(db_url, db, oa_emulator):
    settings = oa_settings(oa_emulator, 1)
    authorize(db, oa_emulator, settings)
    first, _ = tokens_in_db(db)
    oa_emulator.travel(25 * 3600)  # the access token has expired everywhere
    later = lambda: utcnow() + timedelta(hours=25)  # noqa: E731
    results, errors = [], []
    start = threading.Barrier(4)

    def process():  # its own engine and connections, as another process would have
        own = Database(db_url)
        try:
            store = TokenStore(own, settings.app_id, settings.app_secret, settings.oauth_url, clock=later)
            start.wait()
            results.append(store.current())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=process) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert oa_emulator.refreshes == 1 and oa_emulator.refresh_reuses == 0
    assert len(set(results)) == 1 and results[0] != first and results[0] == tokens_in_db(db)[0]


def test_an_expired_token_is_refreshed_once_and_the_reply_still_arrives(province, oa_emulator, oa_invite):
    process = OAProcess(province, oa_emulator).start()
    try:
        user = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
        oa_emulator.expire_access_tokens()  # revoked or expired early: the API answers -216
        assert "64-KH/TU" in say(user, "/hoc", "64-KH/TU")
        assert oa_emulator.refreshes == 1
    finally:
        process.stop()


def test_a_lost_authorisation_alerts_the_admins_and_is_not_retried(province, oa_emulator, oa_invite, caplog):
    from bot.emulators.zalo_oa import ERR_OAUTH_REFRESH

    from bot.storage.models import ChatAccount, Member
    from bot.timeutil import utcnow

    with province.session() as s:  # one admin on Telegram; another, linked nowhere, cannot be told
        admins = s.scalars(select(Member).where(Member.role == "admin").order_by(Member.id)).all()
        s.add(ChatAccount(channel="telegram", external_id="77001", member_id=admins[0].id, linked_at=utcnow()))
        s.scalar(select(Member).where(Member.code == "CB001")).role = "admin"
    process = OAProcess(province, oa_emulator).start()
    try:
        user = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
        access, refresh = tokens_in_db(province)
        oa_emulator.expire_access_tokens()
        oa_emulator.inject_error("oauth_token", ERR_OAUTH_REFRESH, "Invalid refresh token", times=10)
        caplog.set_level(logging.INFO)
        for text in ("/hoc", "/ketqua", "/trogiup"):
            user.send_text(text)
        process.settle(2 + 3)  # follow and code, then the three texts
        calls = len(oa_emulator.calls("oauth_token"))
        assert calls == 2  # the code, then one refused refresh; nothing after that
        assert any(r.levelno == logging.ERROR and "authorisation LOST" in r.getMessage() for r in caplog.records)
        assert access not in caplog.text and refresh not in caplog.text
        with province.session() as s:
            alerts = list(s.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "alert")))
            texts = [p["text"] for p in queue.payloads(s, [a.id for a in alerts]).values()]
        assert len(alerts) == 1 and "cấp quyền lại" in texts[0] and alerts[0].member_id == admins[0].id
        assert "(1 admin(s) alerted on their other messengers)" in caplog.text
        with pytest.raises(AuthorisationLost):
            process.runtime.tokens.current()
        # the admin authorises again: the OA works again
        oa_emulator.clear_errors()
        authorize(province, oa_emulator, process.settings)
        assert "64-KH/TU" in say(user, "/hoc", "64-KH/TU")
    finally:
        process.stop()


def test_a_throttled_token_refresh_keeps_the_authorisation_and_the_token_still_valid(db, oa_emulator):
    settings = oa_settings(oa_emulator, 1)
    authorize(db, oa_emulator, settings)
    access, refresh = tokens_in_db(db)
    nearly_expired = lambda: utcnow() + timedelta(hours=24, minutes=40)  # noqa: E731 - inside the refresh margin
    store = TokenStore(db, settings.app_id, settings.app_secret, settings.oauth_url, clock=nearly_expired)
    oa_emulator.inject_error("oauth_token", -32, "Too many requests")
    assert store.current() == access  # the refresh waits; the current token still works until it expires
    with db.session() as s:
        row = s.get(ZaloOaAuth, "oa")
        assert row.lost_at is None and (row.access_token, row.refresh_token) == (access, refresh)
    oa_emulator.inject_error("oauth_token", 429, "Too many requests")  # an HTTP 429 as well
    assert store.current() == access
    fresh = store.current()  # the endpoint answers again: the unspent refresh token gives a new pair
    assert fresh != access and tokens_in_db(db)[0] == fresh and oa_emulator.refreshes == 1


def test_a_refused_token_is_not_reused_when_its_refresh_meets_a_busy_endpoint_and_the_message_waits(
        province, oa_emulator, oa_invite):
    from bot.outbox.sender import OutboxSender
    from bot.domain.replies import Reply
    from bot.storage.models import Member

    process = OAProcess(province, oa_emulator).start()
    try:
        user = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
        oa_emulator.expire_access_tokens()  # Zalo refuses the stored token (-216) before its time
        oa_emulator.inject_error("oauth_token", 503)  # and its token endpoint is busy for one call
        with province.session() as s:
            member = s.scalar(select(Member.id).where(Member.code == "DV003"))
            queue.enqueue(s, dedupe_key="busy:1", purpose="remind", member_id=member, reply=Reply("🔔 Nhắc nhở"),
                          now=utcnow())
        sender = OutboxSender(province, {"zalo_oa": process.runtime.transport}, per_chat_interval=0)
        first = process.running.run(sender.run(until_idle=True))
        with province.session() as s:
            row = s.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == "busy:1"))
            assert (row.status, first.retried) == ("pending", 1)  # tried again later, not failed
            row.not_before = utcnow()
        again = OutboxSender(province, {"zalo_oa": process.runtime.transport}, per_chat_interval=0)
        assert process.running.run(again.run(until_idle=True)).sent == 1
        assert "🔔 Nhắc nhở" in user.messages[-1]["text"] and oa_emulator.refreshes == 1
    finally:
        process.stop()


def test_the_callback_page_refuses_what_it_did_not_ask_for_and_waits_out_a_busy_zalo(province, oa_emulator):
    """Anyone can open ``/zalo-oa/callback``: without the state of the authorisation last started nothing
    reaches Zalo's token endpoint and nothing is stored; a busy endpoint leaves the code to a reload."""
    import httpx

    bot = OAProcess(province, oa_emulator).start()
    base = f"http://127.0.0.1:{bot.port}/zalo-oa/callback"
    try:
        before = tokens_in_db(province)
        oa_emulator.reset_log()
        bare = httpx.get(base, timeout=10)
        assert bare.status_code == 400 and "chưa bấm «Cho phép»" in bare.text
        store = TokenStore(province, oa_emulator.app_id, oa_emulator.app_secret, oa_emulator.base_url)
        callback = oa_emulator.approve(store.permission_url(base))
        state = parse_qs(urlsplit(callback).query)["state"][0]
        forged = httpx.get(callback.replace(f"state={state}", "state=forged"), timeout=10)
        assert forged.status_code == 400 and "không khớp" in forged.text
        accented = httpx.get(base + "?code=abc&state=%C3%A9", timeout=10)  # any text at all: refused, never a 500
        assert accented.status_code == 400 and "không khớp" in accented.text
        assert oa_emulator.calls("oauth_token") == [] and tokens_in_db(province) == before
        oa_emulator.inject_error("oauth_token", 500)
        busy = httpx.get(callback, timeout=10)
        assert busy.status_code == 503 and "tải lại trang này" in busy.text
        done = httpx.get(callback, timeout=10)  # the reload
        assert done.status_code == 200 and "Đã kết nối" in done.text
        assert tokens_in_db(province) != before and all(t not in done.text for t in tokens_in_db(province))
    finally:
        bot.stop()


def test_the_oa_tokens_are_encrypted_at_rest_and_a_changed_key_asks_for_a_new_authorisation(db, oa_emulator):
    """A copy of the database alone does not hand out the OA (its tokens send paid messages as the province):
    they are sealed with the token key. Under another key they cannot be read: the authorisation is then
    reported lost, not a traceback, and authorising again mends it."""
    from sqlalchemy import text

    from bot.storage.token_key import use_key

    settings = oa_settings(oa_emulator, 1)
    try:
        use_key("the-first-key-kept-with-backups")
        authorize(db, oa_emulator, settings)
        with db.engine.connect() as conn:
            raw = conn.execute(text("SELECT access_token, refresh_token FROM zalo_oa_auth")).one()
        store = TokenStore(db, oa_emulator.app_id, oa_emulator.app_secret, oa_emulator.base_url)
        assert all(value.startswith("fernet:") for value in raw)
        assert store.current() not in raw[0] and store.state().authorised
        use_key("another-key-than-the-first-one")
        assert "authorisation LOST" in store.status() and "cannot be read with this process's key" in store.status()
        with pytest.raises(AuthorisationLost):
            store.current()
        authorize(db, oa_emulator, settings)  # an admin connects again
        assert store.state().authorised and store.current()
    finally:
        use_key(None)  # the key is process-wide: the next test starts without one
