"""The web console in a real browser (headless Chromium, phone and desktop widths)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from selenium.webdriver.common.by import By
from sqlalchemy import select

from tests.conftest import QUIZZES, REPO
from tests.console_browser import TZ, browser, chat, console_server  # noqa: F401 - fixtures

DOCS = REPO / "docs" / "console"


def shot(driver, name: str) -> None:
    """The page fits the screen's width (no sideways scrolling on a phone); screenshots for the README's
    guide are written to docs/console when HOCTAP_SCREENSHOTS=1."""
    assert driver.execute_script("return document.documentElement.scrollWidth") <= driver.width, name
    if os.environ.get("HOCTAP_SCREENSHOTS") == "1" and driver.width == 360:
        DOCS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(DOCS / f"{name}.png"))


def press(driver, element_id: str) -> None:
    """Click a button or link that loads a new page, and wait until the new page is there."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()

    def replaced(_driver) -> bool:  # selenium's staleness_of, plus Chromium's other word for "stale"
        try:
            page.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise

    WebDriverWait(driver, 20).until(replaced)


def finish_quiz(db, member_code: str, round_id: int) -> None:
    """The member takes the quiz and answers every question right (the quiz service, as the chat does)."""
    from sqlalchemy import select

    from bot.services import quiz
    from bot.storage.models import Member, Round
    from bot.timeutil import utcnow

    with db.session() as s:
        member = s.scalar(select(Member).where(Member.code == member_code))
        position = quiz.start_or_resume(s, s.get(Round, round_id), member, utcnow())
        while position.position is not None:
            current = position.current
            shown = list(current.option_order).index(current.question.answer_index)
            position = quiz.answer(s, member.id, position.attempt.id, position.position, shown, utcnow()).quiz


def test_cadre_logs_in_by_chat_link_uploads_opens_a_round_sees_a_result_and_downloads_the_report(
        browser, chat, console_server, province, tmp_path):
    browser.get(chat.login_link("CB002"))
    shot(browser, "1-vao")
    press(browser, "enter")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Tổng quan"
    assert "64-KH/TU — Đảng bộ xã Đồng Phú" in browser.page_source
    shot(browser, "2-tong-quan")

    source = (QUIZZES / "kh-83-hu-tuy-phuoc.yaml").read_text(encoding="utf-8")
    doc = tmp_path / "kh-99-thu-nghiem.yaml"
    doc.write_text(source.replace("id: kh-83-hu-tuy-phuoc", "id: kh-99-thu-nghiem")
                   .replace('code: "83-KH/HU"', 'code: "99-KH/TU"'), encoding="utf-8")
    browser.get(console_server.url + "/quantri/vanban")
    browser.find_element(By.ID, "file").send_keys(str(doc))
    press(browser, "load")
    assert "Đã nạp kh-99-thu-nghiem" in browser.find_element(By.ID, "result").text, browser.page_source[-3000:]
    assert "Trang tóm tắt để đọc" in browser.find_element(By.ID, "preview").text
    shot(browser, "3-van-ban")

    browser.get(console_server.url + "/quantri/dot/moi?q=Tân Tiến")
    browser.find_element(By.CSS_SELECTOR, "#document option[value='kh-99-thu-nghiem']").click()
    browser.find_element(By.ID, "unit-DP-TT").click()
    today = console_server.clock().astimezone(TZ)
    browser.find_element(By.ID, "opens").send_keys(today.strftime("%d/%m/%Y"))
    browser.find_element(By.ID, "closes").send_keys((today + timedelta(days=10)).strftime("%d/%m/%Y"))
    shot(browser, "4-mo-dot")
    press(browser, "open-round")
    assert "99-KH/TU — Đảng bộ bộ phận Tân Tiến" in browser.find_element(By.TAG_NAME, "h1").text
    assert "Hoàn thành 0/" in browser.find_element(By.ID, "total").text
    round_id = int(browser.current_url.split("/dot/")[1].split("/")[0])

    finish_quiz(province, "DV002", round_id)
    browser.refresh()
    total = browser.find_element(By.ID, "total").text
    assert "Hoàn thành 1/" in total and "đạt 1" in total and "100%" in total
    not_finished = browser.find_element(By.ID, "not-finished").text
    assert "Đinh Văn Sơn" not in not_finished and "Vũ Thị Hằng" in not_finished
    assert "+84" not in not_finished  # a cadre sees no phones, as in /chualam
    shot(browser, "5-don-vi")

    browser.find_element(By.ID, "report").click()
    deadline = time.monotonic() + 20
    while not list(browser.downloads.glob("*.xlsx")) and time.monotonic() < deadline:
        time.sleep(0.2)
    files = list(browser.downloads.glob("*.xlsx"))
    assert len(files) == 1 and files[0].name.startswith("baocao-99-KH-TU-DP-TT-")
    from openpyxl import load_workbook

    assert len(load_workbook(files[0]).sheetnames) >= 2


def test_secretary_cannot_reach_another_branch_by_url(browser, chat, console_server, province):
    from sqlalchemy import select

    from bot.storage.models import Unit

    with province.session() as s:
        own = s.scalar(select(Unit).where(Unit.code == "DP-TT-01")).id
        other = s.scalar(select(Unit).where(Unit.code == "DP-TT-02")).id
    browser.get(chat.login_link("DV001"))
    press(browser, "enter")
    browser.get(f"{console_server.url}/quantri/dot/1/donvi/{own}")
    assert "0333 378 379" in browser.find_element(By.ID, "not-finished").text  # her own branch's phones, as in /chualam
    browser.get(f"{console_server.url}/quantri/dot/1/donvi/{other}")
    assert "không có quyền" in browser.find_element(By.ID, "refusal").text
    assert "Phan Ngọc Linh" not in browser.page_source
    browser.get(f"{console_server.url}/quantri/dot/1/donvi/99999999999999999999")
    assert browser.find_element(By.ID, "refusal").text == "Không tìm thấy trang này."
    browser.get(f"{console_server.url}/quantri/dot/moi")
    assert "Chỉ cán bộ phụ trách" in browser.find_element(By.ID, "refusal").text


def test_used_or_expired_login_link_is_refused(browser, chat, console_server):
    link = chat.login_link("CB002")
    browser.get(link)
    press(browser, "enter")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Tổng quan"
    browser.delete_all_cookies()
    browser.get(link)
    press(browser, "enter")
    assert "đã được dùng hoặc đã hết hạn" in browser.find_element(By.ID, "refusal").text
    browser.get(console_server.url + "/quantri/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Cần đăng nhập"

    stale = chat.login_link("CB002")
    real_clock = console_server.clock
    console_server.clock = lambda: real_clock() + timedelta(minutes=5, seconds=1)
    try:
        browser.get(stale)
        press(browser, "enter")
        assert "đã được dùng hoặc đã hết hạn" in browser.find_element(By.ID, "refusal").text
    finally:
        console_server.clock = real_clock


def test_on_a_phone_no_column_is_hidden_words_stay_whole_and_the_unit_tree_is_indented(browser, chat, console_server,
                                                                                       province):
    """Every column of a table can be reached (a wide table scrolls inside the page), header words are not cut
    mid-word, and units below another are indented in the "Mở đợt" form."""
    browser.get(chat.login_link("AD001"))
    press(browser, "enter")
    browser.get(f"{console_server.url}/quantri/doanvien?q=DV01")
    shot(browser, "members-search")
    stop = [b for b in browser.find_elements(By.CSS_SELECTOR, "#members button.danger")]
    assert stop and all(b.is_displayed() for b in stop)
    heights = {th.text: th.size["height"] for th in browser.find_elements(By.CSS_SELECTOR, "#members th")}
    assert heights["Họ và tên"] < 2 * heights["Mã"] + 1  # one line, not "Họ và t/ên"
    browser.get(f"{console_server.url}/quantri/")
    passed = [td for td in browser.find_elements(By.CSS_SELECTOR, "table td:nth-child(5)")]
    assert passed and all(td.is_displayed() for td in passed)
    browser.get(f"{console_server.url}/quantri/dot/moi")
    x = {code: browser.find_element(By.ID, f"unit-{code}").location["x"] for code in ("DP", "DP-TT", "DP-TT-01")}
    assert x["DP"] < x["DP-TT"] < x["DP-TT-01"], x


def test_a_secretary_on_a_phone_stops_a_member_after_confirming_undoes_it_and_makes_a_relink_code(
        browser, chat, console_server, province):
    """No JavaScript anywhere: each step is a page of its own that fits the screen."""
    from sqlalchemy import select

    from bot.storage.models import Member

    with province.session() as s:
        dv002 = s.scalar(select(Member.id).where(Member.code == "DV002"))
    browser.get(chat.login_link("DV001"))
    press(browser, "enter")
    browser.get(f"{console_server.url}/quantri/doanvien?q=DV002")
    shot(browser, "members-actions")
    press(browser, f"stop-{dv002}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Ngừng sinh hoạt?"
    assert "Đinh Văn Sơn" in browser.find_element(By.ID, "confirm-question").text
    shot(browser, "confirm-stop")
    press(browser, "confirm")
    assert "đã ngừng" in browser.find_element(By.ID, "members").text
    press(browser, f"restart-{dv002}")
    assert f"stop-{dv002}" in browser.page_source  # active again
    browser.find_element(By.CSS_SELECTOR, f"#relink-channel-{dv002} option[value='zalo']").click()
    press(browser, f"relink-{dv002}")
    code = browser.find_element(By.ID, "relink-code").text
    assert len(code.replace("-", "")) == 8 and "Đinh Văn Sơn" in browser.page_source
    shot(browser, "relink")


def test_an_admin_connects_the_zalo_official_account_from_the_console_without_a_shell(browser, province,
                                                                                        oa_emulator):
    """Console → "Kết nối với Zalo" → Zalo's permission page → "Cho phép" → back on our callback page, which
    stores the tokens: the whole authorisation in a browser, through ``hoctap run``'s own wiring."""
    from bot.config import SchedulerSettings, Settings, WebSettings
    from bot.storage.models import ConsoleAudit, ZaloOaAuth
    from tests.console_browser import Chat
    from tests.test_web_server import serving
    from tests.messengers import free_port
    from tests.test_zalo_oa_channel import oa_settings

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(database_url=province.url, zalo_oa=oa_settings(oa_emulator, port),
                        web=WebSettings(public_url=base, listen=f"127.0.0.1:{port}"),
                        scheduler=SchedulerSettings(tick_seconds=3600))
    with serving(settings, province):
        browser.get(Chat(province, base).login_link("AD001"))
        press(browser, "enter")
        browser.find_element(By.LINK_TEXT, "Zalo OA").click()
        assert "Chưa kết nối" in browser.find_element(By.ID, "oa-state").text
        assert browser.find_element(By.ID, "callback").text == f"{base}/zalo-oa/callback"
        shot(browser, "8-zalo-oa")
        press(browser, "connect")
        assert browser.current_url.startswith(oa_emulator.base_url + "/v4/oa/permission?")
        press(browser, "allow")
        callback = browser.current_url
        assert callback.startswith(f"{base}/zalo-oa/callback?code=")
        outcome = browser.find_element(By.ID, "outcome").text
        assert outcome.startswith("Đã kết nối.") and "code=" not in browser.page_source
        press(browser, "back")
        assert "Đã kết nối: tin nhắn qua Zalo OA đang được gửi" in browser.find_element(By.ID, "oa-state").text
        browser.get(callback)  # the same address again (a reload, a shared link): the code is spent
        assert "đã được dùng" in browser.find_element(By.ID, "outcome").text
    with province.session() as s:
        row = s.get(ZaloOaAuth, "oa")
        assert row.access_token and row.refresh_token and row.code_verifier is None
        assert row.access_token not in callback
        assert s.scalar(select(ConsoleAudit.action).where(ConsoleAudit.action == "zalo_oa_authorize"))
    assert len(oa_emulator.calls("oauth_token")) == 1
