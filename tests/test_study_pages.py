"""The study pages over HTTP: signed links, the Telegram Mini App check, cookies, forms that count once.

The real web server (bot/web.py with the pages mounted) on 127.0.0.1, on SQLite and PostgreSQL.
What a browser shows is in test_study_pages_browser.py.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

import httpx
from markupsafe import escape
import pytest
from sqlalchemy import func, select

from bot.emulators.telegram import web_app_hash
from bot.services import web_links
from bot.storage.models import Answer, Attempt, ChatAccount, Member, WebLink
from bot.timeutil import utcnow
from bot.webapp.miniapp import check_init_data
from tests.conftest import WEB_SECRET

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)
TOKEN = "123456:TEST-TOKEN"


# -- link signing (no database needed) --------------------------------------------------------------
def test_a_signed_link_reads_back_and_any_changed_character_makes_it_forged():
    token = web_links.sign(WEB_SECRET, "abcDEF123", NOW)
    assert web_links.unsign(WEB_SECRET, token) == ("abcDEF123", NOW)
    link_id, expiry, mac = token.split(".")
    assert web_links.unsign(WEB_SECRET, f"abcDEF124.{expiry}.{mac}") is None  # another link
    assert web_links.unsign(WEB_SECRET, f"{link_id}.{int(expiry) + 86400}.{mac}") is None  # a longer life
    assert web_links.unsign(WEB_SECRET, f"{link_id}.{expiry}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}") is None
    assert web_links.unsign(b"another-server-secret-0123456789", token) is None
    for junk in ("", "a.b", "a.b.c.d", "x" * 500, f"{link_id}.-5.{mac}"):
        assert web_links.unsign(WEB_SECRET, junk) is None


def test_a_link_names_a_random_link_row_never_the_member(province):
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV002"))
        tokens = [web_links.mint(s, WEB_SECRET, member.id, NOW) for _ in range(2)]
        rows = s.scalars(select(WebLink).where(WebLink.member_id == member.id)).all()
    link_ids = [t.split(".")[0] for t in tokens]
    assert sorted(link_ids) == sorted(r.id for r in rows) and link_ids[0] != link_ids[1]
    assert all(len(i) == 16 and i != str(member.id) and "DV002" not in t for i, t in zip(link_ids, tokens))


def test_expired_revoked_and_deactivated_members_links_stop_working(province):
    now = utcnow()
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV002"))
        good = web_links.mint(s, WEB_SECRET, member.id, now)
        old = web_links.mint(s, WEB_SECRET, member.id, now - timedelta(days=2), expires_at=now - timedelta(seconds=1))
        assert web_links.check(s, WEB_SECRET, good, now).status == "ok"
        assert web_links.check(s, WEB_SECRET, old, now).status == "expired"
        assert web_links.check(s, WEB_SECRET, "nope.1.x", now).status == "forged"
        web_links.revoke(s, member.id, now)
        assert web_links.check(s, WEB_SECRET, good, now).status == "revoked"
        fresh = web_links.mint(s, WEB_SECRET, member.id, now)
        member.active = False
        s.flush()
        assert web_links.check(s, WEB_SECRET, fresh, now).status == "inactive"


# -- Telegram Mini App initData ------------------------------------------------------------------------
def init_data(user_id: int = 42, auth_date: datetime = NOW, token: str = TOKEN, **extra) -> str:
    fields = {"query_id": "AAHdF6IQAAAAAN0XohDhrOrc", "auth_date": str(int(auth_date.timestamp())),
              "user": json.dumps({"id": user_id, "first_name": "Sơn", "language_code": "vi"}, ensure_ascii=False),
              **extra}
    fields["hash"] = web_app_hash(fields, token)
    return urlencode(fields)


def test_init_data_signed_by_telegram_is_accepted_with_its_user():
    checked = check_init_data(init_data(42), TOKEN, NOW + timedelta(minutes=5))
    assert checked.ok and checked.user_id == 42


def test_init_data_with_any_field_changed_or_another_bots_hash_is_refused():
    good = dict(parse_qsl(init_data(42)))
    for key, value in (("user", good["user"].replace("42", "43")), ("auth_date", str(int(NOW.timestamp()) + 60)),
                       ("hash", "0" * 64)):
        assert check_init_data(urlencode({**good, key: value}), TOKEN, NOW).status == "tampered"
    assert check_init_data(init_data(42, token="999:OTHER"), TOKEN, NOW).status == "tampered"
    assert check_init_data(urlencode({k: v for k, v in good.items() if k != "hash"}), TOKEN, NOW).status == "tampered"
    assert check_init_data("", TOKEN, NOW).status == "missing"
    assert check_init_data("%%%&&&", TOKEN, NOW).status == "tampered"


def test_init_data_older_than_a_day_is_stale():
    assert check_init_data(init_data(42), TOKEN, NOW + timedelta(hours=25)).status == "stale"
    assert check_init_data(init_data(42, auth_date=NOW + timedelta(hours=1)), TOKEN, NOW).status == "stale"


# -- over HTTP -------------------------------------------------------------------------------------------
def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def signed_in(pages, member_code: str, round_id: int | None = 1) -> httpx.Client:
    client = httpx.Client(base_url=pages.base, follow_redirects=True, timeout=10)
    page = client.get(path_of(pages.link_for(member_code, round_id=round_id)))
    assert page.status_code == 200, page.text
    return client


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def start_quiz(client: httpx.Client) -> tuple[int, str]:
    page = client.get("/hoc/dot/1")
    started = client.post("/hoc/dot/1/lambai", data={"csrf": csrf(page.text)})
    assert "Câu 1/10" in started.text
    return int(re.search(r"/hoc/bai/(\d+)", str(started.url)).group(1)), csrf(started.text)


def test_the_study_page_is_in_the_members_language_and_says_an_unreviewed_translation_is_so(study_pages, province):
    from tests.test_languages import KM, set_language, translate

    translate(province)
    set_language(province, "DV002", "km")
    km = signed_in(study_pages, "DV002").get("/hoc/dot/1").text
    assert f'🌐 Tiếng Khmer: <span lang="km">{KM["title"]}</span>' in km
    assert "⚠️ (bản dịch chưa được duyệt)" in km
    assert KM["summary"] in km and KM["key_points"][0] in km
    assert "Kế hoạch số 64-KH/TU ngày 15/02/2022" not in km
    vi = signed_in(study_pages, "DV003").get("/hoc/dot/1").text  # reads Vietnamese
    assert "Kế hoạch số 64-KH/TU ngày 15/02/2022" in vi and "🌐" not in vi and KM["summary"] not in vi
    translate(province, reviewed_by="Ban Tuyên giáo Tỉnh ủy")
    reviewed = signed_in(study_pages, "DV002").get("/hoc/dot/1").text
    assert KM["summary"] in reviewed and "chưa được duyệt" not in reviewed


def test_the_study_page_shows_the_documents_note_under_its_title_as_the_chat_does(study_pages, province):
    from bot.storage.models import Document

    with province.session() as s:
        note = s.get(Document, "kh-64-tu-binh-phuoc").note
    assert note and escape(note) in signed_in(study_pages, "DV002").get("/hoc/dot/1").text


def test_session_cookie_is_httponly_lax_and_never_carries_the_link_in_the_address(study_pages):
    client = httpx.Client(base_url=study_pages.base, timeout=10)
    opened = client.get(path_of(study_pages.link_for("DV002")))
    assert opened.status_code == 303 and opened.headers["location"] == "/hoc/dot/1"
    cookie = opened.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/hoc" in cookie
    assert "secure" not in cookie  # plain http on 127.0.0.1; behind https it is Secure (next test)
    study_pages.config.public_url = "https://hoc.example.vn"
    again = client.get(path_of(study_pages.link_for("DV002")))
    assert "secure" in again.headers["set-cookie"].lower()


def test_a_page_opened_before_a_round_was_extended_keeps_its_session_until_the_new_deadline(study_pages, province):
    """The session cookie lived until the link expired when it was opened; the round is extended: the next page
    the member opens carries a cookie that lives until the new deadline (they are not sent back to the chat)."""
    from bot.services.rounds import extend_round
    from bot.storage.models import Round

    with province.session() as s:
        deadline = s.get(Round, 1).closes_at
    client = httpx.Client(base_url=study_pages.base, timeout=10)
    opened = client.get(path_of(study_pages.link_for("DV002", expires_at=deadline)))
    max_age = lambda response: int(re.search(r"max-age=(\d+)", response.headers["set-cookie"], re.I).group(1))  # noqa: E731
    assert abs(max_age(opened) - (deadline - utcnow()).total_seconds()) < 60
    with province.session() as s:
        extend_round(s, 1, deadline + timedelta(days=10), utcnow(), ZoneInfo("Asia/Ho_Chi_Minh"))
    page = client.get("/hoc/dot/1")
    assert page.status_code == 200 and "set-cookie" in page.headers
    assert abs(max_age(page) - (deadline + timedelta(days=10) - utcnow()).total_seconds()) < 60


def test_without_a_link_the_pages_say_in_vietnamese_how_to_get_one(study_pages):
    page = httpx.get(f"{study_pages.base}/hoc/", timeout=10)
    assert page.status_code == 401
    assert "Cần mở từ tin nhắn của bot" in page.text and "nhắn /hoc cho bot" in page.text


def test_a_resubmitted_answer_form_records_nothing_twice(study_pages, province):
    client = signed_in(study_pages, "DV002")
    aid, token = start_quiz(client)
    first = client.post(f"/hoc/bai/{aid}", data={"csrf": token, "position": 1, "chon": 0})
    assert "Câu 2/10" in first.text
    again = client.post(f"/hoc/bai/{aid}", data={"csrf": token, "position": 1, "chon": 2})
    assert "Câu 2/10" in again.text and "đã được ghi nhận rồi" in again.text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.attempt_id == aid)) == 1


def test_an_option_the_question_does_not_have_is_refused_as_such_and_records_nothing(study_pages, province):
    client = signed_in(study_pages, "DV002")
    aid, token = start_quiz(client)
    for chon in ("4", "9", "-1", "99999999999999999999999", "a", "٣", ""):
        page = client.post(f"/hoc/bai/{aid}", data={"csrf": token, "position": 1, "chon": chon})
        assert "Câu 1/10" in page.text and "Câu này không có đáp án đó" in page.text, chon
        assert "không còn hiện hành" not in page.text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.attempt_id == aid)) == 0
    assert "Câu 2/10" in client.post(f"/hoc/bai/{aid}", data={"csrf": token, "position": 1, "chon": 3}).text


def test_an_answer_sent_after_the_round_closed_is_refused_once_on_the_page(study_pages, province):
    from bot.services.rounds import close_round

    client = signed_in(study_pages, "DV002", round_id=None)  # a link to the list: a round's own expires with it
    aid, token = start_quiz(client)
    with province.session() as s:
        close_round(s, 1, utcnow())
    late = client.post(f"/hoc/bai/{aid}", data={"csrf": token, "position": 1, "chon": 0})
    assert late.text.count("không thể ghi nhận thêm") == 1, late.text  # said once, not by a notice and the card
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.attempt_id == aid)) == 0


def test_a_form_without_the_sessions_token_records_nothing(study_pages, province):
    client = signed_in(study_pages, "DV002")
    aid, _ = start_quiz(client)
    page = client.post(f"/hoc/bai/{aid}", data={"csrf": "forged", "position": 1, "chon": 0})
    assert page.status_code == 403 and "Trang đã cũ" in page.text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.attempt_id == aid)) == 0


def test_another_members_attempt_is_neither_shown_nor_answered(study_pages, province):
    owner = signed_in(study_pages, "DV002")
    aid, _ = start_quiz(owner)
    intruder = signed_in(study_pages, "DV003")
    token = csrf(intruder.get("/hoc/dot/1").text)
    for page in (intruder.get(f"/hoc/bai/{aid}"), intruder.get(f"/hoc/bai/{aid}/ketqua"),
                 intruder.post(f"/hoc/bai/{aid}", data={"csrf": token, "position": 1, "chon": 0})):
        assert page.status_code == 404 and "Không tìm thấy trang" in page.text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.attempt_id == aid)) == 0


def test_a_round_page_opened_after_the_round_ended_says_so_to_its_members_only(study_pages, province):
    """The back button, or an old tab, after "Kết thúc đợt ngay": its members read that the round is over; a
    member outside its audience still learns nothing of it."""
    from bot.services.rounds import close_round, open_round
    from bot.storage.models import Round

    with province.session() as s:
        now = utcnow()
        hq_only = open_round(s, "kh-83-hu-tuy-phuoc", ["HQ"], now - timedelta(hours=1), now + timedelta(days=3), 98,
                             now).id
    member, outsider = signed_in(study_pages, "DV032"), signed_in(study_pages, "DV002")
    token = csrf(member.get(f"/hoc/dot/{hq_only}").text)
    assert outsider.get(f"/hoc/dot/{hq_only}").status_code == 404
    with province.session() as s:
        close_round(s, hq_only, utcnow())
    for page in (member.get(f"/hoc/dot/{hq_only}"), member.post(f"/hoc/dot/{hq_only}/lambai", data={"csrf": token})):
        assert page.status_code == 410 and "Đợt học tập đã kết thúc" in page.text, page.text
        assert "nhắn /hoc" not in page.text  # a new link would not open an ended round
    gone = outsider.get(f"/hoc/dot/{hq_only}")
    assert gone.status_code == 404 and "kết thúc" not in gone.text
    with province.session() as s:  # round 1 ran out at its deadline (the member's list link lives on)
        s.get(Round, 1).closes_at = utcnow() - timedelta(minutes=1)
    late = member.get("/hoc/dot/1")
    assert late.status_code == 410 and "Đợt học tập đã kết thúc" in late.text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Attempt).where(Attempt.round_id == hq_only)) == 0


def test_a_revoked_link_ends_the_session_it_opened(study_pages, province):
    client = signed_in(study_pages, "DV002")
    with province.session() as s:
        web_links.revoke(s, s.scalar(select(Member.id).where(Member.code == "DV002")), utcnow())
    page = client.get("/hoc/")
    assert page.status_code == 403 and "Đường link đã bị thu hồi" in page.text


def test_a_rounds_link_and_its_session_expire_when_the_round_is_closed_early(study_pages, province, cli):
    """"Kết thúc đợt ngay" (``hoctap rounds close``): the round's links from the announcement, reminders and /hoc
    say they have expired, and so does a page opened with one before; a link to the list of rounds still opens."""
    round_link, listing = study_pages.link_for("DV002"), study_pages.link_for("DV002", round_id=None)
    session = signed_in(study_pages, "DV003")
    assert session.get("/hoc/dot/1").status_code == 200
    assert cli("rounds", "close", "1").code == 0
    for page in (httpx.get(f"{study_pages.base}{path_of(round_link)}", timeout=10),
                 session.get("/hoc/dot/1"), session.get("/hoc/")):
        assert page.status_code == 410 and "Đường link đã hết hạn" in page.text, page.text
        assert "set-cookie" not in page.headers
    opened = httpx.get(f"{study_pages.base}{path_of(listing)}", timeout=10)
    assert opened.status_code == 303 and "set-cookie" in opened.headers


def link_member_to_telegram(province, member_code: str, telegram_id: int) -> None:
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == member_code))
        s.add(ChatAccount(channel="telegram", external_id=str(telegram_id), member_id=member.id, linked_at=utcnow()))


def test_mini_app_opens_for_the_linked_telegram_user_and_refuses_anyone_else(study_pages, province, emulator):
    link_member_to_telegram(province, "DV002", 5001)
    token = study_pages.link_for("DV002").rsplit("/", 1)[1]
    client = httpx.Client(base_url=study_pages.base, timeout=10)
    shell = client.get(f"/hoc/l/{token}?tg=1")
    assert shell.status_code == 200 and "set-cookie" not in shell.headers  # nothing without initData
    now = utcnow()
    other = client.post("/hoc/tg", data={"token": token, "init_data": init_data(5002, now, emulator.token)})
    assert other.status_code == 403 and "Đây là đường link của đồng chí khác" in other.text
    stale = client.post("/hoc/tg", data={"token": token,
                                          "init_data": init_data(5001, now - timedelta(days=2), emulator.token)})
    assert stale.status_code == 403 and "set-cookie" not in stale.headers
    forged = client.post("/hoc/tg", data={"token": token, "init_data": init_data(5001, now, "999:OTHER")})
    assert forged.status_code == 403 and "Không xác minh được tài khoản Telegram" in forged.text
    assert client.post("/hoc/tg", data={"token": token, "init_data": ""}).status_code == 403
    own = client.post("/hoc/tg", data={"token": token, "init_data": init_data(5001, now, emulator.token)})
    assert own.status_code == 303 and "httponly" in own.headers["set-cookie"].lower()


def test_links_cookies_and_mini_app_data_with_characters_no_token_has_get_the_forged_page_not_an_error(
        study_pages, emulator):
    """Probes an intruder makes without any link: accented or non-Latin digits in a link, a cookie or a Mini App
    hash are forged, said so (403), never a server error."""
    client = httpx.Client(base_url=study_pages.base, timeout=10)
    for path in ("/hoc/l/%C3%A9.1.x", "/hoc/l/a.1.%C3%A9", "/hoc/l/a.%D9%A3.x"):
        page = client.get(path)
        assert page.status_code == 403 and "Đường link" in page.text, path
    cookie = httpx.Client(base_url=study_pages.base, timeout=10, headers={"Cookie": "hoctap_hoc=a.1.é".encode()})
    assert cookie.get("/hoc/").status_code == 403
    assert client.post("/hoc/tg", data={"token": "é.1.x", "init_data": "hash=x"}).status_code == 403
    token = study_pages.link_for("DV002").rsplit("/", 1)[1]
    tampered = client.post("/hoc/tg", data={"token": token, "init_data": "hash=%C3%A9&auth_date=1"})
    assert tampered.status_code == 403 and "Không xác minh được tài khoản Telegram" in tampered.text


def test_pages_weigh_under_60_kb_and_reference_nothing_outside_the_server(study_pages):
    client = signed_in(study_pages, "DV002")
    aid, token = start_quiz(client)
    pages = [client.get("/hoc/"), client.get("/hoc/dot/1"), client.get(f"/hoc/bai/{aid}"), client.get("/hoc/ketqua")]
    assets = [client.get("/hoc/static/app.css"), client.get("/hoc/static/app.js")]
    for page in pages:
        assert page.status_code == 200
        weight = len(page.content) + sum(len(a.content) for a in assets)
        assert weight <= 60 * 1024, f"{page.url}: {weight} bytes"
        external = re.findall(r'(?:src|href|action)="((?:https?:)?//[^"]*)"', page.text)
        assert external == [], external
        assert "no-store" in page.headers["cache-control"]


def test_no_other_site_can_frame_the_answer_buttons_while_the_mini_app_opens_in_telegrams_web_client(
        study_pages, emulator):
    """Clickjacking: a study page refuses to be shown in another site's frame; the Mini App's own pages (its start
    page, and what its login answers) may be framed by Telegram's web client only, which shows Mini Apps so."""
    client = signed_in(study_pages, "DV002")
    aid, _ = start_quiz(client)
    refused = httpx.get(f"{study_pages.base}/hoc/", timeout=10)
    for page in (client.get("/hoc/"), client.get("/hoc/dot/1"), client.get(f"/hoc/bai/{aid}"),
                 client.get("/hoc/ketqua"), client.get("/hoc/khong-co"), refused):
        assert page.headers["x-frame-options"] == "DENY", page.url
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"], page.url
    token = study_pages.link_for("DV002").rsplit("/", 1)[1]
    shell = httpx.get(f"{study_pages.base}/hoc/l/{token}?tg=1", timeout=10)
    other = httpx.post(f"{study_pages.base}/hoc/tg", timeout=10,
                       data={"token": token, "init_data": init_data(5002, utcnow(), emulator.token)})
    for page in (shell, other):
        assert page.status_code in (200, 403) and "x-frame-options" not in page.headers
        assert "frame-ancestors https://web.telegram.org" in page.headers["content-security-policy"]


def test_an_operator_revokes_a_members_links_from_the_command_line(study_pages, province, cli):
    client = signed_in(study_pages, "DV002")
    result = cli("members", "revoke-links", "DV002")
    assert result.code == 0 and "1 study link(s) of DV002 revoked" in result.out
    assert client.get("/hoc/").status_code == 403
    assert cli("members", "revoke-links", "NOPE").code == 1


def test_the_result_page_counts_the_attempts_left_after_each_quiz_taken_on_the_page(study_pages):
    client = signed_in(study_pages, "DV002")
    for left in (2, 1):
        aid, token = start_quiz(client)
        for position in range(1, 11):
            page = client.post(f"/hoc/bai/{aid}", data={"csrf": token, "position": position, "chon": 0})
        assert str(page.url).endswith(f"/hoc/bai/{aid}/ketqua")
        assert f"Đồng chí còn {left} lượt làm bài (tính điểm cao nhất)." in page.text
    aid, token = start_quiz(client)
    for position in range(1, 11):
        page = client.post(f"/hoc/bai/{aid}", data={"csrf": token, "position": position, "chon": 0})
    assert "lượt làm bài" not in page.text  # the third of three: none left


def test_a_post_far_larger_than_an_answer_is_refused_unread_and_records_nothing(study_pages, province):
    client = signed_in(study_pages, "DV002")
    aid, token = start_quiz(client)
    filler = {"csrf": token, "position": "1", "chon": "0", "x": "a" * 200_000}
    for path in (f"/hoc/bai/{aid}", "/hoc/tg"):
        page = client.post(path, data=filler)
        assert page.status_code == 413 and "quá lớn" in page.text, path
    streamed = client.post(f"/hoc/bai/{aid}", content=(b"x" * 8192 for _ in range(64)),  # no Content-Length
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.attempt_id == aid)) == 0
    assert "Câu 2/10" in client.post(f"/hoc/bai/{aid}", data={"csrf": token, "position": 1, "chon": 0}).text


def test_ids_beyond_any_row_and_wrong_methods_get_the_vietnamese_refusal_page_not_an_error(study_pages):
    client = signed_in(study_pages, "DV002")
    for path in ("/hoc/bai/99999999999999999999", "/hoc/bai/9223372036854775808/ketqua", "/hoc/dot/0",
                 "/hoc/dot/99999999999999999999", "/hoc/bai/3000000000", "/hoc/dot/2147483648"):  # past INTEGER
        page = client.get(path)
        assert page.status_code == 404 and "Không tìm thấy trang" in page.text, path
    wrong = client.delete("/hoc/ketqua")
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
    assert "Không mở được trang này" in wrong.text and "Không tìm thấy" not in wrong.text
    both = client.put("/hoc/bai/1")  # a question page and its answer form: two routes of one path
    assert both.status_code == 405 and {"GET", "POST"} <= set(both.headers["allow"].split(", "))


def test_a_rounds_links_from_announcements_and_hoc_keep_working_when_the_round_is_extended(province):
    """An announcement's link to the round, and /hoc's link to the list of rounds when this one closes last,
    live until the new deadline; a link with a lifetime of its own keeps it."""
    from bot.services.rounds import extend_round
    from bot.storage.models import Round

    with province.session() as s:
        rnd = s.get(Round, 1)
        old_deadline = rnd.closes_at
        member = s.scalar(select(Member.id).where(Member.code == "DV002"))
        token = web_links.mint_many(s, WEB_SECRET, [member], utcnow(), round_id=1, expires_at=old_deadline)[member]
        listing = web_links.mint(s, WEB_SECRET, member, utcnow(), expires_at=old_deadline)  # /hoc, two rounds open
        other = web_links.mint(s, WEB_SECRET, member, utcnow(), expires_at=old_deadline - timedelta(hours=1))
        admin = s.scalar(select(Member.id).where(Member.code == "AD001"))  # the province: not in DP's or HQ's round
        outsider = web_links.mint(s, WEB_SECRET, admin, utcnow(), expires_at=old_deadline)
        extend_round(s, 1, old_deadline + timedelta(days=10), utcnow(), ZoneInfo("Asia/Ho_Chi_Minh"))
    later = old_deadline + timedelta(days=2)
    with province.session() as s:
        assert web_links.check(s, WEB_SECRET, token, later).status == "ok"
        assert web_links.check(s, WEB_SECRET, listing, later).status == "ok"
        for link in (token, listing):
            assert web_links.check(s, WEB_SECRET, link, old_deadline + timedelta(days=10)).status == "expired"
        assert web_links.check(s, WEB_SECRET, other, later).status == "expired"  # its own lifetime, unchanged
        assert web_links.check(s, WEB_SECRET, outsider, later).status == "expired"  # not this round's member
