"""The web console over plain HTTP: login links, CSRF, rate limits, sizes, headers, chat and CLI entry points."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from bot.domain.phones import display_phone
from bot.timeutil import utcnow
from tests.conftest import QUIZZES, a_long_write
from tests.console_browser import TZ, LINK, chat, console_server  # noqa: F401 - fixtures


def enter(client: httpx.Client, path: str) -> httpx.Response:
    """Open a login link's page and press its button, as a browser does."""
    page = client.get(path)
    return client.post(path, data={"csrf": page.text.split('name="csrf" value="')[1].split('"')[0]})


def logged_in(chat, server, code: str) -> httpx.Client:
    """An HTTP client with a console session (the link from /quantri, then the page's button)."""
    client = httpx.Client(base_url=server.url, follow_redirects=False)
    link = chat.login_link(code)
    response = enter(client, link.replace(server.url, ""))
    assert response.status_code == 303, response.text
    return client


def csrf_of(client: httpx.Client, path: str = "/quantri/") -> str:
    page = client.get(path).text
    return page.split('name="csrf" value="')[1].split('"')[0]


def round_form(chat, server, province, **fields) -> tuple[httpx.Client, dict]:
    """CB002 (DP's cadre) logged in, and the "Mở đợt" form for DP as they would fill it: kh-83, open
    01/12/2099, close 15/12/2099, target 98; ``fields`` change any of it."""
    from bot.storage.models import Unit

    with province.session() as s:
        unit = s.scalar(select(Unit.id).where(Unit.code == "DP"))
    cadre = logged_in(chat, server, "CB002")
    return cadre, {"csrf": csrf_of(cadre, "/quantri/dot/moi"), "document": "kh-83-hu-tuy-phuoc", "unit": str(unit),
                   "opens": "01/12/2099", "closes": "15/12/2099", "target": "98", **fields}


def rounds_opened(province) -> int:
    from bot.storage.models import Round

    with province.session() as s:
        return s.scalar(select(func.count()).select_from(Round))


def test_a_form_posted_without_its_csrf_token_changes_nothing(chat, console_server, province):
    from bot.storage.models import ConsoleAudit, OutboxMessage, Round

    client = logged_in(chat, console_server, "DV001")
    token = csrf_of(client)
    refused = client.post("/quantri/nhacnho", data={})
    forged = client.post("/quantri/nhacnho", data={"csrf": token[:-1] + ("A" if token[-1] != "A" else "B")})
    assert refused.status_code == forged.status_code == 403
    assert "Biểu mẫu đã cũ" in refused.text
    cadre = logged_in(chat, console_server, "CB002")
    assert cadre.post("/quantri/dot/1/dong", data={}).status_code == 403
    assert cadre.post("/quantri/dot/1/giahan", data={"closes": "31/12/2099"}).status_code == 403
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        rnd = s.get(Round, 1)
        assert rnd.closed_at is None and rnd.closes_at.year < 2099
        assert not s.scalar(select(func.count()).select_from(ConsoleAudit).where(
            ConsoleAudit.action.in_(("remind", "close_round", "extend_round"))))
    # with the token the same reminder goes through the outbox, once a day as in chat
    done = client.post("/quantri/nhacnho", data={"csrf": token})
    assert done.status_code == 200 and "đã gửi nhắc nhở tới" in done.text
    again = client.post("/quantri/nhacnho", data={"csrf": token})
    assert "đã gửi nhắc nhở tới 0" in again.text or "đã được nhắc" in again.text


def test_cadre_closes_and_extends_only_with_a_valid_form(chat, console_server, province):
    from bot.storage.models import ConsoleAudit, Round

    cadre = logged_in(chat, console_server, "CB001")
    token = csrf_of(cadre)
    typo = cadre.post("/quantri/dot/1/giahan", data={"csrf": token, "closes": "hôm nay"})
    assert typo.status_code == 400 and 'href="/quantri/dot/1/donvi/' in typo.text  # back to the round, to fix it
    later = (utcnow() + timedelta(days=60)).astimezone(TZ).strftime("%d/%m/%Y")
    assert cadre.post("/quantri/dot/1/giahan", data={"csrf": token, "closes": later}).status_code == 303
    with province.session() as s:
        assert s.get(Round, 1).closes_at.astimezone(TZ).strftime("%d/%m/%Y %H:%M") == f"{later} 23:59"
    asked = cadre.post("/quantri/dot/1/dong", data={"csrf": token})  # one tap asks first: it cannot be undone
    assert asked.status_code == 200 and "Kết thúc đợt học tập?" in asked.text and 'name="confirm"' in asked.text
    with province.session() as s:
        assert s.get(Round, 1).closed_at is None
    closed = cadre.post("/quantri/dot/1/dong", data={"csrf": token, "confirm": "1"})
    assert closed.status_code == 303
    page = cadre.get(closed.headers["location"]).text  # the day it ended, as the workbook says, not the deadline
    today = utcnow().astimezone(TZ).strftime("%d/%m/%Y")
    assert f"– {today}" in page and later not in page and "(đã kết thúc)" in page
    with province.session() as s:
        assert s.get(Round, 1).closed_at is not None
        actions = list(s.scalars(select(ConsoleAudit.action).order_by(ConsoleAudit.id)))
    assert actions[-2:] == ["extend_round", "close_round"]
    # a cadre of one district cannot close the other's round (CB002 answers for DP; round 1 covers HQ too)
    other = logged_in(chat, console_server, "CB002")
    refused = other.post("/quantri/dot/1/dong", data={"csrf": csrf_of(other), "confirm": "1"})
    assert refused.status_code == 403


def test_ids_in_urls_are_parsed_strictly_and_unknown_pages_are_refused_in_vietnamese(chat, console_server):
    cadre = logged_in(chat, console_server, "CB002")
    for path in ("/quantri/dot/1/donvi/+2", "/quantri/dot/1/donvi/٣", "/quantri/dot/1/donvi/99999999999",
                 "/quantri/dot/x/donvi/2"):
        assert cadre.get(path).status_code == 404, path
    unknown = cadre.get("/quantri/khong-co-trang-nay")
    assert unknown.status_code == 404 and "Không tìm thấy trang này." in unknown.text
    wrong = cadre.get("/quantri/nhacnho")  # a form's address opened as a page
    assert wrong.status_code == 405 and "không mở được theo cách này" in wrong.text and "POST" in wrong.headers["allow"]
    assert "script-src 'none'" in wrong.headers["content-security-policy"]
    login = cadre.delete("/quantri/vao/abc")  # a path of two routes: the login page and its form
    assert login.status_code == 405 and {"GET", "POST"} <= set(login.headers["allow"].split(", "))


def test_forged_logins_are_held_back_but_cannot_lock_a_cadre_with_a_real_link_out(chat, console_server, province):
    """Behind a proxy every user shares one address: a stranger's forged links must not keep the cadres out."""
    from bot.storage.models import ConsoleAudit

    client = httpx.Client(base_url=console_server.url)
    codes = [enter(client, f"/quantri/vao/forged{i}").status_code for i in range(12)]
    assert codes[:10] == [403] * 10 and codes[10:] == [429, 429]
    with province.session() as s:  # the hold stops forgeries from filling the audit log
        assert s.scalar(select(func.count()).select_from(ConsoleAudit)
                        .where(ConsoleAudit.action == "login_refused")) == 10
    opened = enter(client, chat.login_link("CB002").replace(console_server.url, ""))
    assert opened.status_code == 303 and client.get("/quantri/").status_code == 200


def test_a_login_link_posted_from_another_site_signs_nobody_in_and_stays_usable(chat, console_server, province):
    """Login CSRF: another site's page can post a cadre's own login link from a victim's browser, to sign the
    victim into the poster's session. Without the login page's cookie (SameSite=Strict: never sent with another
    site's form) the post is refused and the link is not spent; the page and its button still work."""
    from bot.storage.models import ConsoleSession

    path = chat.login_link("CB002").replace(console_server.url, "")
    victim = httpx.Client(base_url=console_server.url)
    forged = victim.post(path, data={"csrf": "x" * 32})
    assert forged.status_code == 403 and "Trang vào đã cũ" in forged.text and "hoctap_quantri" not in str(
        forged.headers.get("set-cookie"))
    page = victim.get(path)
    assert "samesite=strict" in page.headers["set-cookie"].lower()
    assert victim.post(path, data={"csrf": "y" * 32}).status_code == 403  # the cookie, but not its value
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsoleSession)) == 0
    opened = enter(httpx.Client(base_url=console_server.url), path)  # the link was not spent
    assert opened.status_code == 303 and "hoctap_quantri=" in opened.headers["set-cookie"]


def test_pages_send_a_csp_without_scripts_and_a_strict_cookie(chat, console_server):
    client = httpx.Client(base_url=console_server.url)
    response = enter(client, chat.login_link("CB002").replace(console_server.url, ""))
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/quantri" in cookie
    page = client.get("/quantri/")
    assert "script-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text and page.headers["referrer-policy"] == "no-referrer"


def test_an_upload_beyond_the_size_limit_is_refused_unread(chat, console_server, province):
    cadre = logged_in(chat, console_server, "CB002")
    big = b"a: " + b"x" * (3 * 1024 * 1024)
    response = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "action": "load"},
                          files={"file": ("big.yaml", big)})
    assert response.status_code == 413 and "Tệp quá lớn" in response.text


@pytest.mark.parametrize("path", ["/doanvien", "/vanban", "/nhacnho", "/vao/not-a-link"])
def test_a_strangers_large_post_is_refused_without_its_body_being_read(province, path):
    """Without a session, megabytes posted to the console (an upload page or any form) are not read into the
    process's memory: the refusal comes first, and nothing of the body was taken."""
    import asyncio

    from bot.console.app import create_console

    app = create_console(province, TZ)
    size = 8 * 1024 * 1024
    taken, sent = [0], []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"content-length", str(size).encode()), (b"content-type", b"multipart/form-data; b=x")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}

    async def receive():
        taken[0] += 1024 * 1024
        return {"type": "http.request", "body": b"x" * 1024 * 1024, "more_body": taken[0] < size}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] in (401, 403) and taken[0] == 0


def test_document_problems_are_shown_by_line_and_nothing_is_loaded(chat, console_server, province):
    from bot.storage.models import Document, Member

    cadre = logged_in(chat, console_server, "CB002")
    response = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "action": "load"},
                          files={"file": ("sai.yaml", "id: sai\ncode: 1\ntitle: x\n".encode())})
    assert response.status_code == 400 and "sai.yaml:" in response.text and "chưa nạp gì" in response.text
    with province.session() as s:
        assert s.get(Document, "sai") is None


def test_a_document_that_would_not_store_is_refused_on_the_page_not_with_a_server_error(chat, console_server,
                                                                                         province):
    """A number too large for the database, a lone surrogate from an escape: both gave HTTP 500 once."""
    sample = (QUIZZES / "kh-64-tu-binh-phuoc.yaml").read_text(encoding="utf-8")
    cadre = logged_in(chat, console_server, "CB002")
    for broken, said in ((sample.replace("title: ", 'title: "\\ud800" #', 1), "U+D800"),
                         (sample.replace("  max_attempts: 3\n", "  max_attempts: 99999999999999999999999\n", 1),
                          "quá lớn")):
        for action in ("check", "load"):
            page = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "action": action},
                              files={"file": ("kh-64-tu-binh-phuoc.yaml", broken.encode())})
            assert page.status_code == 400 and said in page.text, (action, page.status_code)


def test_members_are_told_the_console_is_not_for_them_and_get_no_link(chat):
    link_reply = chat.say("console-DV002", "/quantri")  # not linked yet
    assert "/quantri/vao/" not in link_reply
    chat.login_link("CB002")  # link someone so the chat id exists
    from sqlalchemy import select

    from bot.services.linking import create_invites
    from bot.storage.models import Member
    from bot.timeutil import utcnow

    with chat.db.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV002"))
        code = create_invites(s, [member], utcnow())[member.id]
    chat.say("member-DV002", f"/start {code}")
    reply = chat.say("member-DV002", "/quantri")
    assert "dành cho bí thư chi bộ" in reply and not LINK.search(reply)


def test_admin_link_prints_a_login_link_for_an_operator(cli, sample_roster, workdir):
    (workdir / "config.yaml").write_text("web:\n  public_url: https://hoctap.example.vn\n", encoding="utf-8")
    result = cli("admin", "link", "CB002")
    assert result.code == 0 and result.lines[0].startswith("https://hoctap.example.vn/quantri/vao/")
    refused = cli("admin", "link", "DV002")
    assert refused.code == 1 and "is a member" in refused.err
    assert cli("admin", "link", "NOBODY").code == 1


def test_admin_link_needs_the_public_url(cli, sample_roster):
    result = cli("admin", "link", "CB002")
    assert result.code == 1 and "web.public_url" in result.err


def test_audit_log_is_for_admins_only(chat, console_server):
    cadre = logged_in(chat, console_server, "CB002")
    assert cadre.get("/quantri/nhatky").status_code == 403
    admin = logged_in(chat, console_server, "AD001")
    page = admin.get("/quantri/nhatky")
    assert page.status_code == 200 and "Ngô Công Tâm" in page.text and "Mai Hồng Oanh" in page.text


def test_the_audit_log_names_every_action_in_vietnamese_without_doubled_words(chat, console_server, province):
    """Nhật ký shows what was done in words (never a code word like "reactivate"), and "mở" + "đợt 2: …"
    rather than "mở đợt đợt 2"."""
    from bot.storage.models import Member, Unit

    with province.session() as s:
        target = s.scalar(select(Member).where(Member.code == "DV002"))
        target.active = False
        target_id, unit = target.id, s.scalar(select(Unit.id).where(Unit.code == "DP"))
    admin = logged_in(chat, console_server, "AD001")
    token = csrf_of(admin, "/quantri/doanvien")
    assert admin.post(f"/quantri/doanvien/{target_id}/sinhhoatlai", data={"csrf": token}).status_code == 303
    assert admin.post(f"/quantri/doanvien/{target_id}/malienket", data={"csrf": token, "channel": "zalo"}).status_code == 200
    opened = admin.post("/quantri/dot/moi", data={"csrf": token, "document": "kh-83-hu-tuy-phuoc", "unit": str(unit),
                                                   "opens": "01/12/2099", "closes": "15/12/2099", "target": "98"})
    round_id = opened.headers["location"].split("/dot/")[1].split("/")[0]
    assert admin.post(f"/quantri/dot/{round_id}/dong", data={"csrf": token, "confirm": "1"}).status_code == 303
    page = html.unescape(admin.get("/quantri/nhatky").text)
    done = re.findall(r"<tr><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td><td class=\"detail\">([^<]*)</td>", page)
    assert {action for action, _ in done} >= {"vào", "cho sinh hoạt lại", "cấp mã liên kết mới", "mở", "kết thúc"}
    assert not [action for action, _ in done if re.fullmatch(r"[a-z_]+", action)], done  # no code words
    assert ("mở", f"đợt {round_id}: kh-83-hu-tuy-phuoc cho DP, mục tiêu 98%") in done
    assert any(action == "cấp mã liên kết mới" and detail.endswith("(Zalo)") for action, detail in done)
    for action, detail in done:
        words = f"{action} {detail}".split()
        assert all(a != b for a, b in zip(words, words[1:])), f"{action} {detail}"


def test_the_zalo_oa_page_is_for_admins_and_only_where_an_oa_is_configured(chat, console_server):
    """A cadre cannot see or start the OA's authorisation; on a server without an OA the page says so."""
    cadre = logged_in(chat, console_server, "CB002")
    assert cadre.get("/quantri/zalo-oa").status_code == 403
    assert cadre.post("/quantri/zalo-oa/ketnoi", data={"csrf": "x"}, follow_redirects=False).status_code == 403
    admin = logged_in(chat, console_server, "AD001")
    page = admin.get("/quantri/zalo-oa")
    assert page.status_code == 404 and "chưa cấu hình Zalo Official Account" in page.text
    assert "Zalo OA" not in admin.get("/quantri/").text  # no link to a page that is not there


def test_an_idle_session_ends_after_eight_hours(chat, console_server):
    cadre = logged_in(chat, console_server, "CB002")
    real = console_server.clock
    console_server.clock = lambda: real() + timedelta(hours=8, minutes=1)
    try:
        assert cadre.get("/quantri/").status_code == 401
    finally:
        console_server.clock = real


def test_a_session_in_use_is_not_ended_eight_hours_after_login(chat, console_server, province):
    """The browser keeps the cookie 8 hours from the last use, not from the login: a page or a form renews it
    (at most every few minutes, so most pages write nothing), and the server counts from that same use (a form
    between renewals must not move the server's count past the cookie's)."""
    from bot.storage.models import ConsoleSession

    cadre = logged_in(chat, console_server, "CB002")
    real = console_server.clock
    try:
        console_server.clock = lambda: real() + timedelta(hours=7)
        used = cadre.get("/quantri/")
        assert used.status_code == 200 and "max-age=28800" in used.headers.get("set-cookie", "").lower()
        with province.session() as s:
            seen = s.scalar(select(ConsoleSession.last_seen_at))
        console_server.clock = lambda: real() + timedelta(hours=7, minutes=1)
        again = cadre.get("/quantri/")  # a minute later: nothing to renew, nothing written
        assert again.status_code == 200 and "set-cookie" not in again.headers
        posted = cadre.post("/quantri/dot/1/giahan", data={"csrf": "sai", "closes": "31/12/2099"})
        assert posted.status_code == 403 and "set-cookie" not in posted.headers
        with province.session() as s:  # a form moves the server's count no more than its cookie's
            assert s.scalar(select(ConsoleSession.last_seen_at)) == seen
        console_server.clock = lambda: real() + timedelta(hours=14)
        assert cadre.get("/quantri/").status_code == 200  # 7 hours after the last use
        console_server.clock = lambda: real() + timedelta(hours=22, minutes=1)
        assert cadre.get("/quantri/").status_code == 401  # 8 hours without use
    finally:
        console_server.clock = real


def test_playground_web_prints_a_console_link_for_the_sample_cadre(workdir, capsys, monkeypatch):
    from bot.cli import main
    from tests.conftest import QUIZZES

    monkeypatch.setenv("HOCTAP_CONTENT_DIR", str(QUIZZES))
    (workdir / "config.yaml").write_text("web:\n  listen: 127.0.0.1:0\n", encoding="utf-8")
    script = workdir / "play.txt"
    script.write_text("/as CB002\n/quantri\n/quit\n", encoding="utf-8")
    assert main(["playground", "--web", "--script", str(script)]) == 0
    out = capsys.readouterr().out
    links = [line for line in out.splitlines() if line.startswith("http://") and "/quantri/" in line]
    # the printed link, then the one /quantri answered in chat: two different single-use links
    assert len(links) == 2 and all("/quantri/vao/" in link for link in links) and links[0] != links[1]
    assert out.index(links[0]) < out.index("--- you are")


def test_an_excel_question_sheet_is_imported_and_loaded_as_the_cli_does(chat, console_server, province):
    from bot.content.authoring import draft_from_document
    from bot.content.validate import check_paths
    from bot.content.workbook import workbook_bytes
    from bot.storage.models import Document, Member
    from tests.conftest import QUIZZES

    doc = next(d for d in check_paths([QUIZZES]).documents if d.id == "kh-83-hu-tuy-phuoc")
    draft = draft_from_document(doc)
    draft.meta["code"] = "98-KH/TU"
    cadre = logged_in(chat, console_server, "CB002")
    page = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "action": "load", "doc_id": "kh-98-excel"},
                      files={"file": ("cau-hoi.xlsx", workbook_bytes(draft))})
    assert page.status_code == 200 and "Đã nạp kh-98-excel" in page.text, page.text[-2000:]
    with province.session() as s:
        assert s.get(Document, "kh-98-excel").code == "98-KH/TU"


def test_a_question_asked_twice_in_an_excel_sheet_is_named_by_its_rows_not_by_a_file_the_organiser_never_saw(
        chat, console_server, province):
    from bot.content.authoring import DraftQuestion, draft_from_document
    from bot.content.validate import check_paths
    from bot.content.workbook import workbook_bytes
    from bot.storage.models import Document
    from tests.conftest import QUIZZES

    doc = next(d for d in check_paths([QUIZZES]).documents if d.id == "kh-83-hu-tuy-phuoc")
    draft = draft_from_document(doc)
    draft.meta["code"] = "98-KH/TU"
    first = draft.questions[0]
    draft.questions.insert(2, DraftQuestion(first.text, list(first.options), first.answer))  # sheet row 4
    cadre = logged_in(chat, console_server, "CB002")
    page = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "action": "load", "doc_id": "kh-98-excel"},
                      files={"file": ("cau-hoi.xlsx", workbook_bytes(draft))})
    text = html.unescape(page.text)
    assert page.status_code == 400
    assert ("cau-hoi.xlsx: trang tính 'Câu hỏi', dòng 4 (Câu hỏi): trùng với cau-hoi.xlsx: trang tính 'Câu hỏi', "
            "dòng 2;") in text, text[-3000:]
    assert "questions[" not in text
    assert 'value="kh-98-excel"' in page.text  # the code typed is still there, to send the file again with
    with province.session() as s:
        assert s.get(Document, "kh-98-excel") is None


def test_roster_upload_is_all_or_nothing_with_row_errors(chat, console_server, province):
    from bot.storage.models import Member

    admin = logged_in(chat, console_server, "AD001")
    bad = ("code,full_name,unit_code,phone,role\nNEW01,Nguyễn Văn Mới,DP-TT-01,0912345678,member\n"
           "NEW02,Trần Thị Sai,KHONG-CO,0912345679,member\n")
    page = admin.post("/quantri/doanvien", data={"csrf": csrf_of(admin, "/quantri/doanvien"), "kind": "members"},
                      files={"file": ("dang-vien.csv", bad.encode())})
    assert page.status_code == 400
    assert ("dang-vien.csv:3: unit_code: không có đơn vị mã 'KHONG-CO'; hãy kiểm tra lại mã hoặc nhập danh sách đơn "
            "vị trước") in html.unescape(page.text)
    with province.session() as s:
        assert s.scalar(select(Member).where(Member.code == "NEW01")) is None
    good = bad.replace("KHONG-CO", "DP-TT-01")
    page = admin.post("/quantri/doanvien", data={"csrf": csrf_of(admin, "/quantri/doanvien"), "kind": "members"},
                      files={"file": ("dang-vien.csv", good.encode())})
    assert page.status_code == 200 and "2 mới" in page.text
    cadre = logged_in(chat, console_server, "CB002")
    refused = cadre.post("/quantri/doanvien", data={"csrf": csrf_of(cadre, "/quantri/doanvien"), "kind": "members"},
                         files={"file": ("dang-vien.csv", good.encode())})
    assert refused.status_code == 403


def test_a_provinces_roster_larger_than_a_document_is_taken_and_a_larger_one_says_to_save_it_as_xlsx(
        chat, console_server, province):
    """A roster of tens of thousands of members is several MB as CSV: it is read (here its rows are refused by
    row, as any bad roster), not refused for its size; one beyond the roster limit says how to make it smaller."""
    admin = logged_in(chat, console_server, "AD001")
    rows = "".join(f"NEW{i:05d},Nguyễn Văn Mới {i},KHONG-CO,,member\n" for i in range(70_000))
    roster = ("code,full_name,unit_code,phone,role\n" + rows).encode()
    assert 3 * 1024 * 1024 < len(roster) < 16 * 1024 * 1024
    page = admin.post("/quantri/doanvien", data={"csrf": csrf_of(admin, "/quantri/doanvien"), "kind": "members"},
                      files={"file": ("dang-vien.csv", roster)}, timeout=60)  # 70,000 rows: seconds when busy
    assert page.status_code == 400 and "dang-vien.csv:2: unit_code: không có đơn vị mã 'KHONG-CO'" in html.unescape(page.text)
    huge = roster + rows.encode() * 4  # over 16 MB
    page = admin.post("/quantri/doanvien", data={"csrf": csrf_of(admin, "/quantri/doanvien"), "kind": "members"},
                      files={"file": ("dang-vien.csv", huge)}, timeout=60)
    assert page.status_code == 413 and "tối đa 16 MB" in page.text and "dạng .xlsx" in html.unescape(page.text)


def test_member_search_shows_phones_only_as_the_chat_would(chat, console_server):
    secretary = logged_in(chat, console_server, "DV001")
    own = secretary.get("/quantri/doanvien", params={"q": "DV002"}).text
    assert "Đinh Văn Sơn" in own and "<td>0333 378 379</td>" in own  # written as it is dialled, not +84…
    other = secretary.get("/quantri/doanvien", params={"q": "DV011"}).text
    assert "Phan Ngọc Linh" not in other  # another branch: not found at all
    cadre = logged_in(chat, console_server, "CB002")
    page = cadre.get("/quantri/doanvien", params={"q": "DV001"}).text
    assert "Vũ Thị Hằng" in page and not re.search(r"\+84|0\d{3} \d{3} \d{3}", page)  # a cadre sees no phones
    assert "<th>Điện thoại</th>" not in page  # nor an empty column pushing the buttons off a phone's screen


def test_members_are_found_by_phone_as_people_write_it_but_never_by_a_phone_the_viewer_may_not_see(chat,
                                                                                                 console_server):
    secretary = logged_in(chat, console_server, "DV001")
    for written in ("0333378379", "0333 378 379", "+84 333 378 379", "378379"):
        assert "Đinh Văn Sơn" in secretary.get("/quantri/doanvien", params={"q": written}).text, written
    cadre = logged_in(chat, console_server, "CB002")  # sees DV001 by name, never by the phone it cannot see
    assert "Vũ Thị Hằng" in cadre.get("/quantri/doanvien", params={"q": "Vũ Thị Hằng"}).text
    for guess in ("+8476677734", "0766777340", "0766"):
        assert "Vũ Thị Hằng" not in cadre.get("/quantri/doanvien", params={"q": guess}).text, guess


def test_deactivate_only_within_reach(chat, console_server, province):
    from bot.storage.models import Member

    with province.session() as s:
        own = s.scalar(select(Member).where(Member.code == "DV002")).id
        other = s.scalar(select(Member).where(Member.code == "DV012")).id
    secretary = logged_in(chat, console_server, "DV001")
    token = csrf_of(secretary, "/quantri/doanvien")
    assert secretary.post(f"/quantri/doanvien/{other}/ngung", data={"csrf": token, "confirm": "1"}).status_code == 403
    asked = secretary.post(f"/quantri/doanvien/{own}/ngung", data={"csrf": token})
    assert asked.status_code == 200 and "Ngừng sinh hoạt?" in asked.text and "Đinh Văn Sơn" in asked.text
    with province.session() as s:
        assert s.get(Member, own).active is True  # asked, not done
    assert secretary.post(f"/quantri/doanvien/{own}/ngung", data={"csrf": token, "confirm": "1"}).status_code == 303
    with province.session() as s:
        assert s.get(Member, own).active is False and s.get(Member, other).active is True
    # a mistake is undone from the same page, within the same reach
    page = secretary.get("/quantri/doanvien", params={"q": "DV002"}).text
    assert f"/quantri/doanvien/{own}/sinhhoatlai" in page
    assert secretary.post(f"/quantri/doanvien/{other}/sinhhoatlai", data={"csrf": token}).status_code == 403
    assert secretary.post(f"/quantri/doanvien/{own}/sinhhoatlai", data={"csrf": token}).status_code == 303
    with province.session() as s:
        assert s.get(Member, own).active is True


def test_invitation_sheet_per_branch_as_xlsx(chat, console_server, province):
    import io

    from openpyxl import load_workbook

    from bot.storage.models import Unit

    with province.session() as s:
        own = s.scalar(select(Unit).where(Unit.code == "DP-TT-01")).id
        other = s.scalar(select(Unit).where(Unit.code == "DP-TT-02")).id
    secretary = logged_in(chat, console_server, "DV001")
    token = csrf_of(secretary, "/quantri/doanvien")
    sheet = secretary.post("/quantri/doanvien/thumoi.xlsx", data={"csrf": token, "unit": str(own), "channel": "zalo"})
    assert sheet.status_code == 200 and "thumoi-zalo-DP-TT-01.xlsx" in sheet.headers["content-disposition"]
    rows = list(load_workbook(io.BytesIO(sheet.content)).active.values)
    assert rows[0][:5] == ("Mã đảng viên", "Họ và tên", "Mã đơn vị", "Số điện thoại", "Mã liên kết")
    assert {r[2] for r in rows[1:]} == {"DP-TT-01"} and len(rows) > 2
    link = secretary.post("/quantri/doanvien/thumoi.xlsx", data={"csrf": token, "unit": str(own)})
    assert "https://t.me/hoctap_test_bot?start=" in str(list(load_workbook(io.BytesIO(link.content)).active.values)[1])
    refused = secretary.post("/quantri/doanvien/thumoi.xlsx", data={"csrf": token, "unit": str(other)})
    assert refused.status_code == 403


def test_a_console_page_waiting_for_the_database_does_not_hold_up_the_rest_of_the_server(chat, console_server,
                                                                                         province):
    """The console shares the process's web server with the chat webhooks: a page waiting on the
    database (a long write elsewhere, a province's roll-up) must not stop the server answering others."""
    import threading
    import time

    cadre = logged_in(chat, console_server, "CB002")
    page: list[httpx.Response] = []
    with a_long_write(province):
        reader = threading.Thread(target=lambda: page.append(cadre.get("/quantri/", timeout=60)))
        reader.start()
        time.sleep(0.5)  # the page is now waiting for the database
        started = time.perf_counter()
        health = httpx.get(f"{console_server.url}/healthz", timeout=30)
        took = time.perf_counter() - started
    reader.join(60)
    assert health.status_code == 200 and took < 3, f"the server waited {took:.1f}s behind a console page"
    assert page and page[0].status_code == 200 and "quantri" in page[0].text


def test_a_members_answer_is_not_held_up_while_a_console_page_reads(chat, console_server, province):
    """A console page reads (a province's report reads for seconds) without holding SQLite's one write lock,
    so a member's answer written meanwhile goes through at once instead of waiting for the page."""
    import threading
    import time

    from sqlalchemy import event, update

    from bot.storage.models import Member

    admin = logged_in(chat, console_server, "AD001")
    reading, release = threading.Event(), threading.Event()

    def slow_read(conn, cursor, statement, parameters, context, executemany):
        # the audit page's read, held open until the write below is done (or 10 s)
        if statement.lstrip().upper().startswith("SELECT") and "FROM console_audit" in statement \
                and not reading.is_set():
            reading.set()
            release.wait(10)

    event.listen(province.engine, "before_cursor_execute", slow_read)
    try:
        page: list[httpx.Response] = []
        reader = threading.Thread(target=lambda: page.append(admin.get("/quantri/nhatky", timeout=60)))
        reader.start()
        assert reading.wait(10), "the audit page did not read"
        took: list[float] = []

        def answer():  # a write the size of a member's answer, from the same process as the console
            started = time.perf_counter()
            with province.session() as s:
                s.execute(update(Member).where(Member.code == "DV001").values(full_name=Member.full_name))
            took.append(time.perf_counter() - started)

        writer = threading.Thread(target=answer)
        writer.start()
        writer.join(3)
        done = bool(took)
        release.set()
        writer.join(60)
        reader.join(60)
    finally:
        release.set()
        event.remove(province.engine, "before_cursor_execute", slow_read)
    assert done, f"the write waited {took[0] if took else 'over 3'} s for a console page that only reads"
    assert page and page[0].status_code == 200 and "Nhật ký" in page[0].text


def test_zalo_invitation_sheet_names_each_members_own_branch_bot_and_its_share_link(chat, console_server, province):
    """A cadre downloads the Zalo invitations of a commune where ấp 1 has its own bot: ấp 1's members
    get that bot's name and share link, the other ấp's members the default bot's."""
    import io

    from openpyxl import load_workbook

    from bot.storage.models import Unit, ZaloBot
    from bot.timeutil import utcnow

    with province.session() as s:
        commune = s.scalar(select(Unit).where(Unit.code == "DP-TT")).id
        ap1 = s.scalar(select(Unit).where(Unit.code == "DP-TT-01")).id
        s.add(ZaloBot(zalo_id="2000000001", unit_id=ap1, name="Chi bo Ap 1", token="2000000001:x",
                      webhook_secret="s" * 16, mode="webhook", share_link="https://zalo.me/s/ap1", created_at=utcnow()))
    cadre = logged_in(chat, console_server, "CB002")
    token = csrf_of(cadre, "/quantri/doanvien")
    sheet = cadre.post("/quantri/doanvien/thumoi.xlsx", data={"csrf": token, "unit": str(commune), "channel": "zalo"})
    assert sheet.status_code == 200
    rows = list(load_workbook(io.BytesIO(sheet.content)).active.values)
    header, by_code = rows[0], {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert header[-1] == "Bot Zalo"
    assert (by_code["DV002"]["Bot Zalo"], by_code["DV002"]["Đường dẫn bot Zalo"]) == ("Chi bo Ap 1", "https://zalo.me/s/ap1")
    assert "mở https://zalo.me/s/ap1 (hoặc tìm bot «Chi bo Ap 1» trên Zalo)" in by_code["DV002"]["Lời nhắn"]
    assert not by_code["DV011"]["Bot Zalo"]  # ấp 2 has no bot of its own: the default bot
    assert "bot học tập" in by_code["DV011"]["Lời nhắn"]


def test_a_report_of_a_document_whose_code_has_diacritics_downloads_under_its_own_name(chat, console_server,
                                                                                       province):
    import io
    from urllib.parse import unquote

    from openpyxl import load_workbook

    from bot.storage.models import Document, Member

    with province.session() as s:
        s.get(Document, "kh-64-tu-binh-phuoc").code = "05-NQ/ĐU"  # Đảng ủy: a common code
        unit = s.scalar(select(Member).where(Member.code == "CB002")).unit_id
    cadre = logged_in(chat, console_server, "CB002")
    report = cadre.get(f"/quantri/dot/1/donvi/{unit}/baocao.xlsx")
    assert report.status_code == 200
    disposition = report.headers["content-disposition"]
    assert 'filename="baocao-05-NQ-DU-' in disposition  # what an old client saves it as
    assert "baocao-05-NQ-ĐU-" in unquote(disposition.split("filename*=UTF-8''")[1])
    assert load_workbook(io.BytesIO(report.content)).sheetnames


def test_reactivating_a_member_whose_phone_is_now_anothers_names_the_number_only_to_who_may_see_it(
        chat, console_server, province):
    from bot.storage.models import Member

    with province.session() as s:
        dv002 = s.scalar(select(Member).where(Member.code == "DV002"))
        dv002.active, phone, target = False, dv002.phone, dv002.id
        s.scalar(select(Member).where(Member.code == "DV003")).phone = phone  # the number went to DV003 since
    for code, shown in (("CB002", False), ("DV001", True)):
        viewer = logged_in(chat, console_server, code)
        page = viewer.post(f"/quantri/doanvien/{target}/sinhhoatlai", data={"csrf": csrf_of(viewer, "/quantri/doanvien")})
        text = html.unescape(page.text)
        assert page.status_code == 400 and "đang là số của một đảng viên khác" in text, code
        assert (display_phone(phone) in text) is shown, code


def test_a_secretary_gives_a_member_who_lost_their_phone_a_code_that_moves_the_link(chat, console_server, province):
    import re

    from bot.storage.models import ConsoleAudit, Member

    from bot.services.linking import create_invites

    with province.session() as s:
        ids = {c: s.scalar(select(Member.id).where(Member.code == c)) for c in ("DV002", "DV012", "CB002")}
        first = create_invites(s, [s.get(Member, ids["DV002"])], utcnow())[ids["DV002"]]
    assert "Liên kết thành công" in chat.say("old-phone", f"/start {first}")
    secretary = logged_in(chat, console_server, "DV001")
    token = csrf_of(secretary, "/quantri/doanvien")
    assert "/malienket" in secretary.get("/quantri/doanvien", params={"q": "DV002"}).text
    page = secretary.post(f"/quantri/doanvien/{ids['DV002']}/malienket", data={"csrf": token, "channel": "telegram"})
    assert page.status_code == 200 and "Mã liên kết mới" in page.text and "Đinh Văn Sơn" in page.text
    code = re.search(r"https://t\.me/hoctap_test_bot\?start=([A-Za-z0-9_-]+)", page.text).group(1)
    assert "Liên kết thành công" in chat.say("new-phone", f"/start {code}")
    assert "chưa liên kết" in chat.say("old-phone", "/hoc")  # the old phone sees nothing of theirs now
    with province.session() as s:
        assert s.scalar(select(ConsoleAudit.action).order_by(ConsoleAudit.id.desc())) == "relink"
    # another branch's member, and a cadre above the secretary: refused, nothing made
    for target in ("DV012", "CB002"):
        refused = secretary.post(f"/quantri/doanvien/{ids[target]}/malienket", data={"csrf": token, "channel": "zalo"})
        assert refused.status_code == 403, target


def test_a_cadre_cannot_stop_the_admin_or_a_fellow_cadre_but_can_stop_a_secretary(chat, console_server, province):
    from bot.storage.models import Member

    with province.session() as s:
        ids = {code: s.scalar(select(Member.id).where(Member.code == code)) for code in ("AD001", "CB002", "DV001")}
    cadre = logged_in(chat, console_server, "CB001")  # the province's cadre: every unit is within reach
    token = csrf_of(cadre, "/quantri/doanvien")
    for code in ("AD001", "CB002"):
        refused = cadre.post(f"/quantri/doanvien/{ids[code]}/ngung", data={"csrf": token, "confirm": "1"})
        assert refused.status_code == 403 and "vai trò cao hơn" in refused.text, code
    assert cadre.post(f"/quantri/doanvien/{ids['DV001']}/ngung", data={"csrf": token, "confirm": "1"}).status_code == 303
    with province.session() as s:
        assert [s.get(Member, ids[c]).active for c in ("AD001", "CB002", "DV001")] == [True, True, False]


def test_a_reminder_from_the_console_keeps_to_the_zalo_quota_as_the_chats_does(chat, province):
    """The branch's members are on Zalo and three messages are left this month: the console's "Nhắc nhở", like
    /nhacnho, sends none of the nine and says why."""
    from bot.channels.zalo import ZaloQuota
    from bot.storage.models import ChatAccount, Member, OutboxMessage, Unit
    from bot.timeutil import utcnow
    from tests.console_browser import Server

    with province.session() as s:
        branch = s.scalar(select(Unit.id).where(Unit.code == "DP-TT-01"))
        for member in s.scalars(select(Member).where(Member.unit_id == branch, Member.code != "DV001")):
            s.add(ChatAccount(channel="zalo", external_id=f"z{member.id}", member_id=member.id, linked_at=utcnow()))
    server = Server(province, budget=ZaloQuota(province, 3, TZ)).start()
    try:
        secretary = logged_in(chat, server, "DV001")
        done = secretary.post("/quantri/nhacnho", data={"csrf": csrf_of(secretary)})
    finally:
        server.stop()
    assert done.status_code == 200 and "chưa gửi: cần 9 tin nhắn Zalo" in html.unescape(done.text)
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_the_open_round_form_posted_twice_opens_one_round(chat, console_server, province):
    before = rounds_opened(province)
    cadre, form = round_form(chat, console_server, province)
    first = cadre.post("/quantri/dot/moi", data=form)
    again = cadre.post("/quantri/dot/moi", data=form)  # a double click, or the back button and send again
    assert first.status_code == again.status_code == 303
    assert again.headers["location"] == first.headers["location"]
    assert rounds_opened(province) == before + 1
    later = cadre.post("/quantri/dot/moi", data={**form, "opens": "16/12/2099", "closes": "30/12/2099"})
    assert later.status_code == 303 and later.headers["location"] != first.headers["location"]  # a round after it


def test_a_second_round_of_a_document_running_for_the_same_members_is_refused(chat, console_server, province):
    """Members would see the document twice, be reminded twice, and stay "not done" in one round after finishing
    the other: a cadre is sent to extend the running round instead."""
    from bot.storage.models import Unit

    cadre, form = round_form(chat, console_server, province)
    assert cadre.post("/quantri/dot/moi", data=form).status_code == 303
    before = rounds_opened(province)
    with province.session() as s:
        branch = s.scalar(select(Unit.id).where(Unit.code == "DP-TT-01"))  # a branch inside DP
    for overlapping in ({"closes": "20/12/2099"}, {"unit": str(branch), "opens": "10/12/2099", "closes": "31/12/2099"}):
        page = cadre.post("/quantri/dot/moi", data={**form, **overlapping})
        text = html.unescape(page.text)
        assert page.status_code == 400 and "trùng thời gian với đợt này cho cùng đảng viên" in text, overlapping
        assert "hãy gia hạn đợt đó" in text
    assert rounds_opened(province) == before


def test_the_open_round_form_sent_again_after_the_round_was_extended_opens_nothing_new(chat, console_server,
                                                                                      province):
    """Opened, then given a later deadline ("Gia hạn"), then the back button and the first form sent again:
    still the one round (its members are not announced a second round of the same document)."""
    from bot.storage.models import Round

    before = rounds_opened(province)
    cadre, form = round_form(chat, console_server, province)
    first = cadre.post("/quantri/dot/moi", data=form)
    round_page = first.headers["location"]
    round_id = int(round_page.split("/dot/")[1].split("/")[0])
    extended = cadre.post(f"/quantri/dot/{round_id}/giahan", data={"csrf": csrf_of(cadre, round_page),
                                                                   "closes": "20/12/2099"})
    assert extended.status_code == 303
    again = cadre.post("/quantri/dot/moi", data=form)
    assert again.status_code == 303 and again.headers["location"] == round_page
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Round)) == before + 1
        assert s.get(Round, round_id).closes_at.astimezone(TZ).strftime("%d/%m/%Y") == "20/12/2099"


def test_a_round_form_naming_a_document_not_loaded_says_where_to_load_it_in_the_browser(chat, console_server,
                                                                                         province):
    """A stale form (the document was replaced meanwhile) or a forged one: the page points to the console's own
    documents page, not to a command organisers cannot run."""
    rounds = rounds_opened(province)
    cadre, form = round_form(chat, console_server, province, document="nq-khong-co")
    answer = cadre.post("/quantri/dot/moi", data=form)
    text = html.unescape(answer.text)
    assert answer.status_code == 400 and "chưa nạp văn bản 'nq-khong-co'" in text
    assert "hãy nạp văn bản ở trang «Văn bản» trước" in text and "hoctap" not in text.split("<body")[-1]
    assert rounds_opened(province) == rounds


def aiken(count: int) -> bytes:
    return "\n".join(f"Câu hỏi mới số {i}: chi bộ sinh hoạt mấy lần mỗi tháng?\nA. Một lần\nB. Hai lần\n"
                     f"C. Ba lần\nANSWER: A\n" for i in range(1, count + 1)).encode()


def test_aiken_questions_replace_a_loaded_documents_questions_and_keep_the_rest(chat, console_server, province):
    from bot.storage.models import Document, Question
    from tests.test_languages import KM, translate

    translate(province, reviewed_by="Ban Tuyên giáo")
    with province.session() as s:
        before = s.get(Document, "kh-64-tu-binh-phuoc")
        title, summary = before.title, before.summary
    cadre = logged_in(chat, console_server, "CB001")  # the province's cadre: round 1 covers DP and HQ
    page = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "action": "load",
                                               "doc_id": "kh-64-tu-binh-phuoc"},
                      files={"file": ("cau-hoi.txt", aiken(12))})
    assert page.status_code == 200 and "Đã nạp kh-64-tu-binh-phuoc" in page.text, page.text[-2000:]
    with province.session() as s:
        doc = s.get(Document, "kh-64-tu-binh-phuoc")
        current = s.scalars(select(Question.text).where(Question.document_id == doc.id,
                                                        Question.current.is_(True))).all()
        assert (doc.title, doc.summary) == (title, summary)
        assert doc.translations["km"]["summary"] == KM["summary"]  # the translation stays too
    assert len(current) == 12 and all(t.startswith("Câu hỏi mới số") for t in current)
    few = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "action": "load",
                                              "doc_id": "kh-64-tu-binh-phuoc"}, files={"file": ("it.txt", aiken(2))})
    text = html.unescape(few.text)  # ten questions an attempt, two in the file: said in the template's words
    assert few.status_code == 400 and "Số câu mỗi lần làm: 10 nhiều hơn số câu hỏi hiện có (2 câu)" in text
    assert "dòng «Số câu mỗi lần làm»" in text and "quiz.questions_per_attempt" not in text
    new = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "action": "load", "doc_id": "nq-moi"},
                     files={"file": ("cau-hoi.txt", aiken(12))})
    assert new.status_code == 400 and "Tệp chỉ có câu hỏi" in new.text and "code: đang để trống" not in new.text
    with province.session() as s:
        assert s.get(Document, "nq-moi") is None


def test_a_cadre_cannot_replace_the_quiz_of_a_round_that_reaches_beyond_their_units(chat, console_server, province):
    """Round 1 (document kh-64) covers DP and HQ; CB002 answers for DP only: loading over kh-64 would change
    HQ's quiz too. Refused in Vietnamese, naming the round; nothing is loaded. A new document is fine."""
    from bot.storage.models import Question

    with province.session() as s:
        before = sorted(s.scalars(select(Question.id).where(Question.document_id == "kh-64-tu-binh-phuoc",
                                                            Question.current)))
    cadre = logged_in(chat, console_server, "CB002")
    page = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "action": "load",
                                               "doc_id": "kh-64-tu-binh-phuoc"},
                      files={"file": ("cau-hoi.txt", aiken(12))})
    assert page.status_code == 403 and "đợt học tập số 1" in page.text and "ngoài phạm vi" in page.text
    with province.session() as s:
        assert sorted(s.scalars(select(Question.id).where(Question.document_id == "kh-64-tu-binh-phuoc",
                                                          Question.current))) == before
    checked = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre), "doc_id": "kh-64-tu-binh-phuoc"},
                         files={"file": ("cau-hoi.txt", aiken(12))})
    assert checked.status_code == 200  # checking and previewing changes nothing: allowed


def test_a_round_form_with_the_same_dates_and_units_but_another_target_opens_nothing_and_says_which_round(
        chat, console_server, province):
    from bot.storage.models import Round, Unit

    with province.session() as s:
        unit = s.scalar(select(Unit.id).where(Unit.code == "DP"))
    cadre, form = round_form(chat, console_server, province, target="97,5%")
    first = cadre.post("/quantri/dot/moi", data=form)
    assert first.status_code == 303
    with province.session() as s:
        rounds = s.scalar(select(func.count()).select_from(Round))
        opened = s.scalars(select(Round).order_by(Round.id.desc())).first()
    assert opened.target_rate == 97.5
    other = cadre.post("/quantri/dot/moi", data={**form, "target": "90"})
    text = html.unescape(other.text)
    assert other.status_code == 400 and f"Đã có đợt học tập số {opened.id}" in text and "mục tiêu 97,5%" in text
    assert f'id="unit-DP" checked' in other.text  # the units ticked stay ticked
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Round)) == rounds
    overview = html.unescape(cadre.get("/quantri/").text)  # a round opening later is listed, with its page
    assert "Đợt sắp mở" in overview and f"/quantri/dot/{opened.id}/donvi/{unit}" in overview
    assert "01/12/2099" in overview and "mục tiêu 97,5%" in overview


def test_a_province_wide_round_opening_later_is_listed_for_the_cadres_and_secretaries_below(chat, console_server,
                                                                                             province):
    from bot.storage.models import Round, Unit

    with province.session() as s:
        ids = dict(s.execute(select(Unit.code, Unit.id).where(Unit.code.in_(("BP", "DP", "DP-TT-01")))).all())
    _, form = round_form(chat, console_server, province, unit=str(ids["BP"]))  # the form, sent by the admin
    admin = logged_in(chat, console_server, "AD001")
    assert admin.post("/quantri/dot/moi", data={**form, "csrf": csrf_of(admin, "/quantri/dot/moi")}).status_code == 303
    with province.session() as s:
        opened = s.scalars(select(Round).order_by(Round.id.desc())).first().id
    for code, unit in (("CB002", "DP"), ("DV001", "DP-TT-01")):
        viewer = logged_in(chat, console_server, code)
        overview = html.unescape(viewer.get("/quantri/").text)
        page = f"/quantri/dot/{opened}/donvi/{ids[unit]}"
        assert "Đợt sắp mở" in overview and page in overview, code
        assert viewer.get(page).status_code == 200, code


@pytest.mark.parametrize("opens, closes, message", [
    ("01/01/2020", "15/01/2027", "Ngày mở 01/01/2020 đã qua hơn 7 ngày; hãy kiểm tra lại ngày và năm"),
    ("01/12/2099", "15/12/2100", "Hạn cuối 15/12/2100 cách ngày mở 01/12/2099 hơn một năm"),
], ids=["opens-years-back", "closes-a-year-on"])
def test_a_year_typed_wrong_is_refused_with_the_dates_as_read(chat, console_server, province, opens, closes, message):
    before = rounds_opened(province)
    cadre, form = round_form(chat, console_server, province, opens=opens, closes=closes)
    page = cadre.post("/quantri/dot/moi", data=form)
    assert page.status_code == 400 and message in html.unescape(page.text)
    assert rounds_opened(province) == before


def test_a_deadline_extended_by_a_year_typed_wrong_is_refused(chat, console_server, province):
    from bot.storage.models import Round

    cadre = logged_in(chat, console_server, "CB001")
    with province.session() as s:
        opens = s.get(Round, 1).opens_at
    far = (opens + timedelta(days=400)).astimezone(TZ).strftime("%d/%m/%Y")
    page = cadre.post("/quantri/dot/1/giahan", data={"csrf": csrf_of(cadre), "closes": far})
    assert page.status_code == 400 and "hơn một năm" in html.unescape(page.text)


@pytest.mark.parametrize("opens, closes, target", [("01/01/0001", "15/12/2099", "98"), ("01/12/2099", "31/12/9999", "98"),
                                                   ("01/12/2099", "15/12/2099", "0,5"), ("01/12/2099", "15/12/2099", "1_0")])
def test_dates_and_targets_out_of_range_are_refused_in_vietnamese_and_open_nothing(chat, console_server, province,
                                                                                     opens, closes, target):
    from bot.storage.models import Round, Unit

    with province.session() as s:
        unit = s.scalar(select(Unit.id).where(Unit.code == "DP"))
        rounds = s.scalar(select(func.count()).select_from(Round))
    cadre = logged_in(chat, console_server, "CB002")
    page = cadre.post("/quantri/dot/moi", data={"csrf": csrf_of(cadre, "/quantri/dot/moi"), "document":
                                                "kh-83-hu-tuy-phuoc", "unit": str(unit), "opens": opens,
                                                "closes": closes, "target": target})
    assert page.status_code == 400 and ("từ năm 2000 đến 2100" in page.text or "Mục tiêu" in page.text)
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Round)) == rounds


def test_a_form_with_too_many_fields_is_refused_in_vietnamese(chat, console_server):
    cadre = logged_in(chat, console_server, "CB002")
    page = cadre.post("/quantri/dot/moi", data={"csrf": csrf_of(cadre, "/quantri/dot/moi"),
                                                **{f"f{i}": "x" for i in range(300)}})
    assert page.status_code == 400 and "Biểu mẫu không hợp lệ" in page.text and "Too many" not in page.text


def test_a_full_member_list_asks_before_stopping_anyone_and_never_stops_everyone_or_the_uploader(
        chat, console_server, province):
    from bot.storage.models import Member

    with province.session() as s:
        everyone = s.scalars(select(Member).where(Member.active)).all()
        rows = [f"{m.code},{m.full_name},{m.unit.code},{m.phone or ''},{m.role}" for m in everyone]
        active = len(everyone)
    header = "code,full_name,unit_code,phone,role\n"
    admin = logged_in(chat, console_server, "AD001")

    def upload(body: str, **more):
        return admin.post("/quantri/doanvien", data={"csrf": csrf_of(admin, "/quantri/doanvien"), "kind": "members",
                                                     "full": "1", **more}, files={"file": ("ds.csv", body.encode())})

    def still_active():
        with province.session() as s:
            return s.scalar(select(func.count()).select_from(Member).where(Member.active))

    empty = upload(header)
    assert empty.status_code == 400 and "không có đảng viên nào" in empty.text and still_active() == active
    without_me = upload(header + "\n".join(r for r in rows if not r.startswith("AD001,")) + "\n")
    assert without_me.status_code == 400 and "không có chính đồng chí (AD001)" in without_me.text
    assert still_active() == active
    two_fewer = [r for r in rows if not r.startswith(("DV011,", "DV012,"))]
    asked = upload(header + "\n".join(two_fewer) + "\n")
    text = html.unescape(asked.text)
    assert asked.status_code == 200 and "sẽ ngừng sinh hoạt 2 đồng chí" in text and "DV011" in text
    token = asked.text.split('name="confirm" value="')[1].split('"')[0]
    assert token.startswith("2:") and still_active() == active  # nothing yet
    other = [r for r in rows if not r.startswith(("DV011,", "DV013,"))]  # another file stopping as many
    assert "Chưa nạp gì" in upload(header + "\n".join(other) + "\n", confirm=token).text
    assert still_active() == active
    done = upload(header + "\n".join(two_fewer) + "\n", confirm=token)
    assert done.status_code == 200 and "2 ngừng" in done.text and still_active() == active - 2
    back = admin.post("/quantri/doanvien", data={"csrf": csrf_of(admin, "/quantri/doanvien"), "kind": "members"},
                      files={"file": ("ds.csv", (header + "\n".join(rows) + "\n").encode())})
    assert back.status_code == 200 and "2 hoạt động lại" in back.text and still_active() == active


def test_an_admin_cannot_demote_themselves_by_a_roster_upload_and_stays_signed_in(chat, console_server, province):
    """The uploader's own row with a lower role would end their session at the next page (and might leave
    no admin at all): refused, nothing loaded, they ask another admin instead."""
    from bot.storage.models import Member

    with province.session() as s:
        me = s.scalar(select(Member).where(Member.code == "AD001"))
        row = f"{me.code},{me.full_name},{me.unit.code},{me.phone or ''}"
    admin = logged_in(chat, console_server, "AD001")
    for role in ("member", "cadre"):
        page = admin.post("/quantri/doanvien", data={"csrf": csrf_of(admin, "/quantri/doanvien"), "kind": "members"},
                          files={"file": ("ds.csv", f"code,full_name,unit_code,phone,role\n{row},{role}\n".encode())})
        text = html.unescape(page.text)
        assert page.status_code == 400 and "vai trò của chính đồng chí (AD001)" in text and "Chưa nạp gì" in text
        assert "Đã nạp" not in text
        with province.session() as s:
            assert s.scalar(select(Member.role).where(Member.code == "AD001")) == "admin"
            assert s.scalar(select(func.count()).select_from(Member).where(Member.role == "admin", Member.active))
    assert admin.get("/quantri/doanvien").status_code == 200  # still signed in


def test_uploads_of_any_name_are_checked_and_a_document_file_need_not_be_named_after_its_id(
        chat, console_server, province):
    from tests.conftest import QUIZZES

    admin = logged_in(chat, console_server, "AD001")
    long_name = "Danh sách đảng viên chi bộ " + "ấp Tân Tiến " * 30 + ".csv"
    page = admin.post("/quantri/doanvien", data={"csrf": csrf_of(admin, "/quantri/doanvien"), "kind": "members"},
                      files={"file": (long_name, b"code,full_name,unit_code,phone,role\nX1,,DP-TT-01,,member\n")})
    assert page.status_code == 400 and "Danh sách đảng viên chi bộ ấp Tân Tiến" in html.unescape(page.text)
    yaml_text = (QUIZZES / "kh-83-hu-tuy-phuoc.yaml").read_bytes()
    for name in ("kh-83-hu-tuy-phuoc (1).yaml", "Kế hoạch 83 " + "rất dài " * 40 + ".yaml"):
        checked = admin.post("/quantri/vanban", data={"csrf": csrf_of(admin, "/quantri/vanban")},
                             files={"file": (name, yaml_text)})
        assert checked.status_code == 200 and "khác tên tệp" not in html.unescape(checked.text), name


def test_the_invitation_sheet_shows_phones_only_to_whoever_may_see_them(chat, console_server, province):
    import io

    from openpyxl import load_workbook

    from bot.storage.models import Unit

    with province.session() as s:
        unit = s.scalar(select(Unit).where(Unit.code == "DP-TT-01")).id

    def phones(code: str) -> list:
        who = logged_in(chat, console_server, code)
        sheet = who.post("/quantri/doanvien/thumoi.xlsx", data={"csrf": csrf_of(who, "/quantri/doanvien"),
                                                               "unit": str(unit), "channel": "zalo"})
        return [row[3] for row in list(load_workbook(io.BytesIO(sheet.content)).active.values)[1:]]

    assert any(phones("DV001"))  # the branch's secretary calls them
    assert not any(phones("CB001"))  # a cadre above sees names and codes, not phones


def test_an_extension_is_logged_with_both_deadlines_in_local_time(chat, console_server, province):
    from bot.storage.models import Round, Unit

    with province.session() as s:
        unit = s.scalar(select(Unit.id).where(Unit.code == "DP"))
    cadre = logged_in(chat, console_server, "CB002")
    opened = cadre.post("/quantri/dot/moi", data={"csrf": csrf_of(cadre, "/quantri/dot/moi"), "document":
                                                  "kh-83-hu-tuy-phuoc", "unit": str(unit), "opens": "01/12/2099",
                                                  "closes": "21/12/2099 06:00", "target": "98"})
    round_id = int(opened.headers["location"].split("/")[3])
    extended = cadre.post(f"/quantri/dot/{round_id}/giahan", data={"csrf": csrf_of(cadre), "closes": "25/12/2099"})
    assert extended.status_code == 303
    admin = logged_in(chat, console_server, "AD001")
    assert f"đợt {round_id}: 21/12/2099 → 25/12/2099" in html.unescape(admin.get("/quantri/nhatky").text)


def test_the_excel_template_is_offered_in_the_console_and_problems_point_at_it_not_at_a_command(
        chat, console_server, province):
    import io

    from openpyxl import load_workbook

    cadre = logged_in(chat, console_server, "CB002")
    page = cadre.get("/quantri/vanban")
    assert 'href="/quantri/vanban/mau.xlsx"' in page.text
    sheet = cadre.get("/quantri/vanban/mau.xlsx")
    assert sheet.status_code == 200 and "mau-cau-hoi.xlsx" in sheet.headers["content-disposition"]
    assert "Câu hỏi" in load_workbook(io.BytesIO(sheet.content)).sheetnames
    empty = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre, "/quantri/vanban"), "doc_id": "nq-moi"},
                       files={"file": ("cau-hoi.txt", b"\n")})
    text = html.unescape(empty.text)
    assert empty.status_code == 400 and "không tìm thấy câu hỏi nào" in text and "Tải mẫu Excel" in text
    assert "hoctap content" not in text
    secretary = logged_in(chat, console_server, "DV001")
    assert secretary.get("/quantri/vanban/mau.xlsx").status_code == 403


def test_after_the_round_a_quiz_left_half_done_is_shown_as_left_not_under_way(chat, console_server, province):
    """The same words as the chat and the workbook: nobody should wait for it any more."""
    from bot.services.rounds import close_round
    from bot.storage.models import Attempt, Member, Unit
    from bot.timeutil import utcnow

    now = utcnow()
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV005"))
        s.add(Attempt(round_id=1, member_id=member.id, number=1, started_at=now, question_count=10))
        branch = s.scalar(select(Unit.id).where(Unit.code == "DP-TT-01"))
    secretary = logged_in(chat, console_server, "DV001")
    running = secretary.get(f"/quantri/dot/1/donvi/{branch}").text
    assert "<h2>Chưa hoàn thành (" in running and "<td>đang làm dở</td>" in running
    with province.session() as s:
        close_round(s, 1, utcnow())
    over = secretary.get(f"/quantri/dot/1/donvi/{branch}").text
    assert "<h2>Không hoàn thành (" in over and "<td>bỏ dở, chưa nộp bài</td>" in over and "đang làm dở" not in over


def test_the_not_finished_list_comes_in_pages_of_fifty_with_links_between_them(chat, console_server, province):
    """A province's list is hundreds of thousands of rows: the page shows the total and 50 at a time, with plain
    links; a page number typed wrong shows a page, not an error."""
    from bot.storage.models import Member, Unit

    with province.session() as s:
        branch = s.scalar(select(Unit.id).where(Unit.code == "DP-TT-01"))
        s.add_all(Member(code=f"MOI{i:03d}", full_name=f"Nguyễn Văn Mới {i:03d}", unit_id=branch) for i in range(120))
    secretary = logged_in(chat, console_server, "DV001")
    url = f"/quantri/dot/1/donvi/{branch}"

    def names(page: str) -> list[str]:
        body = page.split('id="not-finished"')[1].split("<tbody>")[1].split("</tbody>")[0]
        return re.findall(r"<tr><td>([^<]*)</td>", body)

    first = secretary.get(url).text
    total = int(re.search(r"Chưa hoàn thành \((\d+)\)", first).group(1))
    pages = -(-total // 50)
    assert total >= 120 and pages >= 3
    assert len(names(first)) == 50 and f"Trang 1/{pages}" in first and "Trang trước" not in first
    assert f'href="{url}?trang=2"' in first and "Trang sau" in first
    shown = []
    for number in range(1, pages + 1):
        shown += names(secretary.get(f"{url}?trang={number}").text)
    assert len(shown) == total and len(set(shown)) == total  # every member once, on one page
    last = secretary.get(f"{url}?trang={pages}").text
    assert "Trang sau" not in last and f'href="{url}?trang={pages - 1}"' in last
    for bad in ("0", "-1", "abc", "99999999999999999999", "٣"):
        page = secretary.get(f"{url}?trang={bad}")
        assert page.status_code == 200 and f"Trang 1/{pages}" in page.text and names(page.text) == names(first), bad
    beyond = secretary.get(f"{url}?trang=999999")
    assert beyond.status_code == 200 and f"Trang {pages}/{pages}" in beyond.text and names(beyond.text) == names(last)


def test_a_day_that_does_not_exist_an_arabic_digit_target_and_a_list_document_are_each_told_what_is_wrong(
        chat, console_server, province):
    """31/02 is written right but has no day: said so, not "cần dạng dd/mm/yyyy"; a target in other digits (٩٨) is
    not read as 98; a document that is a YAML list is named as the whole file, not an empty field."""
    cadre, form = round_form(chat, console_server, province, closes="31/02/2099")
    before = rounds_opened(province)
    page = html.unescape(cadre.post("/quantri/dot/moi", data=form).text)
    assert "Hạn cuối: không có ngày 31/02/2099: tháng 2 năm 2099 chỉ có 28 ngày" in page and "dạng dd/mm/yyyy" not in page
    page = html.unescape(cadre.post("/quantri/dot/moi", data={**form, "closes": "15/13/2099"}).text)
    assert "không có tháng 13" in page
    arabic = cadre.post("/quantri/dot/moi", data={**form, "closes": "15/12/2099", "target": "٩٨"})
    assert arabic.status_code == 400 and "Mục tiêu: cần một số phần trăm" in arabic.text
    assert rounds_opened(province) == before
    admin = logged_in(chat, console_server, "AD001")
    extended = html.unescape(admin.post("/quantri/dot/1/giahan", data={"csrf": csrf_of(admin), "closes": "30/02/2028"}).text)
    assert "Hạn mới: không có ngày 30/02/2028: tháng 2 năm 2028 chỉ có 29 ngày" in extended
    listed = cadre.post("/quantri/vanban", data={"csrf": csrf_of(cadre, "/quantri/vanban"), "action": "check"},
                        files={"file": ("list.yaml", b"- id: a\n- id: b\n")})
    text = html.unescape(listed.text)
    assert listed.status_code == 400 and "list.yaml:1: file: cả tệp đang là một danh sách" in text and ": : " not in text
