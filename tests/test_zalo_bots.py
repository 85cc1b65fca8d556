"""Many Zalo bots, one server: each branch's own bot registered with ``hoctap zalo bots``, its
webhook at ``/zalo/<bot id>/webhook`` on the real web server, members linked to their own unit's
bot, the 50-member cap, outbound messages through the member's bot; against the Zalo emulator
(several bots on one fake Zalo) and the real database."""

from __future__ import annotations

import asyncio
import io
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import func, select

from bot.channels.zalo import TRAITS, BackgroundZalo, ZaloOptions, ZaloRuntime
from bot.channels.zalo.registry import MEMBER_CAP, Registry, usage_key
from bot.domain.replies import Reply
from bot.outbox import queue
from bot.outbox.sender import OutboxSender
from bot.services.chat import ChatService
from bot.services.linking import create_invites, format_code
from bot.storage.models import ChannelUsage, ChatAccount, Member, OutboxMessage, Unit, ZaloBot
from bot.timeutil import utcnow
from tests.test_zalo_channel import TZ, free_port, say

DEFAULT_TOKEN = "1234567890:TEST-ZALO"
TOKEN_A = "2000000001:BOT-A-SECRET"
TOKEN_B = "2000000002:BOT-B-SECRET"
PUBLIC = "http://127.0.0.1:{port}"


class FleetProcess:
    """One process serving the default bot (polling) and every registered branch bot (webhooks)."""

    def __init__(self, db, default_emulator, port: int):
        self.db, self.default, self.port = db, default_emulator, port
        self.public_url = PUBLIC.format(port=port)
        self.running: BackgroundZalo | None = None

    def start(self) -> "FleetProcess":
        options = ZaloOptions(token=self.default.token, api_base_url=self.default.base_url, mode="polling",
                              public_url=self.public_url, listen=f"127.0.0.1:{self.port}", poll_timeout=1,
                              poll_interval=0.0, share_link="https://zalo.me/s/hoctap")
        service = ChatService(self.db, TRAITS, TZ)
        self.running = BackgroundZalo(ZaloRuntime(options, service, bot_quota=3000)).start()
        return self

    @property
    def runtime(self) -> ZaloRuntime:
        return self.running.runtime

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None


def register(db, emulator, unit: str, public_url: str, link: str | None = None) -> ZaloBot:
    registry = Registry(db, api_base_url=emulator.base_url, public_url=public_url)
    return asyncio.run(registry.add(unit, emulator.token, utcnow(), share_link=link))[0]


@contextmanager
def branch_bots(province):
    """The default bot, bot A of commune DP-TT (ấp 1-3) and bot B of commune HQ-TH on one fake
    Zalo, registered, and one process serving all three."""
    from bot.emulators.zalo import ZaloEmulator

    port = free_port()
    with ZaloEmulator(DEFAULT_TOKEN, "HocTap") as default:
        bot_a = default.add_bot(TOKEN_A, "Chi bo Tan Tien")
        bot_b = default.add_bot(TOKEN_B, "Chi bo Tan Hung")
        register(province, bot_a, "DP-TT", PUBLIC.format(port=port), "https://zalo.me/s/tantien")
        register(province, bot_b, "HQ-TH", PUBLIC.format(port=port), "https://zalo.me/s/tanhung")
        process = FleetProcess(province, default, port).start()
        try:
            yield process, default, bot_a, bot_b
        finally:
            process.stop()
            bot_b.stop()
            bot_a.stop()


@pytest.fixture
def two_branches(province):
    with branch_bots(province) as running:
        yield running


def code_of(db, member_code: str) -> str:
    with db.session() as s:
        member = s.scalar(select(Member).where(Member.code == member_code))
        return format_code(create_invites(s, [member], utcnow(), channel="zalo")[member.id])


def accounts(db) -> dict[str, tuple[str, str | None]]:
    with db.session() as s:
        rows = s.execute(select(Member.code, ChatAccount.external_id, ZaloBot.name).join(Member)
                         .outerjoin(ZaloBot, ZaloBot.id == ChatAccount.bot_id)).all()
    return {code: (uid, bot) for code, uid, bot in rows}


# -- routing -------------------------------------------------------------------------------------
def test_members_of_two_branches_study_and_quiz_on_their_own_bots_at_once(two_branches, province):
    _process, _default, bot_a, bot_b = two_branches
    dp = bot_a.user("a-1", "Đinh Văn Sơn")
    hq = bot_b.user("b-1", "Lê Văn Cường")
    assert "Liên kết thành công" in say(dp, code_of(province, "DV002"), "Liên kết thành công")
    assert "Liên kết thành công" in say(hq, code_of(province, "DV032"), "Liên kết thành công")
    assert accounts(province) == {"DV002": ("a-1", "Chi bo Tan Tien"), "DV032": ("b-1", "Chi bo Tan Hung")}
    dp.send_text("lam bai")
    hq.send_text("lam bai")
    for user in (dp, hq):
        user.wait_for(lambda u: any("Câu 1/10" in (m.get("text") or "") for m in u.messages))
    assert "Câu 2/10" in say(dp, "a", "Câu 2/10")
    assert "Câu 2/10" in say(hq, "b", "Câu 2/10")
    assert all(m.get("text") for m in dp.messages) and not bot_b.calls("sendMessage")[0]["chat_id"] == "a-1"
    assert {c["chat_id"] for c in bot_a.calls("sendMessage")} == {"a-1"}
    assert {c["chat_id"] for c in bot_b.calls("sendMessage")} == {"b-1"}


def test_a_code_typed_to_another_branchs_bot_names_the_right_bot_and_still_works_there(two_branches, province):
    _process, default, bot_a, bot_b = two_branches
    code = code_of(province, "DV033")  # Tân Hưng: bot B
    reply = say(bot_a.user("a-2"), code, "Mã này")
    assert "«Chi bo Tan Hung»" in reply and "https://zalo.me/s/tanhung" in reply
    reply = say(default.user("d-2"), code, "Mã này")
    assert "«Chi bo Tan Hung»" in reply
    assert "Liên kết thành công" in say(bot_b.user("b-2"), code, "Liên kết thành công")
    assert accounts(province) == {"DV033": ("b-2", "Chi bo Tan Hung")}
    ward = say(bot_a.user("a-3"), code_of(province, "CB002"), "Mã này")  # a cadre of no branch bot: the default
    assert "«HocTap»" in ward and "https://zalo.me/s/hoctap" in ward


def test_the_51st_member_is_told_to_ask_the_secretary_and_the_secretary_is_told(two_branches, province):
    _process, _default, bot_a, _bot_b = two_branches
    now = utcnow()
    with province.session() as s:
        bot = s.scalar(select(ZaloBot).where(ZaloBot.name == "Chi bo Tan Tien"))
        others = s.scalars(select(Member.id).where(Member.code.not_in(["DV003", "DV001"])).order_by(Member.id)
                           .limit(MEMBER_CAP)).all()
        assert len(others) == MEMBER_CAP
        s.add_all(ChatAccount(channel="zalo", external_id=f"fill-{mid}", member_id=mid, linked_at=now,
                              bot_id=bot.id) for mid in others)
    code = code_of(province, "DV003")
    reply = say(bot_a.user("a-51"), code, "đủ 50")
    assert "báo bí thư chi bộ" in reply
    with province.session() as s:
        told = [(code, queue.payloads(s, [oid])[oid]) for code, oid in s.execute(
            select(Member.code, OutboxMessage.id).join(Member).where(OutboxMessage.purpose == "bot_full"))]
        assert s.scalar(select(func.count()).select_from(ChatAccount).where(ChatAccount.bot_id == bot.id)) == 50
    assert [code for code, _ in told] == ["DV001"]  # the secretary of ấp 1
    assert "Điểu Ngọc Mai (DV003)" in told[0][1]["text"] and "đủ 50" in told[0][1]["text"]


def test_outbox_messages_go_out_through_each_members_bot_and_count_against_its_quota(two_branches, province):
    process, default, bot_a, bot_b = two_branches
    say(bot_a.user("a-4"), code_of(province, "DV004"), "Liên kết thành công")
    say(bot_b.user("b-4"), code_of(province, "DV034"), "Liên kết thành công")
    say(default.user("d-4"), code_of(province, "CB002"), "Liên kết thành công")
    now = utcnow()
    with province.session() as s:
        ids = dict(s.execute(select(Member.code, Member.id).where(Member.code.in_(["DV004", "DV034", "CB002"]))).all())
        for code, mid in ids.items():
            queue.enqueue(s, dedupe_key=f"t:{code}", purpose="announce", member_id=mid,
                          reply=Reply(f"Thông báo cho {code}"), now=now)
    before = {emu: len(emu.calls("sendMessage")) for emu in (default, bot_a, bot_b)}
    sender = OutboxSender(province, {"zalo": process.runtime.transport}, per_chat_interval=0, idle_poll=0.05)
    stats = process.running.run(sender.run(until_idle=True))
    assert stats.sent == 3
    got = {emu: [(c["chat_id"], c["text"]) for c in emu.calls("sendMessage")[before[emu]:]]
           for emu in (default, bot_a, bot_b)}
    assert got == {bot_a: [("a-4", "Thông báo cho DV004")], bot_b: [("b-4", "Thông báo cho DV034")],
                   default: [("d-4", "Thông báo cho CB002")]}
    with province.session() as s:
        pks = dict(s.execute(select(ZaloBot.name, ZaloBot.id)).all())
        month = now.astimezone(TZ).strftime("%Y-%m")
        used = {k: s.get(ChannelUsage, (usage_key(pk), month)).sent for k, pk in pks.items()}
    assert used == {"Chi bo Tan Tien": 2, "Chi bo Tan Hung": 2}  # the welcome and the announcement


def test_a_branch_webhook_refuses_a_wrong_secret_and_an_unknown_bot(two_branches, province):
    process, _default, bot_a, _bot_b = two_branches
    assert bot_a.webhook["url"] == f"{process.public_url}/zalo/2000000001/webhook"
    assert bot_a.deliver_webhook_with_secret("not-the-secret-123").status == 403
    update = bot_a.make_text_update("a-9", "xin chào")
    for path in ("/zalo/2000000009/webhook", "/zalo/abc/webhook", "/zalo/" + "9" * 40 + "/webhook"):
        r = httpx.post(process.public_url + path, json={"ok": True, "result": update},
                       headers={"X-Bot-Api-Secret-Token": bot_a.webhook["secret_token"]})
        assert r.status_code == 404
    assert bot_a.deliver_webhook(update).status == 200  # the right secret
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(ChatAccount)) == 0


def test_a_removed_bot_is_not_served_any_more(two_branches, province, workdir):
    process, _default, bot_a, _bot_b = two_branches
    say(bot_a.user("a-5"), code_of(province, "DV005"), "Liên kết thành công")
    secret = bot_a.webhook["secret_token"]
    name, unlinked = asyncio.run(Registry(province, api_base_url=bot_a.base_url, public_url=process.public_url)
                                 .remove("DP-TT"))
    assert (name, unlinked) == ("Chi bo Tan Tien", 1) and bot_a.webhook is None
    process.runtime.fleet._bots.clear()  # as a minute later (CACHE_SECONDS), or in another process
    update = bot_a.make_text_update("a-5", "học")
    r = httpx.post(f"{process.public_url}/zalo/2000000001/webhook", json=update,
                   headers={"X-Bot-Api-Secret-Token": secret})
    assert r.status_code == 404


# -- the registry on the command line ------------------------------------------------------------
@pytest.fixture
def fake_zalo(workdir, monkeypatch):
    from bot.emulators.zalo import ZaloEmulator

    monkeypatch.setenv("ZALO_BOT_TOKEN", DEFAULT_TOKEN)

    with ZaloEmulator(DEFAULT_TOKEN, "HocTap") as default:
        bots = [default.add_bot(TOKEN_A, "Chi bo Tan Tien"), default.add_bot(TOKEN_B, "Chi bo Tan Hung")]
        (workdir / "config.yaml").write_text(
            f"zalo:\n  api_base_url: {default.base_url}\n  public_url: https://hoctap.example.vn\n",
            encoding="utf-8")
        try:
            yield default, *bots
        finally:
            for bot in bots:
                bot.stop()


@pytest.fixture
def bots_cli(cli, sample_roster, monkeypatch):
    def run(*args: str, token: str = ""):
        monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
        return cli("zalo", "bots", *args)

    return run


def stored(db_url) -> list[tuple[str, str, str]]:
    from bot.storage.db import Database

    with Database(db_url).session() as s:
        return [tuple(r) for r in s.execute(select(ZaloBot.zalo_id, ZaloBot.name, ZaloBot.token)
                                            .order_by(ZaloBot.zalo_id)).all()]


def test_add_reads_the_token_from_stdin_registers_the_bots_webhook_and_list_shows_it(
        bots_cli, fake_zalo, db_url):
    _default, bot_a, _bot_b = fake_zalo
    result = bots_cli("add", "--unit", "DP-TT-01", "--link", "https://zalo.me/s/ap1", token=TOKEN_A)
    assert result.code == 0, result.err
    assert "DP-TT-01: bot Chi bo Tan Tien (id 2000000001) registered" in result.out
    assert "BOT-A-SECRET" not in result.out + result.err
    hook = bot_a.webhook
    assert hook["url"] == "https://hoctap.example.vn/zalo/2000000001/webhook"
    assert 8 <= len(hook["secret_token"]) <= 256 and hook["secret_token"] not in TOKEN_A
    listing = bots_cli("list")
    assert listing.code == 0 and "BOT-A-SECRET" not in listing.out
    assert listing.lines[1:] == ["DP-TT-01\tChi bo Tan Tien\twebhook\t0/50\t0/3000"]


def test_invitation_sheets_carry_each_members_bot_and_share_link(bots_cli, fake_zalo, cli, workdir):
    import csv

    assert bots_cli("add", "--unit", "DP-TT-01", "--link", "https://zalo.me/s/ap1", token=TOKEN_A).code == 0
    result = cli("members", "invite", "--channel", "zalo", "--unit", "DP-TT", "--link", "https://zalo.me/s/hoctap",
                 "--out", "zalo.csv")
    assert result.code == 0, result.err
    rows = {r["member_code"]: r for r in csv.DictReader((workdir / "zalo.csv").open(encoding="utf-8-sig"))}
    assert (rows["DV002"]["zalo_bot"], rows["DV002"]["zalo_link"]) == ("Chi bo Tan Tien", "https://zalo.me/s/ap1")
    assert "mở https://zalo.me/s/ap1 (hoặc tìm bot «Chi bo Tan Tien» trên Zalo)" in rows["DV002"]["message"]
    assert (rows["DV011"]["zalo_bot"], rows["DV011"]["zalo_link"]) == ("", "https://zalo.me/s/hoctap")  # ấp 2


@pytest.mark.parametrize("token, error", [
    ("", "error: no token on standard input"),
    ("not a token", "error: that is not a Zalo bot token: expected <numeric id>:<secret>"),
    ("2000000001:WRONG-SECRET", "error: Zalo rejected the token (a typo, or it was reset in Bot Creator): nothing stored"),
    ("9999999999:NO-SUCH-BOT", "error: Zalo rejected the token"),
    (DEFAULT_TOKEN, "error: that is the default bot's token (ZALO_BOT_TOKEN): a unit needs a bot of its own"),
])
def test_add_with_a_bad_token_says_why_and_stores_nothing(bots_cli, fake_zalo, db_url, token, error):
    _default, bot_a, _bot_b = fake_zalo
    result = bots_cli("add", "--unit", "DP-TT-01", token=token)
    assert result.code == 1 and result.err.startswith(error), result.err
    assert "SECRET" not in result.err
    assert stored(db_url) == [] and bot_a.webhook is None


def test_a_duplicate_token_or_a_bot_of_another_unit_is_refused_and_nothing_changes(bots_cli, fake_zalo, db_url):
    assert bots_cli("add", "--unit", "DP-TT-01", token=TOKEN_A).code == 0
    before = stored(db_url)
    again = bots_cli("add", "--unit", "DP-TT-01", token=TOKEN_A)
    assert (again.code, again.err.strip()) == (1, "error: this bot (Chi bo Tan Tien) is already registered to DP-TT-01")
    other = bots_cli("add", "--unit", "HQ-TH-01", token=TOKEN_A)
    assert (other.code, other.err.strip()) == (1, "error: this bot (Chi bo Tan Tien) is already registered to unit "
                                                  "DP-TT-01: one bot serves one unit (remove it there first)")
    second = bots_cli("add", "--unit", "DP-TT-01", token=TOKEN_B)
    assert second.code == 1 and "DP-TT-01 already has a bot (Chi bo Tan Tien)" in second.err
    nowhere = bots_cli("add", "--unit", "NO-SUCH", token=TOKEN_B)
    assert (nowhere.code, nowhere.err.strip()) == (1, "error: no unit 'NO-SUCH' (see hoctap units list)")
    assert stored(db_url) == before


def test_rotate_takes_the_reset_token_and_refuses_the_old_one_or_another_bots(bots_cli, fake_zalo, db_url):
    _default, bot_a, _bot_b = fake_zalo
    assert bots_cli("add", "--unit", "DP-TT-01", token=TOKEN_A).code == 0
    assert bots_cli("add", "--unit", "HQ-TH-01", token=TOKEN_B).code == 0
    old_secret = bot_a.webhook["secret_token"]
    new_token = "2000000001:BOT-A-NEW-SECRET"
    bot_a.reset_token(new_token)  # "reset token" in Bot Creator
    stale = bots_cli("rotate", "--unit", "DP-TT-01", token=TOKEN_A)
    assert (stale.code, stale.err.strip()) == (1, "error: this is the token already stored: reset it in Bot Creator first")
    foreign = bots_cli("rotate", "--unit", "DP-TT-01", token=TOKEN_B)
    assert foreign.code == 1 and "another bot than DP-TT-01's (Chi bo Tan Tien), registered to HQ-TH-01" in foreign.err
    wrong = bots_cli("rotate", "--unit", "DP-TT-01", token="2000000001:TYPO")
    assert wrong.code == 1 and "Zalo rejected the token" in wrong.err
    assert [t for _, _, t in stored(db_url)] == [TOKEN_A, TOKEN_B]
    done = bots_cli("rotate", "--unit", "DP-TT-01", token=new_token)
    assert done.code == 0, done.err
    assert "NEW-SECRET" not in done.out + done.err
    assert [t for _, _, t in stored(db_url)] == [new_token, TOKEN_B]
    assert bot_a.webhook["secret_token"] != old_secret


def test_remove_forgets_the_bot_and_its_webhook(bots_cli, fake_zalo, db_url):
    _default, bot_a, _bot_b = fake_zalo
    assert bots_cli("add", "--unit", "DP-TT-01", token=TOKEN_A).code == 0
    result = bots_cli("remove", "--unit", "DP-TT-01")
    assert result.code == 0 and "DP-TT-01: bot Chi bo Tan Tien removed; 0 member(s)" in result.out
    assert stored(db_url) == [] and bot_a.webhook is None
    again = bots_cli("remove", "--unit", "DP-TT-01")
    assert (again.code, again.err.strip()) == (1, "error: DP-TT-01 has no bot")


def test_polling_is_refused_beyond_the_limit(bots_cli, fake_zalo, db_url, monkeypatch):
    monkeypatch.setattr("bot.channels.zalo.registry.POLLING_LIMIT", 1)
    _default, bot_a, _bot_b = fake_zalo
    assert bots_cli("add", "--unit", "DP-TT-01", "--polling", token=TOKEN_A).code == 0
    assert "deleteWebhook" in [m for m, _ in bot_a.requests]
    refused = bots_cli("add", "--unit", "HQ-TH-01", "--polling", token=TOKEN_B)
    assert refused.code == 1 and refused.err.startswith("error: at most 1 bots are polled by one server")
    assert len(stored(db_url)) == 1


def test_a_broadcast_must_fit_the_quota_of_each_bot_its_members_are_reached_through(province):
    from bot.channels.zalo.fleet import FleetBudget

    now = utcnow()
    month = now.astimezone(TZ).strftime("%Y-%m")
    with province.session() as s:
        units = dict(s.execute(select(Unit.code, Unit.id)).all())
        bots = [ZaloBot(zalo_id=str(n), unit_id=units[u], name=u, token=f"{n}:x", webhook_secret="s" * 16,
                        mode="webhook", created_at=now) for n, u in ((1, "DP-TT"), (2, "HQ-TH"))]
        s.add_all(bots)
        s.flush()
        members = dict(s.execute(select(Member.code, Member.id)).all())
        for code, bot in (("DV004", bots[0]), ("DV005", bots[0]), ("DV034", bots[1])):
            s.add(ChatAccount(channel="zalo", external_id=code, member_id=members[code], linked_at=now, bot_id=bot.id))
        s.add(ChannelUsage(channel=usage_key(bots[0].id), month=month, sent=2999, updated_at=now))
        budget = FleetBudget(province, None, 3000, TZ)
        full = budget.refusal(s, [members["DV004"], members["DV005"]], now)
        assert (full.needed, full.left, full.used) == (2, 1, 2999)
        assert budget.refusal(s, [members["DV004"]], now) is None  # one still fits
        assert budget.refusal(s, [members["DV034"]], now) is None  # bot B has its own quota


def test_without_a_default_token_a_polled_branch_bot_is_served(province):
    from bot.emulators.zalo import ZaloEmulator

    port = free_port()
    with ZaloEmulator(TOKEN_A, "Chi bo Tan Tien") as bot_a:
        registry = Registry(province, api_base_url=bot_a.base_url, public_url=None)
        asyncio.run(registry.add("DP-TT", TOKEN_A, utcnow(), mode="polling"))
        options = ZaloOptions(token="", api_base_url=bot_a.base_url, public_url=PUBLIC.format(port=port),
                              listen=f"127.0.0.1:{port}", poll_timeout=1, poll_interval=0.0)
        with BackgroundZalo(ZaloRuntime(options, ChatService(province, TRAITS, TZ), bot_quota=3000)):
            user = bot_a.user("a-p")
            assert "Liên kết thành công" in say(user, code_of(province, "DV006"), "Liên kết thành công")
            assert "Câu 1/10" in say(user, "lam bai", "Câu 1/10")
    assert accounts(province) == {"DV006": ("a-p", "Chi bo Tan Tien")}
