"""A cadre and a secretary on Telegram: figures with drill-down buttons, the report as files."""

from __future__ import annotations

import io
import logging
import time

from openpyxl import load_workbook


def link(emulator, invite, member_code: str, user_id: int):
    user = emulator.user(user_id)
    user.send_text(f"/start {invite(member_code)}")
    user.wait_for(lambda u: "Liên kết thành công" in (u.last() or {}).get("text", ""))
    return user


def buttons(message) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [b["text"] for row in rows for b in row]


def test_cadre_drills_down_with_buttons_and_gets_the_report_files(telegram_bot, emulator, invite):
    cadre = link(emulator, invite, "CB002", 9901)
    cadre.send_text("/thongke")
    top = cadre.wait_for(lambda u: "📊" in (u.last() or {}).get("text", ""))
    assert "Đảng bộ xã Đồng Phú" in top["text"] and "0/31 — 0% (mục tiêu 98%)" in top["text"]
    cadre.press("1. Đảng bộ bộ phận Tân Tiến", message_id=top["message_id"])
    commune = cadre.wait_for(lambda u: "Đảng bộ bộ phận Tân Tiến\n" in u.last()["text"])
    assert buttons(commune)[-1] == "↑ Đảng bộ xã Đồng Phú"
    cadre.send_text("/baocao")
    cadre.wait_for(lambda u: sum(1 for m in u.messages if "file" in m) == 2, timeout=15)
    files = [m for m in cadre.messages if "file" in m]
    workbook = load_workbook(io.BytesIO(files[0]["file"].data))
    assert len(workbook.sheetnames) >= 3
    assert "photo" in files[1]


def test_secretary_reminds_and_the_reminder_waits_in_the_outbox(telegram_bot, emulator, invite, province):
    from sqlalchemy import select

    from bot.storage.models import OutboxMessage

    secretary = link(emulator, invite, "DV001", 9902)
    link(emulator, invite, "DV002", 9903)
    secretary.send_text("/nhacnho")
    text = secretary.wait_for()["text"]
    assert "đã gửi nhắc nhở tới 2 đồng chí" in text and "8 đồng chí chưa liên kết" in text
    with province.session() as s:
        keys = sorted(s.scalars(select(OutboxMessage.dedupe_key)))
    assert len(keys) == 2 and all(k.startswith("nudge:1:") for k in keys)


def test_reminding_just_after_the_round_closed_says_reminders_go_only_for_open_rounds(telegram_bot, emulator,
                                                                                       invite, province):
    """/thongke still shows a round closed minutes ago: /nhacnho names it as ended, instead of saying there is no
    round open or ended in the last 30 days, and reminds nobody."""
    from sqlalchemy import func, select

    from bot.services.rounds import close_round
    from bot.storage.models import OutboxMessage
    from bot.timeutil import utcnow

    secretary = link(emulator, invite, "DV001", 9904)
    with province.session() as s:
        close_round(s, 1, utcnow())
    secretary.send_text("/nhacnho")
    text = secretary.wait_for()["text"]
    assert "30 ngày" not in text
    assert "chỉ gửi cho đợt học tập đang mở" in text and "64-KH/TU đã kết thúc lúc" in text
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def _other_district_round(province) -> int:
    """Round 2: the other document, for HQ only (not the DP secretary's or cadre's district)."""
    from datetime import timedelta

    from bot.services.rounds import open_round
    from bot.timeutil import utcnow

    now = utcnow()
    with province.session() as s:
        return open_round(s, "kh-83-hu-tuy-phuoc", ["HQ"], now - timedelta(hours=1), now + timedelta(days=9), 95,
                          now).id


def _unit_id(province, code: str) -> int:
    from sqlalchemy import select

    from bot.storage.models import Unit

    with province.session() as s:
        return s.scalar(select(Unit.id).where(Unit.code == code))


def _press_and_read(user, data: str) -> tuple[str | None, list[str]]:
    """Forge a tap; wait until the query is answered; (its toast, texts of the bot's new messages)."""
    answered, sent = len(user.callback_answers), len(user.messages)
    user.forge_press(data)
    user.wait_for(lambda u: len(u.callback_answers) > answered)
    time.sleep(0.2)  # a reply, if any, follows the answer
    return user.callback_answers[-1]["text"], [m["text"] for m in user.messages[sent:]]


def test_forged_button_ids_beyond_the_database_range_are_refused_and_the_button_stops_spinning(
        telegram_bot, emulator, invite, province, caplog):
    secretary = link(emulator, invite, "DV001", 9904)
    secretary.send_text("/thongke")
    secretary.wait_for(lambda u: "📊" in (u.last() or {}).get("text", ""))
    own = _unit_id(province, "DP-TT-01")
    for data in ("s:1:9999999999999999999", f"s:9999999999999999999:{own}", "s:1:2147483648",
                 "c:1:9999999999999999999:1", f"c:1:{own}:99999999999999999999", "r:99999999999999999999:1",
                 "q:18446744073709551616", "a:99999999999999999999:1:0", "s:1:٣", f"c:1:{own}:+1", "s:1: 3"):
        toast, texts = _press_and_read(secretary, data)
        assert toast == "Câu hỏi này không còn hiện hành." and not texts, (data, toast, texts)
    toast, texts = _press_and_read(secretary, f"c:1:{own}:2147483647")  # the largest page: an empty page
    assert texts and "64-KH/TU" in texts[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_forged_round_of_another_district_is_refused_and_tells_nothing_about_it(
        telegram_bot, emulator, invite, province):
    other = _other_district_round(province)
    own = _unit_id(province, "DP-TT-01")
    for code, user_id, unit in (("DV001", 9905, own), ("CB002", 9906, _unit_id(province, "DP"))):
        reader = link(emulator, invite, code, user_id)
        for data in (f"s:{other}:{unit}", f"c:{other}:{unit}:1"):
            _toast, texts = _press_and_read(reader, data)
            assert texts == ["Đồng chí không có quyền xem số liệu của đơn vị này."], (code, data, texts)
        for command in ("/thongke", "/chualam", "/nhacnho", "/baocao"):
            sent = len(reader.messages)
            reader.send_text(command)
            reader.wait_for(lambda u: len(u.messages) > sent)
            if command == "/baocao" and code == "CB002":
                reader.wait_for(lambda u: any("file" in m for m in u.messages[sent:]), timeout=15)
            time.sleep(0.3)
            shown = "\n".join(m.get("text") or m.get("caption") or "" for m in reader.messages[sent:])
            assert "83-KH/HU" not in shown and "đẩy mạnh tuyên truyền" not in shown, (code, command, shown)
    admin = link(emulator, invite, "AD001", 9907)  # the round is about HQ, inside the admin's province
    _toast, texts = _press_and_read(admin, f"s:{other}:{_unit_id(province, 'BP')}")
    assert texts and "83-KH/HU" in texts[0]
