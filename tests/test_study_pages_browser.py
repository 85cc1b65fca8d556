"""The study pages in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium, as a 360x640 phone, with and without JavaScript.

Chromium resolves no host but 127.0.0.1 (``--host-resolver-rules``), and every page's resources are
checked to come from the server itself, so no request leaves the machine. A screenshot of each page
is kept under reports/screenshots/ (not committed).
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.storage.models import Answer, Attempt, AttemptQuestion, ChatAccount, Member
from bot.timeutil import utcnow
from bot.emulators.telegram import web_app_fragment
from tests.conftest import REPO, BotProcess
from tests.test_study_pages import link_member_to_telegram

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NO_BROWSER = "chromium and chromium-driver are not installed (scripts/test installs them with apt-get)"
if not (CHROMIUM and DRIVER) and os.environ.get("HOCTAP_REQUIRE_BROWSER") == "1":
    raise RuntimeError(NO_BROWSER)
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason=NO_BROWSER)
SHOTS = REPO / "reports" / "screenshots"


def phone(javascript: bool = True):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=vi",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(arg)
    if javascript:
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": 360, "height": 640,
                                                                              "pixelRatio": 2.0}})
    else:  # (chromedriver's mobile emulation cannot tap without scripts: the same screen set over CDP)
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    if not javascript:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 360, "height": 640, "deviceScaleFactor": 2, "mobile": True})
    driver.set_page_load_timeout(20)
    return driver


@pytest.fixture(scope="module")
def _chromium():
    driver = phone()
    yield driver
    driver.quit()


@pytest.fixture
def browser(_chromium):
    _chromium.delete_all_cookies()
    yield Browser(_chromium)


@pytest.fixture
def browser_without_js():
    driver = phone(javascript=False)
    yield Browser(driver, javascript=False)
    driver.quit()


class Browser:
    def __init__(self, driver, javascript: bool = True):
        self.driver, self.javascript = driver, javascript

    def open(self, url: str) -> None:
        self.driver.get(url)

    @property
    def text(self) -> str:
        if self.javascript:  # innerText in one call: no stale element while a page loads
            return self.driver.execute_script("return document.body ? document.body.innerText : ''")
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

        try:
            return self.driver.find_element("tag name", "body").text
        except StaleElementReferenceException:
            return ""
        except WebDriverException as exc:  # Chromium's way of saying the same while the next page replaces it
            if "does not belong to the document" in str(exc):
                return ""
            raise

    def tap(self, css: str, index: int = 0) -> None:
        self.driver.find_elements("css selector", css)[index].click()

    def tap_text(self, text: str) -> None:
        for el in self.driver.find_elements("css selector", "button, a"):
            if text in el.text:
                el.click()
                return
        raise AssertionError(f"nothing to tap labelled {text!r} in:\n{self.text}")

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait_text(self, fragment: str, timeout: float = 10) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout).until(lambda d: fragment in self.text,
                                                  message=f"{fragment!r} never showed")

    def assert_phone_friendly(self, base: str) -> None:
        """No request left the server; nothing is wider than the 360 px screen; targets >= 48 px."""
        d = self.driver
        resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(r.startswith(base) for r in resources), resources
        assert d.execute_script("return document.documentElement.scrollWidth") <= 360
        small = d.execute_script(
            "return [...document.querySelectorAll('button, a.big, .option')]"
            ".filter(e => e.getBoundingClientRect().height < 48).map(e => e.textContent.trim())")
        assert small == [], small


def answer_key(db, attempt_id: int) -> dict[int, int]:
    """Position -> the shown index of the right option (to answer right or wrong on purpose)."""
    with db.session() as s:
        rows = s.scalars(select(AttemptQuestion).where(AttemptQuestion.attempt_id == attempt_id)).all()
        return {aq.position: aq.option_order.index(aq.question.answer_index) for aq in rows}


def current_attempt(db, member_code: str) -> int:
    with db.session() as s:
        member_id = s.scalar(select(Member.id).where(Member.code == member_code))
        return s.scalar(select(Attempt.id).where(Attempt.member_id == member_id).order_by(Attempt.id.desc()))


def start_on_page(browser: Browser, db, member_code: str, label: str = "Làm bài kiểm tra") -> int:
    browser.tap_text(label)
    browser.wait_text("/10 ·")
    return current_attempt(db, member_code)


def answer_on_page(browser: Browser, db, attempt_id: int, positions, *, wrong=(), shots: bool = False) -> None:
    key = answer_key(db, attempt_id)
    for position in positions:
        browser.wait_text(f"Câu {position}/10")
        if shots and position == positions[0]:
            browser.assert_phone_friendly(browser.driver.current_url.split("/hoc/")[0])
            browser.shot("3-question")
        right = key[position]
        chosen = (right + 1) % 4 if position in wrong else right
        browser.tap("button.option", chosen)


def test_a_member_opens_their_link_reads_answers_every_question_and_sees_score_and_explanations(
        study_pages, browser, province):
    browser.open(study_pages.link_for("DV002"))
    assert "Kế hoạch nâng cao hiệu quả công tác tuyên truyền" in browser.text
    assert "Những điểm chính" in browser.text and "98%" in browser.text
    assert browser.driver.execute_script("return innerWidth") == 360
    browser.assert_phone_friendly(study_pages.base)
    browser.shot("2-summary")
    aid = start_on_page(browser, province, "DV002")
    answer_on_page(browser, province, aid, range(1, 11), wrong={2, 7}, shots=True)
    browser.wait_text("Kết quả bài kiểm tra")
    assert "8/10 câu đúng — 80%" in browser.text and "ĐẠT" in browser.text
    assert browser.text.count("Đáp án đúng:") == 2 and "Giải thích:" in browser.text
    assert "Câu 2:" in browser.text and "Câu 7:" in browser.text
    browser.assert_phone_friendly(study_pages.base)
    browser.shot("4-result")
    assert browser.driver.current_url.endswith(f"/hoc/bai/{aid}/ketqua")  # answers replaced the address
    browser.driver.back()  # no question comes back to be answered again
    browser.wait_text("Hạn làm bài kiểm tra")  # the summary, where the quiz was started
    assert "/10 ·" not in browser.text
    browser.driver.forward()
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.attempt_id == aid)) == 10
        attempt = s.get(Attempt, aid)
        assert attempt.submitted_at is not None and attempt.correct_count == 8
    browser.tap_text("Kết quả của tôi")
    assert "Lần 1: 8/10 câu đúng — 80%, đạt" in browser.text
    browser.shot("5-history")
    browser.tap_text("Về trang đầu")
    assert "Chào đồng chí Đinh Văn Sơn" in browser.text and "điểm cao nhất 80%" in browser.text
    browser.shot("1-home")


@pytest.fixture
def chat(province, emulator, invite):
    """DV002 on Telegram (the bot polling the emulator) beside the pages."""
    process = BotProcess(province, emulator).start()
    user = emulator.user(5002, first_name="Sơn")
    user.send_text(f"/start {invite('DV002')}")
    user.wait_for(lambda u: any("Liên kết thành công" in (m.get("text") or "") for m in u.messages))
    yield user
    process.stop()


def wait_chat(user, fragment: str) -> dict:
    user.wait_for(lambda u: bool(u.messages) and fragment in (u.messages[-1].get("text") or ""), timeout=10)
    return user.messages[-1]


def test_a_quiz_started_on_the_page_continues_in_chat_and_back_counted_once(study_pages, browser, province, chat):
    browser.open(study_pages.link_for("DV002"))
    aid = start_on_page(browser, province, "DV002")
    key = answer_key(province, aid)
    answer_on_page(browser, province, aid, range(1, 4))
    browser.wait_text("Câu 4/10")
    chat.send_text("/lambai")  # in chat: the next question, not a new attempt
    message = wait_chat(chat, "Câu 4/10")
    for position in range(4, 7):
        chat.press(f"a:{aid}:{position}:{key[position]}", message_id=message["message_id"])
        message = wait_chat(chat, f"Câu {position + 1}/10" if position < 6 else "Câu 7/10")
    browser.driver.refresh()  # back on the page: question 7
    answer_on_page(browser, province, aid, range(7, 11))
    browser.wait_text("10/10 câu đúng — 100%")
    with province.session() as s:
        member_id = s.scalar(select(Member.id).where(Member.code == "DV002"))
        assert s.scalar(select(func.count()).select_from(Attempt).where(Attempt.member_id == member_id)) == 1
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.attempt_id == aid)) == 10


def test_a_quiz_started_in_chat_continues_on_the_page(study_pages, browser, province, chat):
    chat.send_text("/lambai")
    message = wait_chat(chat, "Câu 1/10")
    aid = current_attempt(province, "DV002")
    key = answer_key(province, aid)
    chat.press(f"a:{aid}:1:{key[1]}", message_id=message["message_id"])
    wait_chat(chat, "Câu 2/10")
    browser.open(study_pages.link_for("DV002"))
    assert "đã trả lời 1/10 câu" in browser.text
    start_on_page(browser, province, "DV002", "Làm tiếp bài kiểm tra")
    answer_on_page(browser, province, aid, range(2, 11))
    browser.wait_text("10/10 câu đúng — 100%")
    chat.send_text("/ketqua")
    assert "100%" in wait_chat(chat, "Kết quả của đồng chí")["text"]


def test_expired_forged_and_other_members_links_are_refused_with_a_vietnamese_page(
        study_pages, browser, province, emulator):
    expired = study_pages.link_for("DV003", expires_at=utcnow() - timedelta(minutes=1))
    browser.open(expired)
    assert "Đường link đã hết hạn" in browser.text and "nhắn /hoc cho bot" in browser.text
    browser.shot("6-refused-expired")
    good = study_pages.link_for("DV003")
    browser.open(good[:-3] + ("xyz" if not good.endswith("xyz") else "abc"))
    assert "Đường link không hợp lệ" in browser.text
    browser.assert_phone_friendly(study_pages.base)
    browser.shot("7-refused-forged")
    # DV002's link opened as a Mini App by another Telegram user (a forwarded link): refused;
    # by DV002's own Telegram account: the summary.
    link_member_to_telegram(province, "DV002", 5002)
    mini_app = f"{study_pages.link_for('DV002')}?tg=1"
    for user_id, expected in ((6006, "Đây là đường link của đồng chí khác"), (5002, "Kế hoạch nâng cao")):
        browser.driver.delete_all_cookies()
        browser.open(f"{mini_app}#{web_app_fragment({'id': user_id, 'first_name': 'Sơn'}, emulator.token)}")
        browser.wait_text(expected)
        if user_id == 6006:
            browser.shot("8-refused-other-member")
    browser.driver.delete_all_cookies()
    browser.open(study_pages.base + "/hoc/dot/1")  # the other member's page, without their link
    assert "Cần mở từ tin nhắn của bot" in browser.text


def test_the_pages_work_without_javascript(study_pages, browser_without_js, province):
    browser = browser_without_js
    browser.open(study_pages.link_for("DV004"))
    assert "Kế hoạch nâng cao hiệu quả" in browser.text
    aid = start_on_page(browser, province, "DV004")
    answer_on_page(browser, province, aid, range(1, 11), wrong={5})
    browser.wait_text("9/10 câu đúng — 90%")
    assert "Giải thích:" in browser.text
    browser.shot("9-result-without-javascript")
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(Answer).where(Answer.attempt_id == aid)) == 10
