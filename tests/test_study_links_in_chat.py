"""The chat offers the study page: /hoc, announcements and reminders carry each member's own link
(a Mini App button and a link button on Telegram, the address in the text on Zalo)."""

from __future__ import annotations

from datetime import time, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from sqlalchemy import select

from bot.channels.zalo import reply_text
from bot.outbox import queue
from bot.outbox.queue import payload_reply
from bot.scheduling.due import Schedule, run_due
from bot.services import web_links
from bot.services.web_links import StudyLinks
from bot.storage.models import ChatAccount, Member, OutboxMessage, Round
from bot.timeutil import utcnow
from bot.webapp.miniapp import check_init_data
from tests.conftest import WEB_SECRET, BotProcess
from tests.test_scheduled_messages import branch, deliver, local  # noqa: F401 - fixture
from tests.messengers import TZ, free_port, say
from tests.test_zalo_channel import ZaloProcess, zalo_link
from tests.test_zalo_oa_channel import OAProcess, oa_link

PUBLIC = "https://hoc.example.vn"
LINKS = StudyLinks(PUBLIC, WEB_SECRET)


def member_of(db, url: str, at=None) -> str:
    """Whose link this is (the member code), checked as the pages check it."""
    token = urlsplit(unquote(url)).path.rsplit("/", 1)[1]
    with db.session() as s:
        checked = web_links.check(s, WEB_SECRET, token, at or utcnow())
        assert checked.ok, checked.status
        return checked.member.code


def on_telegram(emulator, invite, member_code: str, user_id: int):
    """A member who opened their invitation link on Telegram."""
    user = emulator.user(user_id, first_name=member_code)
    user.send_text(f"/start {invite(member_code)}")
    user.wait_for(lambda u: any("Liên kết thành công" in (m.get("text") or "") for m in u.messages))
    return user


def test_hoc_on_telegram_offers_a_mini_app_button_and_a_link_of_the_members_own(province, emulator, invite):
    process = BotProcess(province, emulator, study_links=LINKS).start()
    try:
        user = on_telegram(emulator, invite, "DV002", 7002)
        user.send_text("/hoc")
        user.wait_for(lambda u: "trang học tập" in (u.messages[-1].get("text") or ""))
        buttons = [b for row in user.messages[-1]["reply_markup"]["inline_keyboard"] for b in row]
        assert any(b.get("callback_data") == "r:1:1" for b in buttons)  # the chat's reading stays
        web_app = next(b for b in buttons if "web_app" in b)
        plain = next(b for b in buttons if "url" in b)
        assert web_app["web_app"]["url"].startswith(f"{PUBLIC}/hoc/l/") and web_app["web_app"]["url"].endswith("?tg=1")
        assert member_of(province, plain["url"]) == "DV002"
        opened = user.open_web_app(web_app["text"])  # what Telegram's webview loads
        init_data = parse_qs(urlsplit(opened).fragment)["tgWebAppData"][0]
        checked = check_init_data(init_data, emulator.token, utcnow())
        assert checked.ok and checked.user_id == 7002
        import time as clock

        clock.sleep(1.0)  # a send Telegram refused would have been tried again by now
        assert len([m for m in user.messages if "trang học tập" in (m.get("text") or "")]) == 1
    finally:
        process.stop()


def test_the_emulator_refuses_a_web_app_button_that_is_not_https(emulator):
    import httpx

    user = emulator.user(7003)
    user.send_text("/start")
    markup = {"inline_keyboard": [[{"text": "Mở", "web_app": {"url": "http://127.0.0.1:8090/hoc"}}]]}
    answer = httpx.post(f"{emulator.base_url}{emulator.token}/sendMessage",
                        json={"chat_id": 7003, "text": "x", "reply_markup": markup}).json()
    assert answer["ok"] is False and "BUTTON_URL_INVALID" in answer["description"]
    two = {"inline_keyboard": [[{"text": "Mở", "url": "https://a.vn", "callback_data": "x"}]]}
    answer = httpx.post(f"{emulator.base_url}{emulator.token}/sendMessage",
                        json={"chat_id": 7003, "text": "x", "reply_markup": two}).json()
    assert answer["ok"] is False


def test_hoc_on_zalo_puts_the_members_own_link_in_the_text(province, zalo_emulator, zalo_invite):
    process = ZaloProcess(province, zalo_emulator, study_links=LINKS).start()
    try:
        user = zalo_link(zalo_emulator, zalo_invite, "DV005", "z7005")
        text = say(user, "hoc", "Trang học tập của đồng chí")
        url = next(w for w in text.split() if w.startswith(f"{PUBLIC}/hoc/l/"))
        assert member_of(province, url) == "DV005"
        assert "Gõ 1" in text  # the typed flow stays for those who prefer it
    finally:
        process.stop()


def oa_study_link(message) -> str:
    """The address of the study-page button of an OA message (the phone opens it in the browser)."""
    opens = [b for b in message["buttons"] if b["type"] == "oa.open.url"]
    assert len(opens) == 1, message
    return opens[0]["payload"]["url"]


def test_hoc_on_the_zalo_oa_offers_a_button_that_opens_the_members_own_page(province, oa_emulator, oa_invite):
    process = OAProcess(province, oa_emulator, study_links=LINKS).start()
    try:
        user = oa_link(oa_emulator, oa_invite, "DV005", "oa-5")
        say(user, "hoc", "64-KH/TU")
        message = user.messages[-1]
        assert member_of(province, oa_study_link(message)) == "DV005"
        assert [b["title"] for b in message["buttons"]] == ["1. Đọc 64-KH/TU", "📖 Mở trang học tập"]
        other = oa_link(oa_emulator, oa_invite, "DV006", "oa-6")
        say(other, "hoc", "64-KH/TU")
        assert member_of(province, oa_study_link(other.messages[-1])) == "DV006"
        from bot.channels.zalo_oa import OAError

        for payload in (f"{PUBLIC}/hoc", {"url": "javascript:alert(1)"}):  # the emulator holds us to the shape
            with pytest.raises(OAError):
                process.running.run(process.runtime.client.send_cs(
                    "oa-5", "x", [{"title": "Mở", "type": "oa.open.url", "payload": payload}]))
    finally:
        process.stop()


def test_announcements_through_the_zalo_oa_carry_each_members_own_link(province, oa_emulator, oa_invite):
    from bot.outbox.queue import QuietHours
    from bot.outbox.sender import OutboxSender

    process = OAProcess(province, oa_emulator).start()
    try:
        users = {code: oa_link(oa_emulator, oa_invite, code, f"oa-{code}") for code in ("DV007", "DV008")}
        with province.session() as s:  # round 1 is announced once it is open
            s.get(Round, 1).opens_at = utcnow() - timedelta(minutes=5)
        run_due(province, utcnow(), Schedule(quiet=QuietHours(tz=TZ, start=time(0, 0), end=time(0, 0)), links=LINKS))
        sender = OutboxSender(province, {"zalo_oa": process.runtime.transport}, quiet=None)
        process.running.run(sender.run(until_idle=True))
    finally:
        process.stop()
    for code, user in users.items():
        announcement = next(m for m in user.messages if m["text"].startswith("📢"))
        assert member_of(province, oa_study_link(announcement)) == code


def test_announcements_and_reminders_carry_each_members_own_link_and_no_one_elses(province, emulator, branch):
    rid, users = branch
    schedule = Schedule(links=LINKS)
    run_due(province, local("2026-12-01 07:00"), schedule)
    run_due(province, local("2026-12-14 10:00"), schedule)  # the reminder slot before the deadline
    with province.session() as s:
        found = s.execute(select(OutboxMessage.id, OutboxMessage.purpose, Member.code)
                          .join(Member, Member.id == OutboxMessage.member_id)).all()
        whole = queue.payloads(s, [oid for oid, *_ in found])  # the shared body with the member's own link
        rows = [(purpose, whole[oid], code) for oid, purpose, code in found]
    assert {purpose for purpose, *_ in rows} == {"announce", "remind"}
    urls = set()
    for purpose, payload, code in rows:
        reply = payload_reply(payload)
        assert reply.link is not None
        with province.session() as s:
            token = reply.link.url.rsplit("/", 1)[1]
            checked = web_links.check(s, WEB_SECRET, token, local("2026-12-14 10:00"))
            assert checked.ok and checked.member.code == code and checked.link.round_id == rid
            assert checked.link.expires_at == s.get(Round, rid).closes_at  # valid until the round closes
        assert reply.link.url in reply_text(reply)  # on Zalo: the address in the text
        urls.add(reply.link.url)
    assert len(urls) == len(rows)  # never one member's link in another's message
    deliver(province, emulator, local("2026-12-01 07:05"))
    message = next(m for m in users["DV003"].messages if (m.get("text") or "").startswith("📢"))
    buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
    assert member_of(province, next(b["url"] for b in buttons if "url" in b), local("2026-12-01 07:05")) == "DV003"
    assert any("web_app" in b for b in buttons)



def test_hoctap_run_serves_the_study_pages_when_public_url_is_set(province, zalo_emulator, zalo_invite):
    import asyncio
    import threading

    import httpx

    from bot.app import serve
    from bot.config import SchedulerSettings, Settings, WebSettings, ZaloSettings

    port = free_port()
    settings = Settings(database_url=province.url,
                        zalo=ZaloSettings(token=zalo_emulator.token, api_base_url=zalo_emulator.base_url),
                        web=WebSettings(public_url=f"http://127.0.0.1:{port}", listen=f"127.0.0.1:{port}",
                                        secret="a-secret-of-the-operator-0123"),
                        scheduler=SchedulerSettings(tick_seconds=3600))
    loop, stop = asyncio.new_event_loop(), asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve(settings, province, stop)), daemon=True)
    thread.start()
    try:
        user = zalo_link(zalo_emulator, zalo_invite, "DV012", "z7012")
        text = say(user, "hoc", "Trang học tập của đồng chí")
        url = next(w for w in text.split() if w.startswith(f"http://127.0.0.1:{port}/hoc/l/"))
        page = httpx.get(url, follow_redirects=True, timeout=10)
        assert page.status_code == 200 and "Kế hoạch nâng cao hiệu quả" in page.text
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
    assert not thread.is_alive()


def test_a_secretarys_reminder_carries_each_members_own_link(province, emulator, invite):
    with province.session() as s:  # DV002..DV004 can be written to
        for code in ("DV002", "DV003", "DV004"):
            member = s.scalar(select(Member).where(Member.code == code))
            s.add(ChatAccount(
                channel="telegram", external_id=str(80_000 + member.id), member_id=member.id, linked_at=utcnow()))
    process = BotProcess(province, emulator, study_links=LINKS).start()
    try:
        secretary = on_telegram(emulator, invite, "DV001", 7001)
        secretary.send_text("/nhacnho")
        secretary.wait_for(lambda u: "nhắc" in (u.messages[-1].get("text") or "").lower(), timeout=10)
    finally:
        process.stop()
    with province.session() as s:
        rows = s.execute(select(OutboxMessage.payload, Member.code).join(Member, Member.id == OutboxMessage.member_id)
                         .where(OutboxMessage.purpose == "nudge")).all()
    assert sorted(code for _p, code in rows) == ["DV001", "DV002", "DV003", "DV004"]
    for payload, code in rows:
        assert member_of(province, payload["link"]["url"]) == code
