"""`hoctap members invite`: per-member single-use deep links that secretaries hand out."""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from zoneinfo import ZoneInfo

from openpyxl import load_workbook

from bot.services.chat import ChannelTraits, ChatService
from bot.storage.db import Database
from bot.timeutil import utcnow

LINK = re.compile(r"^https://t\.me/hoctap_bot\?start=([A-Za-z0-9_-]{16,64})$")


def test_invite_file_has_one_working_link_per_member(cli, sample_roster, db_url, workdir):
    result = cli("members", "invite", "--unit", "DP-TT-01", "--out", "links.xlsx", "--bot", "hoctap_bot")
    assert result.code == 0, result.err
    rows = list(load_workbook(workdir / "links.xlsx").active.iter_rows(values_only=True))
    assert rows[0] == ("Mã đảng viên", "Họ và tên", "Mã đơn vị", "Số điện thoại", "Đường dẫn liên kết")
    assert [r[0] for r in rows[1:]] == [f"DV{i:03d}" for i in range(1, 11)]
    codes = [LINK.match(r[4]).group(1) for r in rows[1:]]
    assert len(set(codes)) == 10

    service = ChatService(Database(db_url), ChannelTraits("telegram", 4096), ZoneInfo("Asia/Ho_Chi_Minh"))
    welcome = service.on_text("111", f"/start {codes[1]}", utcnow()).replies[0].text
    assert "Xin chào đồng chí Đinh Văn Sơn" in welcome


def test_a_new_invite_run_retires_the_old_unused_links(cli, sample_roster, db_url, workdir):
    cli("members", "invite", "--unit", "DP-TT-02", "--out", "old.csv", "--bot", "hoctap_bot")
    cli("members", "invite", "--unit", "DP-TT-02", "--out", "new.csv", "--bot", "hoctap_bot")
    read = lambda name: [LINK.match(r["Đường dẫn liên kết"]).group(1) for r in csv.DictReader((workdir / name).open(encoding="utf-8-sig"))]
    old, new = read("old.csv"), read("new.csv")
    service = ChatService(Database(db_url), ChannelTraits("telegram", 4096), ZoneInfo("Asia/Ho_Chi_Minh"))
    assert "Không tìm thấy đảng viên" in service.on_text("1", f"/start {old[0]}", utcnow()).replies[0].text
    assert "Liên kết thành công" in service.on_text("1", f"/start {new[0]}", utcnow()).replies[0].text


def test_invite_needs_the_bots_username(cli, sample_roster, workdir):
    (workdir / "config.yaml").write_text("timezone: Asia/Ho_Chi_Minh\n", encoding="utf-8")
    result = cli("members", "invite")
    assert (result.code, result.err.strip()) == (
        1, "error: the bot's username is needed for the links; pass --bot NAME or set telegram.bot_username")


FORMULA_NAMES = ['=HYPERLINK("http://x","Bấm vào đây")', "+84 Nguyễn", "-Trần", "@SUM(1)"]  # import strips tab/CR


def import_formula_named_members(cli, workdir):
    rows = "".join(f'DVX{i},"{name.replace(chr(34), chr(34) * 2)}",DP-TT-01,,member\n'
                   for i, name in enumerate(FORMULA_NAMES))
    (workdir / "extra.csv").write_text("member_code,full_name,unit_code,phone,role\n" + rows, encoding="utf-8")
    assert cli("members", "import", "extra.csv").code == 0


def test_names_that_look_like_formulas_are_text_in_the_invitation_workbook(cli, sample_roster, workdir):
    import_formula_named_members(cli, workdir)
    assert cli("members", "invite", "--unit", "DP-TT-01", "--out", "links.xlsx", "--bot", "hoctap_bot").code == 0
    ws = load_workbook(workdir / "links.xlsx").active
    names = {row[0].value: row[1] for row in ws.iter_rows(min_row=2)}
    for i, name in enumerate(FORMULA_NAMES):
        cell = names[f"DVX{i}"]
        assert (cell.value, cell.data_type, cell.quotePrefix) == (name, "s", True)
    assert names["DV001"].value == "Vũ Thị Hằng" and not names["DV001"].quotePrefix


def test_names_that_look_like_formulas_start_with_an_apostrophe_in_the_invitation_csv(cli, sample_roster, workdir):
    import_formula_named_members(cli, workdir)
    assert cli("members", "invite", "--channel", "zalo", "--unit", "DP-TT-01", "--out", "zalo.csv").code == 0
    rows = {r["Mã đảng viên"]: r for r in csv.DictReader((workdir / "zalo.csv").open(encoding="utf-8-sig", newline=""))}
    assert [rows[f"DVX{i}"]["Họ và tên"] for i in range(len(FORMULA_NAMES))] == [f"'{n}" for n in FORMULA_NAMES]
    assert rows["DV001"]["Họ và tên"] == "Vũ Thị Hằng"


def telegram_links(cli, workdir, unit: str, name: str) -> dict[str, str]:
    """A fresh invitation run for ``unit``: member code -> deep-link code."""
    assert cli("members", "invite", "--unit", unit, "--out", name, "--bot", "hoctap_bot").code == 0
    return {r["Mã đảng viên"]: LINK.match(r["Đường dẫn liên kết"]).group(1)
            for r in csv.DictReader((workdir / name).open(encoding="utf-8-sig"))}


def chat(db_url: str, channel: str = "telegram") -> ChatService:
    return ChatService(Database(db_url), ChannelTraits(channel, 4096, has_buttons=channel == "telegram"),
                       ZoneInfo("Asia/Ho_Chi_Minh"))


def test_a_member_on_a_new_account_links_it_with_a_code_made_to_replace_the_link(cli, sample_roster, db_url, workdir):
    service = chat(db_url)
    first = telegram_links(cli, workdir, "DP-TT-01", "first.csv")
    assert "Liên kết thành công" in service.on_text("1001", f"/start {first['DV002']}", utcnow()).replies[0].text
    # the phone is lost: the used link is refused, and the secretary makes a code for DV002 alone
    assert "đã được sử dụng" in service.on_text("3001", f"/start {first['DV002']}", utcnow()).replies[0].text
    made = cli("members", "relink", "DV002", "--bot", "hoctap_bot")
    assert made.code == 0, made.err
    code = LINK.match(made.lines[0]).group(1)
    welcome = service.on_text("3001", f"/start {code}", utcnow()).replies[0].text
    assert "Liên kết thành công" in welcome and "Đinh Văn Sơn" in welcome
    assert "chưa liên kết" not in service.on_text("3001", "/hoc", utcnow()).replies[0].text
    # the old account is a stranger now: it sees nothing of the member's
    assert "chưa liên kết" in service.on_text("1001", "/hoc", utcnow()).replies[0].text


def test_an_invitation_sheets_code_cannot_take_a_linked_member_over_made_before_or_after_the_link(
        cli, sample_roster, db_url, workdir):
    """A sheet printed again for two newcomers gives every member of the branch a fresh code: whoever holds it must
    not be able to take over the secretary, or anyone already linked."""
    from bot.storage.models import Member

    service = chat(db_url)
    before = telegram_links(cli, workdir, "DP-TT-01", "before.csv")
    with Database(db_url).session() as s:
        phone = s.query(Member).filter_by(code="DV002").one().phone
    assert "Liên kết thành công" in service.on_contact("1001", phone, True, utcnow()).replies[0].text
    assert "Liên kết thành công" in service.on_text("1002", f"/start {before['DV001']}", utcnow()).replies[0].text
    taken = service.on_text("6001", f"/start {before['DV002']}", utcnow()).replies[0].text  # DV002 linked by phone
    assert taken.startswith("Đảng viên này đã liên kết với một tài khoản khác.") and "mã liên kết mới" in taken
    after = telegram_links(cli, workdir, "DP-TT-01", "after.csv")
    for stranger, code in (("6002", after["DV002"]), ("6003", after["DV001"])):
        taken = service.on_text(stranger, f"/start {code}", utcnow()).replies[0].text
        assert taken.startswith("Đảng viên này đã liên kết với một tài khoản khác."), stranger
    assert "Tài khoản đã được liên kết từ trước" in service.on_text("1001", "/start", utcnow()).replies[0].text
    assert "Tài khoản đã được liên kết từ trước" in service.on_text("1002", "/start", utcnow()).replies[0].text


def test_a_refused_link_leaves_the_chat_of_a_member_who_left_as_it_was(cli, sample_roster, db_url, workdir):
    """The chat of a member taken off the roster tries a code of someone linked elsewhere: refused, and the chat
    keeps its link (the member may be put back on the roster)."""
    from bot.storage.models import ChatAccount, Member

    service = chat(db_url)
    links = telegram_links(cli, workdir, "DP-TT-01", "links.csv")
    assert "Liên kết thành công" in service.on_text("1007", f"/start {links['DV003']}", utcnow()).replies[0].text
    assert "Liên kết thành công" in service.on_text("1008", f"/start {links['DV004']}", utcnow()).replies[0].text
    with Database(db_url).session() as s:
        s.query(Member).filter_by(code="DV003").one().active = False
    refused = service.on_text("1007", f"/start {links['DV004']}", utcnow()).replies[0].text
    assert "đã được sử dụng" in refused
    again = telegram_links(cli, workdir, "DP-TT-01", "again.csv")
    taken = service.on_text("1007", f"/start {again['DV004']}", utcnow()).replies[0].text
    assert taken.startswith("Đảng viên này đã liên kết với một tài khoản khác.")
    with Database(db_url).session() as s:
        assert s.query(ChatAccount).filter_by(external_id="1007").count() == 1


def test_a_chat_whose_member_left_the_roster_can_link_to_a_member_on_it(cli, sample_roster, db_url, workdir):
    from bot.storage.models import Member

    service = chat(db_url)
    links = telegram_links(cli, workdir, "DP-TT-01", "links.csv")
    assert "Liên kết thành công" in service.on_text("1007", f"/start {links['DV003']}", utcnow()).replies[0].text
    with Database(db_url).session() as s:
        s.query(Member).filter_by(code="DV003").one().active = False
    assert "không còn trong danh sách" in service.on_text("1007", "/hoc", utcnow()).replies[0].text
    welcome = service.on_text("1007", f"/start {links['DV004']}", utcnow()).replies[0].text
    assert "Liên kết thành công" in welcome


def test_a_zalo_code_is_not_spent_on_telegram_nor_a_telegram_link_on_zalo(cli, sample_roster, db_url, workdir):
    assert cli("members", "invite", "--channel", "zalo", "--unit", "DP-TT-02", "--out", "zalo.csv").code == 0
    zalo_codes = {r["Mã đảng viên"]: r["Mã liên kết"]
                  for r in csv.DictReader((workdir / "zalo.csv").open(encoding="utf-8-sig"))}
    member, code = next(iter(zalo_codes.items()))
    telegram, zalo = chat(db_url), chat(db_url, "zalo")
    refused = telegram.on_text("2003", f"/start {code}", utcnow()).replies[0].text
    assert refused.startswith("Mã liên kết này dành cho Zalo")
    assert "Liên kết thành công" in zalo.on_text("z-2003", code, utcnow()).replies[0].text
    link = telegram_links(cli, workdir, "DP-TT-02", "links.csv")[member]
    assert zalo.on_text("z-9", f"/start {link}", utcnow()).replies[0].text.startswith(
        "Mã liên kết này dành cho Telegram")
    assert "Liên kết thành công" in telegram.on_text("2003", f"/start {link}", utcnow()).replies[0].text


def test_a_relink_code_survives_a_sheet_printed_again_and_a_zalo_one_used_on_the_oa_unlinks_the_lost_phone(
        cli, sample_roster, db_url, workdir):
    from bot.services.linking import create_invites, relink_code
    from bot.storage.models import ChatAccount, Member, WebLink

    zalo, oa = chat(db_url, "zalo"), chat(db_url, "zalo_oa")
    with Database(db_url).session() as s:
        dv002 = s.query(Member).filter_by(code="DV002").one()
        first = create_invites(s, [dv002], utcnow(), "zalo")[dv002.id]
    assert "Liên kết thành công" in zalo.on_text("lost-phone", first, utcnow()).replies[0].text
    with Database(db_url).session() as s:
        dv002 = s.query(Member).filter_by(code="DV002").one()
        s.add(WebLink(id="lost-phone-link", member_id=dv002.id, created_at=utcnow(),
                      expires_at=utcnow() + timedelta(days=3)))
        code = relink_code(s, dv002, utcnow(), "zalo")
    assert cli("members", "invite", "--channel", "zalo", "--unit", "DP-TT-01", "--out", "again.csv").code == 0
    assert "Liên kết thành công" in oa.on_text("oa-new", code, utcnow()).replies[0].text  # the new phone, on the OA
    with Database(db_url).session() as s:
        accounts = {(a.channel, a.external_id) for a in s.query(ChatAccount).filter_by(member_id=dv002.id)}
        revoked = s.get(WebLink, "lost-phone-link").revoked_at
    assert accounts == {("zalo_oa", "oa-new")} and revoked is not None  # the lost phone holds nothing of theirs
