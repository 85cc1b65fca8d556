"""Documents translated for members who read another language (Khmer, S'tiêng...): the member's
language from the roster or /ngonngu, the translation where there is one, Vietnamese otherwise."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.config import ConfigError, load_settings
from bot.outbox import queue
from bot.scheduling.due import Schedule, run_due
from bot.services.rounds import open_round
from bot.storage.models import ChatAccount, Document, Member, OutboxMessage, Round
from tests.test_chat_service import linked, service  # noqa: F401 - the fixture
from tests.test_scheduled_messages import CLOSES, OPENS, local

# placeholder texts standing for a cadre's translation (the tests check where they go, not the language)
KM = {"title": "ផែនការលេខ ៦៤", "summary": "សេចក្តីសង្ខេប (km).", "key_points": ["ចំណុចសំខាន់ (km)"]}


def translate(db, doc_id="kh-64-tu-binh-phuoc", reviewed_by=None):
    with db.session() as s:
        s.get(Document, doc_id).translations = {"km": {**KM, "reviewed_by": reviewed_by}}


def set_language(db, code, language):
    with db.session() as s:
        s.scalar(select(Member).where(Member.code == code)).language = language


def read_all(service, external_id, now):
    """Open round 1's summary and page to the end: every text the member sees."""
    texts, action = [], "r:1:1"
    while action:
        replies = service.on_action(external_id, action, now).replies
        texts += [r.text for r in replies]
        nxt = [c.action for r in replies for c in r.all_choices() if c.action.startswith("r:")]
        action = nxt[0] if nxt else None
    return "\n".join(texts)


def test_a_member_reading_khmer_sees_the_translation_marked_unreviewed(service, province):
    from bot.timeutil import utcnow

    translate(province)
    set_language(province, "DV002", "km")
    linked(service, province, "DV002", "1")
    linked(service, province, "DV003", "2")
    km = read_all(service, "1", utcnow())
    assert "🌐 Tiếng Khmer: ផែនការលេខ ៦៤\n⚠️ (bản dịch chưa được duyệt)" in km
    assert "សេចក្តីសង្ខេប (km)." in km and "• ចំណុចសំខាន់ (km)" in km
    assert "Kế hoạch số 64-KH/TU ngày 15/02/2022" not in km
    vi = read_all(service, "2", utcnow())
    assert "Kế hoạch số 64-KH/TU ngày 15/02/2022" in vi and "🌐" not in vi


def test_a_reviewed_translation_carries_no_warning(service, province):
    from bot.timeutil import utcnow

    translate(province, reviewed_by="Ban Tuyên giáo Tỉnh ủy")
    set_language(province, "DV002", "km")
    linked(service, province, "DV002", "1")
    text = read_all(service, "1", utcnow())
    assert "🌐 Tiếng Khmer" in text and "chưa được duyệt" not in text


def test_a_language_without_translation_falls_back_to_vietnamese(service, province):
    from bot.timeutil import utcnow

    set_language(province, "DV002", "km")  # no document is translated
    linked(service, province, "DV002", "1")
    text = read_all(service, "1", utcnow())
    assert "Kế hoạch số 64-KH/TU ngày 15/02/2022" in text and "🌐" not in text


def test_ngonngu_offers_the_translated_languages_and_switches(service, province):
    from bot.timeutil import utcnow

    linked(service, province, "DV002", "1")
    assert "chỉ có bản tiếng Việt" in service.on_text("1", "/ngonngu", utcnow()).replies[0].text
    translate(province)
    offer = service.on_text("1", "/ngonngu", utcnow()).replies[0]
    assert "Ngôn ngữ đọc tài liệu của đồng chí: Tiếng Việt (vi)." in offer.text
    assert [c.action for c in offer.all_choices()] == ["l:vi", "l:km"]
    unknown = service.on_text("1", "/ngonngu xx", utcnow()).replies[0].text
    assert unknown.startswith("Chưa có tài liệu nào được dịch sang 'xx'.")
    pasted = service.on_text("1", "/ngonngu " + "x" * 4090, utcnow()).replies  # not echoed back in full
    assert len(pasted) == 1 and pasted[0].text.startswith("Chưa có tài liệu nào được dịch sang '" + "x" * 20 + "…'.")
    assert len(pasted[0].text) < 500
    done = service.on_action("1", "l:km", utcnow()).replies[0].text
    assert done.startswith("Đã chọn ngôn ngữ đọc tài liệu: Tiếng Khmer (km).")
    with province.session() as s:
        assert s.scalar(select(Member.language).where(Member.code == "DV002")) == "km"
    assert "សេចក្តីសង្ខេប (km)." in read_all(service, "1", utcnow())
    service.on_text("1", "/ngonngu vi", utcnow())
    assert "🌐" not in read_all(service, "1", utcnow())


def test_announcements_name_the_members_translation(province):
    with province.session() as s:
        s.delete(s.get(Round, 1))
        s.flush()
        rnd = open_round(s, "kh-64-tu-binh-phuoc", ["DP-TT-01"], OPENS, CLOSES, 98, OPENS - timedelta(days=1))
        for m in s.scalars(select(Member).where(Member.code.in_(["DV002", "DV003"]))):
            s.add(ChatAccount(channel="telegram", external_id=str(70_000 + m.id), member_id=m.id, linked_at=OPENS))
        rid = rnd.id
    translate(province)
    set_language(province, "DV002", "km")
    report = run_due(province, local("2026-12-01 07:00"), Schedule())
    assert f"announce:{rid}: 2 message(s)" in report.jobs
    with province.session() as s:
        ids = dict(s.execute(select(Member.code, OutboxMessage.id)
                             .join(Member, Member.id == OutboxMessage.member_id)).all())
        whole = queue.payloads(s, ids.values())
        texts = {code: whole[oid] for code, oid in ids.items()}
    assert "🌐 Tiếng Khmer: ផែនការលេខ ៦៤" in texts["DV002"]["text"]
    assert "🌐" not in texts["DV003"]["text"]


def test_translations_in_a_document_file_are_checked(cli, workdir):
    from tests.test_content_check import GOOD

    good = GOOD + textwrap.dedent("""\
        translations:
          km:
            summary: "Khmer."
            reviewed_by: "Ban Tuyên giáo"
        """)
    (workdir / "nq-test.yaml").write_text(good, encoding="utf-8")
    assert cli("content", "check", "nq-test.yaml").code == 0
    bad = good.replace("  km:", "  vi:").replace("    summary: \"Khmer.\"\n", "")
    (workdir / "nq-test.yaml").write_text(bad, encoding="utf-8")
    result = cli("content", "check", "nq-test.yaml")
    assert result.code == 1
    assert result.lines == ["nq-test.yaml:25: translations.vi: 'vi' không phải mã của một ngôn ngữ khác tiếng Việt "
                            "(vi); hãy viết, ví dụ: km (tiếng Khmer), sti (tiếng S'tiêng), en (tiếng Anh)"]
    long_tag = "km" + "-binhphuo" * 7  # 65 characters: its button data would pass Telegram's 64 bytes
    (workdir / "nq-test.yaml").write_text(good.replace("  km:", f"  {long_tag}:"), encoding="utf-8")
    assert cli("content", "check", "nq-test.yaml").lines == [
        f"nq-test.yaml:25: translations.{long_tag}: '{long_tag}' không phải mã của một ngôn ngữ khác tiếng Việt "
        "(vi); hãy viết, ví dụ: km (tiếng Khmer), sti (tiếng S'tiêng), en (tiếng Anh)"]
    no_summary = good.replace("    summary: \"Khmer.\"\n", "")
    (workdir / "nq-test.yaml").write_text(no_summary, encoding="utf-8")
    assert cli("content", "check", "nq-test.yaml").lines == [
        "nq-test.yaml:26: translations.km.summary: thiếu; hãy thêm bản tóm tắt đã dịch"]


def test_the_roster_gives_each_member_a_language_and_the_setting_a_default(cli, province, workdir):
    (workdir / "config.yaml").write_text("language: km\n", encoding="utf-8")
    (workdir / "m.csv").write_text("Mã đảng viên,Họ và tên,Mã đơn vị,Số điện thoại,Vai trò,Ngôn ngữ\n"
                                   "DV002,Đinh Văn Sơn,DP-TT-01,,Đảng viên,sti\n"
                                   "DV003,Điểu Ngọc Mai,DP-TT-01,,Đảng viên,\n", encoding="utf-8")
    assert cli("members", "import", "m.csv").code == 0
    (workdir / "n.csv").write_text("member_code,full_name,unit_code,phone,role\nDV999,Người Mới,DP-TT-01,,member\n",
                                   encoding="utf-8")
    assert cli("members", "import", "n.csv").code == 0
    with province.session() as s:
        langs = dict(s.execute(select(Member.code, Member.language)
                               .where(Member.code.in_(["DV002", "DV003", "DV004", "DV999"]))).all())
    assert langs == {"DV002": "sti", "DV003": "km", "DV004": "vi", "DV999": "km"}
    (workdir / "m.csv").write_text("member_code,full_name,unit_code,phone,role,language\n"
                                   "DV002,Đinh Văn Sơn,DP-TT-01,,member,Khmer!\n", encoding="utf-8")
    result = cli("members", "import", "m.csv")
    assert result.lines == ["m.csv:2: language: 'Khmer!' không phải mã ngôn ngữ; hãy ghi mã như vi, km (tiếng Khmer), "
                            "en"]


@pytest.mark.parametrize("value, ok", [("km", True), ("sti", True), ("vi", True), ("Tiếng Việt", False)])
def test_the_language_setting_accepts_language_tags(workdir, value, ok):
    (workdir / "config.yaml").write_text(f"language: {value}\n", encoding="utf-8")
    if ok:
        assert load_settings(workdir / "config.yaml").language == value
    else:
        with pytest.raises(ConfigError, match="is not a language tag"):
            load_settings(workdir / "config.yaml")
