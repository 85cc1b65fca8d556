"""A cadre and a secretary on Telegram: figures with drill-down buttons, the report as files."""

from __future__ import annotations

from openpyxl import load_workbook
import io


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
