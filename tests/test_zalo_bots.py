"""Many Zalo bots, one server: each branch's own bot registered with ``hoctap zalo bots``, its
webhook at ``/zalo/<bot id>/webhook`` on the real web server, members linked to their own unit's
bot, the 50-member cap, outbound messages through the member's bot; against the Zalo emulator
(several bots on one fake Zalo) and the real database."""

from __future__ import annotations

import time

import asyncio
import io
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import func, select

from bot.channels.zalo import TRAITS, BackgroundZalo, ZaloOptions, ZaloQuota, ZaloRuntime
from bot.channels.zalo.registry import MEMBER_CAP, Registry, usage_key
from bot.domain.oversight_messages import CALL_LIST
from bot.domain.replies import Reply
from bot.outbox import queue
from bot.outbox.sender import OutboxSender
from bot.services.chat import ChatService
from bot.services.linking import create_invites, format_code
from bot.storage.db import Database
from bot.storage.models import ChannelUsage, ChatAccount, LinkCode, Member, OutboxMessage, Unit, ZaloBot
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


def fill(s, bot_name: str, count: int, now, *, beside=("DV003", "DV001"), plus=()) -> ZaloBot:
    """``count`` members other than ``beside`` (and the ids ``plus``) linked through the bot: a bot near or at
    its cap without 50 chats to drive."""
    bot = s.scalar(select(ZaloBot).where(ZaloBot.name == bot_name))
    others = s.scalars(select(Member.id).where(Member.code.not_in(list(beside))).order_by(Member.id)
                       .limit(count)).all()
    s.add_all(ChatAccount(channel="zalo", external_id=f"fill-{mid}", member_id=mid, linked_at=now, bot_id=bot.id)
              for mid in [*others, *plus])
    return bot


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


def test_a_member_writing_to_another_branchs_bot_is_sent_to_their_own_and_sees_nothing_there(two_branches,
                                                                                               province):
    """Each bot's 50 places and 3,000 messages are its branch's: another branch's member (or the default bot's
    user) is told where to go, once, and served nothing of theirs there."""
    _process, default, bot_a, bot_b = two_branches
    assert "Liên kết thành công" in say(bot_a.user("a-1"), code_of(province, "DV001"), "Liên kết thành công")
    for other in (bot_b, default):
        reply = say(other.user("a-1"), "thong ke", "Đồng chí đã liên kết")
        assert "«Chi bo Tan Tien»" in reply and "https://zalo.me/s/tantien" in reply
        assert "64-KH/TU" not in reply and "Đã hoàn thành" not in reply
    assert "Đã hoàn thành" in say(bot_a.user("a-1"), "thong ke", "Đã hoàn thành")  # its own bot serves it


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


def test_a_code_quoted_in_a_sentence_to_another_branchs_bot_names_the_right_bot(two_branches, province):
    _process, _default, bot_a, bot_b = two_branches
    code = code_of(province, "DV033")  # Tân Hưng: bot B
    for i, said in enumerate((f"Mã của tôi là {code}", f"start {code}", f"/batdau {code}")):
        assert "«Chi bo Tan Hung»" in say(bot_a.user(f"a-9{i}"), said, "Mã này"), said
    assert "Liên kết thành công" in say(bot_b.user("b-9"), f"Mã của tôi là {code}", "Liên kết thành công")
    assert accounts(province) == {"DV033": ("b-9", "Chi bo Tan Hung")}  # on its own bot, counted there


def test_the_51st_member_is_told_to_ask_the_secretary_and_the_secretary_is_told(two_branches, province):
    _process, _default, bot_a, _bot_b = two_branches
    now = utcnow()
    with province.session() as s:
        bot = fill(s, "Chi bo Tan Tien", MEMBER_CAP, now)
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(ChatAccount).where(ChatAccount.bot_id == bot.id)) \
            == MEMBER_CAP
    code = code_of(province, "DV003")
    reply = say(bot_a.user("a-51"), code, "đủ 50")
    assert "báo bí thư chi bộ" in reply
    with province.session() as s:
        told = [(code, queue.payloads(s, [oid])[oid]) for code, oid in s.execute(
            select(Member.code, OutboxMessage.id).join(Member).where(OutboxMessage.purpose == "bot_full"))]
        assert s.scalar(select(func.count()).select_from(ChatAccount).where(ChatAccount.bot_id == bot.id)) == 50
    assert [code for code, _ in told] == ["DV001"]  # the secretary of ấp 1
    assert "Điểu Ngọc Mai (DV003)" in told[0][1]["text"] and "đủ 50" in told[0][1]["text"]


def test_a_member_on_a_full_branch_bot_moves_to_a_new_phone_with_a_relink_code(two_branches, province):
    """The lost phone's account held one of the bot's 50 places: the new phone takes that place, not a 51st."""
    from bot.services.linking import relink_code

    _process, _default, bot_a, _bot_b = two_branches
    now = utcnow()
    with province.session() as s:
        dv003 = s.scalar(select(Member).where(Member.code == "DV003"))
        bot = fill(s, "Chi bo Tan Tien", MEMBER_CAP - 1, now, plus=[dv003.id])
        code = format_code(relink_code(s, dv003, now, "zalo"))
    assert "Liên kết thành công" in say(bot_a.user("a-new"), code, "Liên kết thành công")
    assert accounts(province)["DV003"] == ("a-new", "Chi bo Tan Tien")
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(ChatAccount).where(ChatAccount.bot_id == bot.id)) == 50


def test_a_member_linked_through_the_default_bot_before_the_branch_had_one_moves_by_writing_to_it(two_branches,
                                                                                                   province):
    """The default bot's 50 places are the province's: a member who linked there before their branch got a bot
    moves to the branch's bot by writing to it (the same Zalo account), and is served there from then on."""
    _process, default, bot_a, _bot_b = two_branches
    with province.session() as s:  # linked through the default bot before bot A was registered
        dv002 = s.scalar(select(Member).where(Member.code == "DV002"))
        s.add(ChatAccount(channel="zalo", external_id="d-2", member_id=dv002.id, linked_at=utcnow(), bot_id=None))
    assert "Câu 1/10" in say(bot_a.user("d-2"), "lam bai", "Câu 1/10")
    assert accounts(province)["DV002"] == ("d-2", "Chi bo Tan Tien")
    reply = say(default.user("d-2"), "lam bai", "Đồng chí đã liên kết")  # the default bot now sends them on
    assert "«Chi bo Tan Tien»" in reply and "Câu 1/10" not in reply
    assert "Câu 2/10" in say(bot_a.user("d-2"), "a", "Câu 2/10")


def test_a_member_on_the_default_bot_stays_there_while_the_branchs_bot_is_full_and_the_secretary_is_told(
        two_branches, province):
    _process, default, bot_a, _bot_b = two_branches
    now = utcnow()
    with province.session() as s:
        bot = fill(s, "Chi bo Tan Tien", MEMBER_CAP, now)
        dv003 = s.scalar(select(Member).where(Member.code == "DV003"))
        s.add(ChatAccount(channel="zalo", external_id="d-3", member_id=dv003.id, linked_at=now, bot_id=None))
    reply = say(bot_a.user("d-3"), "lam bai", "chưa chuyển đồng chí sang được")
    assert "«Chi bo Tan Tien»" in reply and "«HocTap»" in reply and "Câu 1/10" not in reply
    assert accounts(province)["DV003"] == ("d-3", None)
    assert "Câu 1/10" in say(default.user("d-3"), "lam bai", "Câu 1/10")  # served where they were
    with province.session() as s:
        told = s.scalars(select(Member.code).join(OutboxMessage).where(OutboxMessage.purpose == "bot_full")).all()
        assert s.scalar(select(func.count()).select_from(ChatAccount).where(ChatAccount.bot_id == bot.id)) == 50
    assert told == ["DV001"]  # the secretary of ấp 1, once


def test_a_message_a_branch_bots_webhook_took_before_a_kill_is_answered_after_the_restart(two_branches, province):
    """A branch bot's webhook delivery is answered at once, so Zalo will not deliver it again: the update kept
    under that bot is handled by the next process, through that bot."""
    from bot.services.inbox import Inbox

    process, _default, bot_a, _bot_b = two_branches
    user = bot_a.user("a-7")
    assert "Liên kết thành công" in say(user, code_of(province, "DV002"), "Liên kết thành công")
    process.stop()
    with province.session() as s:
        pk = s.scalar(select(ZaloBot.id).where(ZaloBot.name == "Chi bo Tan Tien"))
    update = {"event_name": "message.text.received", "message": {
        "message_id": "b" * 20, "date": int(time.time() * 1000), "chat": {"id": "a-7", "chat_type": "PRIVATE"},
        "from": {"id": "a-7", "display_name": "Đảng viên"}, "text": "lam bai"}}
    Inbox(province, f"zalo:{pk}", "zalo").keep([("b" * 20, update)], utcnow())  # answered 200, then killed
    before = len(user.messages)
    process.start()
    user.wait_for(lambda u: any("Câu 1/10" in (m.get("text") or "") for m in u.messages[before:]), timeout=10)
    assert {c["chat_id"] for c in bot_a.calls("sendMessage")} == {"a-7"}  # through the member's own bot


def test_members_linking_at_the_same_moment_never_take_a_bot_past_50(province):
    """Six members of ấp 1-3 type their codes at once to a bot serving 47 (six webhook deliveries in
    flight together): three are linked, three are told to ask the secretary and keep their codes, and
    the bot serves exactly 50."""
    import threading

    from bot.emulators.zalo import ZaloEmulator

    port = free_port()
    linking = ["DV002", "DV003", "DV004", "DV005", "DV006", "DV007"]
    with ZaloEmulator(DEFAULT_TOKEN, "HocTap") as default, \
            default.add_bot(TOKEN_A, "Chi bo Tan Tien", worker=False) as bot_a:
        register(province, bot_a, "DP-TT", PUBLIC.format(port=port))
        process = FleetProcess(province, default, port).start()
        try:
            now = utcnow()
            with province.session() as s:
                bot = s.scalar(select(ZaloBot).where(ZaloBot.name == "Chi bo Tan Tien"))
                others = s.scalars(select(Member.id).where(Member.code.not_in(linking + ["DV001"]))
                                   .order_by(Member.id).limit(MEMBER_CAP - 3)).all()
                s.add_all(ChatAccount(channel="zalo", external_id=f"fill-{mid}", member_id=mid, linked_at=now,
                                      bot_id=bot.id) for mid in others)
            users = {code: bot_a.user(f"race-{code}") for code in linking}
            for code, user in users.items():
                user.send_text(code_of(province, code))  # queued at Zalo: delivered below, all at once
            together = threading.Barrier(len(linking))

            def deliver():
                together.wait()
                bot_a.deliver_next()

            threads = [threading.Thread(target=deliver) for _ in linking]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for user in users.values():
                user.wait_for(lambda u: any("Liên kết thành công" in t or "đủ 50" in t
                                            for t in (m.get("text") or "" for m in u.messages)), timeout=15)
        finally:
            process.stop()
    said = {code: " ".join(m.get("text") or "" for m in user.messages) for code, user in users.items()}
    welcomed = sorted(code for code, text in said.items() if "Liên kết thành công" in text)
    refused = sorted(code for code, text in said.items() if "báo bí thư chi bộ" in text)
    assert len(welcomed) == 3 and sorted(welcomed + refused) == linking
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(ChatAccount).where(ChatAccount.bot_id == bot.id)) == 50
        assert s.scalar(select(func.count()).select_from(ChatAccount).where(ChatAccount.bot_id.is_(None))) == 0
        unused = s.scalars(select(Member.code).join(LinkCode).where(LinkCode.used_at.is_(None))).all()
    assert sorted(unused) == refused  # they link once the secretary has made room


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
    from bot.metrics import measured

    # wrapped as ``hoctap run`` wraps every transport (bot/app.py scheduled_work): the wrapper once dropped
    # the member's bot, and every message to a branch bot's member failed with a TypeError
    sender = OutboxSender(province, measured({"zalo": process.runtime.transport}), per_chat_interval=0,
                          idle_poll=0.05)
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


def test_a_branch_bot_whose_token_zalo_refuses_is_named_to_the_admins_once_a_day(two_branches, province):
    """A token reset in Bot Creator (or revoked) silences a whole branch: whoever can rotate it is told."""
    from bot.metrics import measured

    process, _default, bot_a, _bot_b = two_branches
    say(bot_a.user("a-4"), code_of(province, "DV004"), "Liên kết thành công")
    say(bot_a.user("a-5"), code_of(province, "DV005"), "Liên kết thành công")
    now = utcnow()
    with province.session() as s:
        for code in ("DV004", "DV005"):
            mid = s.scalar(select(Member.id).where(Member.code == code))
            queue.enqueue(s, dedupe_key=f"t:{code}", purpose="announce", member_id=mid,
                          reply=Reply(f"Thông báo cho {code}"), now=now)
    bot_a.inject_error("sendMessage", 401, times=10)
    sender = OutboxSender(province, measured({"zalo": process.runtime.transport}), per_chat_interval=0,
                          idle_poll=0.05)
    process.running.run(sender.run(until_idle=True))
    with province.session() as s:
        alerts = s.execute(select(Member.code, OutboxMessage.payload).join(Member)
                           .where(OutboxMessage.purpose == "alert")).all()
    # the admin, and the secretaries of the three branches the bot serves
    assert sorted(code for code, _ in alerts) == ["AD001", "DV001", "DV011", "DV021"]
    text = alerts[0][1]["text"]
    assert "Zalo từ chối mã truy cập (token) của bot «Chi bo Tan Tien» (DP-TT)" in text
    assert "'hoctap zalo bots rotate --unit DP-TT'" in text
    with province.session() as s:  # refused again the same day: nobody is told twice
        queue.enqueue(s, dedupe_key="t:again", purpose="announce", now=utcnow(), reply=Reply("Lần nữa"),
                      member_id=s.scalar(select(Member.id).where(Member.code == "DV004")))
    tried = len(bot_a.calls("sendMessage"))
    process.running.run(sender.run(until_idle=True))
    assert len(bot_a.calls("sendMessage")) > tried  # refused once more
    with province.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.purpose == "alert")) == 4


def test_the_default_bots_token_refused_while_running_is_named_to_the_admins_once_a_day(two_branches, province):
    """ZALO_BOT_TOKEN reset in Bot Creator while hoctap runs: every branch without a bot of its own goes
    silent, so the admins are told what to do, not only the log."""
    process, default, _bot_a, _bot_b = two_branches
    member = default.user("d-cb2")  # the cadre of Đồng Phú: no branch bot above them
    say(member, code_of(province, "CB002"), "Liên kết thành công")
    default.inject_error("sendMessage", 401, times=10)
    for _ in range(2):  # two replies refused the same day
        member.send_text("/hoc")

    def alerts():
        with province.session() as s:
            return s.execute(select(Member.code, OutboxMessage.payload).join(Member)
                             .where(OutboxMessage.purpose == "alert")).all()

    deadline = time.monotonic() + 10  # both replies refused, and the alert written
    while time.monotonic() < deadline and (len(default.calls("sendMessage")) < 3 or not alerts()):
        time.sleep(0.05)
    time.sleep(0.3)  # a second alert would be written by now
    alerts = alerts()
    assert [code for code, _ in alerts] == ["AD001"]
    assert "Zalo từ chối mã truy cập (token) của bot chung" in alerts[0][1]["text"]
    assert "ZALO_BOT_TOKEN" in alerts[0][1]["text"]


def test_a_branch_webhook_refuses_a_wrong_secret_and_an_unknown_bot_alike(two_branches, province):
    """Alike: a stranger probing bot ids with a made-up secret learns nothing of which ones are registered."""
    process, _default, bot_a, _bot_b = two_branches
    assert bot_a.webhook["url"] == f"{process.public_url}/zalo/2000000001/webhook"
    update = bot_a.make_text_update("a-9", "xin chào")
    wrong = httpx.post(process.public_url + "/zalo/2000000001/webhook", json={"ok": True, "result": update},
                       headers={"X-Bot-Api-Secret-Token": "not-the-secret-123"})
    assert wrong.status_code == 403
    for path in ("/zalo/2000000009/webhook", "/zalo/abc/webhook", "/zalo/" + "9" * 40 + "/webhook"):
        for secret in (bot_a.webhook["secret_token"], "not-the-secret-123"):
            r = httpx.post(process.public_url + path, json={"ok": True, "result": update},
                           headers={"X-Bot-Api-Secret-Token": secret})
            assert (r.status_code, r.content) == (wrong.status_code, wrong.content)
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
    assert r.status_code == 403


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
    rows = {r["Mã đảng viên"]: r for r in csv.DictReader((workdir / "zalo.csv").open(encoding="utf-8-sig"))}
    assert (rows["DV002"]["Bot Zalo"], rows["DV002"]["Đường dẫn bot Zalo"]) == ("Chi bo Tan Tien", "https://zalo.me/s/ap1")
    assert "mở https://zalo.me/s/ap1 (hoặc tìm bot «Chi bo Tan Tien» trên Zalo)" in rows["DV002"]["Lời nhắn"]
    assert (rows["DV011"]["Bot Zalo"], rows["DV011"]["Đường dẫn bot Zalo"]) == ("", "https://zalo.me/s/hoctap")  # ấp 2


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


def raw_tokens(db_url, column: str = "token") -> dict[str, str]:
    """The token column (or another) as stored, without decrypting."""
    from sqlalchemy import text

    from bot.storage.db import Database

    with Database(db_url).session() as s:
        return dict(s.execute(text(f"SELECT zalo_id, {column} FROM zalo_bots")).all())


@pytest.fixture
def token_key_reset():
    from bot.storage.token_key import use_key

    yield
    use_key(None)  # the key is process-wide: the next test starts without one


def test_tokens_are_encrypted_at_rest_plain_rows_still_work_and_rotate_encrypts_them(
        bots_cli, fake_zalo, db_url, monkeypatch, token_key_reset):
    _default, bot_a, bot_b = fake_zalo
    monkeypatch.delenv("HOCTAP_WEB_SECRET", raising=False)
    monkeypatch.delenv("HOCTAP_TOKEN_KEY", raising=False)
    plain = bots_cli("add", "--unit", "DP-TT-01", token=TOKEN_A)  # before a key was set
    assert plain.code == 0 and "the token is stored unencrypted: set HOCTAP_TOKEN_KEY" in plain.err
    assert raw_tokens(db_url) == {"2000000001": TOKEN_A}
    monkeypatch.setenv("HOCTAP_TOKEN_KEY", "a-long-key-kept-beside-the-backups")
    sealed = bots_cli("add", "--unit", "HQ-TH-01", token=TOKEN_B)
    assert sealed.code == 0 and "unencrypted" not in sealed.err
    raw = raw_tokens(db_url)
    assert raw["2000000001"] == TOKEN_A and raw["2000000002"].startswith("fernet:")
    assert "BOT-B-SECRET" not in raw["2000000002"] and "2000000002" not in raw["2000000002"]
    secrets = raw_tokens(db_url, "webhook_secret")  # the webhook's secret too: it lets one post as the members
    assert secrets["2000000002"].startswith("fernet:") and not secrets["2000000001"].startswith("fernet:")
    assert bot_b.webhook["secret_token"] not in secrets["2000000002"]
    with Database(db_url).session() as s:  # and read back as the webhook checks it
        assert s.scalar(select(ZaloBot.webhook_secret).where(ZaloBot.zalo_id == "2000000002")) \
            == bot_b.webhook["secret_token"]
    assert [t for _, _, t in stored(db_url)] == [TOKEN_A, TOKEN_B]  # both read, the old plain row too
    new_token = "2000000001:BOT-A-NEW-SECRET"
    bot_a.reset_token(new_token)
    assert bots_cli("rotate", "--unit", "DP-TT-01", token=new_token).code == 0
    assert all(t.startswith("fernet:") and "SECRET" not in t for t in raw_tokens(db_url).values())
    monkeypatch.setenv("HOCTAP_TOKEN_KEY", "another-key-than-the-one-used")
    wrong = bots_cli("remove", "--unit", "DP-TT-01")
    assert (wrong.code, wrong.err.strip()) == (1, "error: the stored Zalo secrets (bot tokens, webhook secrets, the "
                                                  "OA's tokens) were encrypted with another key: set HOCTAP_TOKEN_KEY "
                                                  "(or the web secret) as when they were stored, or reset each bot's "
                                                  "token in Bot Creator and run hoctap zalo bots rotate, and connect "
                                                  "the Zalo OA again from the console")
    monkeypatch.delenv("HOCTAP_TOKEN_KEY")
    none = bots_cli("remove", "--unit", "DP-TT-01")
    assert none.code == 1 and "encrypted but no key is set" in none.err
    assert len(raw_tokens(db_url)) == 2  # nothing removed
    monkeypatch.setenv("HOCTAP_TOKEN_KEY", "another-key-than-the-one-used")  # the old key is lost: the way back
    latest = "2000000001:BOT-A-THIRD-SECRET"
    bot_a.reset_token(latest)
    assert bots_cli("rotate", "--unit", "DP-TT-01", token=latest).code == 0
    assert bots_cli("remove", "--unit", "DP-TT-01").code == 0 and bot_a.webhook is None


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


def test_an_announcement_a_bot_has_no_quota_left_for_goes_out_split_per_bot(
        two_branches, province, emulator, telegram_bot, invite, monkeypatch):
    """Bot A (Tân Tiến) has used its 3,000 messages this month when round 1 is announced: bot B's
    member gets it through bot B, bot A's member who also has Telegram gets it there, bot A's
    Zalo-only member is on the secretary's /chualam as not reached, and the secretary (on Telegram)
    and the admin are told that bot A is out of quota. Bot A sends nothing."""
    from datetime import time as clock_time

    from telegram import Bot

    from bot.channels.telegram import TelegramTransport
    from bot.channels.zalo.fleet import FleetBudget
    from bot.outbox.queue import QuietHours
    from bot.scheduling.due import Schedule, run_due
    from tests.test_telegram_oversight import link as telegram_link

    process, default, bot_a, bot_b = two_branches
    secretary = telegram_link(emulator, invite, "DV001", 7001)  # DP-TT-01's secretary
    admin = telegram_link(emulator, invite, "AD001", 7002)
    both = telegram_link(emulator, invite, "DV005", 7005)  # on Telegram, and later on bot A
    only_zalo = bot_a.user("a-4")
    say(only_zalo, code_of(province, "DV004"), "Liên kết thành công")
    say(bot_a.user("a-5"), code_of(province, "DV005"), "Liên kết thành công")  # bot A is DV005's last-used
    other_branch = bot_b.user("b-4")
    say(other_branch, code_of(province, "DV034"), "Liên kết thành công")
    now = utcnow()
    with province.session() as s:
        pk = s.scalar(select(ZaloBot.id).where(ZaloBot.name == "Chi bo Tan Tien"))
        s.get(ChannelUsage, (usage_key(pk), now.astimezone(TZ).strftime("%Y-%m"))).sent = 3000
    # written behind the process's back (sends cannot use 2,990 messages in seconds): the count the process
    # read while linking is not trusted here
    monkeypatch.setattr("bot.channels.zalo.quota.KNOWN_FOR", 0.0)
    never_quiet = QuietHours(tz=TZ, start=clock_time(0, 0), end=clock_time(0, 0))
    report = run_due(province, now, Schedule(quiet=never_quiet, budget=FleetBudget(province, None, 3000, TZ)))
    assert report.dropped == [] and "announce:1: 4 message(s)" in report.jobs
    sent_by_a = len(bot_a.calls("sendMessage"))

    async def send():
        async with Bot(emulator.token, base_url=emulator.base_url) as tg:
            transports = {"zalo": process.runtime.transport, "telegram": TelegramTransport(tg)}
            return await OutboxSender(province, transports, per_chat_interval=0, idle_poll=0.05,
                                      quiet=None).run(until_idle=True)

    stats = process.running.run(send())
    assert (stats.sent, stats.failed) == (5, 1)  # 3 announcements and 2 notices sent; DV004 not reached
    assert len(bot_a.calls("sendMessage")) == sent_by_a
    assert "📢" in other_branch.messages[-1]["text"]
    assert "📢" in both.messages[-1]["text"]
    assert not any("📢" in (m.get("text") or "") for m in only_zalo.messages)
    for person in (secretary, admin):
        told = [m["text"] for m in person.messages if "Chi bo Tan Tien" in (m.get("text") or "")]
        assert len(told) == 1 and "chỉ còn 0/3000 tin" in told[0] and "cần 2 tin" in told[0]
    secretary.send_text("/chualam")
    page = secretary.wait_for(lambda u: "📋" in (u.last() or {}).get("text", ""))["text"]
    lines = {line.split(" — ")[0].split(". ", 1)[1]: line for line in page.splitlines() if line[:1].isdigit()}
    unreached = [name for name, line in lines.items() if "chưa liên lạc được qua Zalo" in line]
    with province.session() as s:
        names = dict(s.execute(select(Member.code, Member.full_name)).all())
    assert unreached == [names["DV004"]]


def test_a_bot_short_of_quota_is_named_to_its_secretaries_and_the_admins_and_refuses_nothing(province):
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
        for code, bot in (("DV004", bots[0]), ("DV015", bots[0]), ("DV034", bots[1])):
            s.add(ChatAccount(channel="zalo", external_id=code, member_id=members[code], linked_at=now, bot_id=bot.id))
        s.add(ChannelUsage(channel=usage_key(bots[0].id), month=month, sent=2999, updated_at=now))
        budget = FleetBudget(province, None, 3000, TZ)
        assert budget.shortfalls(s, [members["DV004"]], now) == {}  # one still fits
        assert budget.shortfalls(s, [members["DV034"]], now) == {}  # bot B has its own quota
        ids = [members["DV004"], members["DV015"], members["DV034"]]
        assert budget.shortfalls(s, ids, now) == {bots[0].id: ([members["DV004"], members["DV015"]], 1)}
        assert budget.refusal(s, ids, now) is None
        assert budget.refusal(s, ids, now) is None  # told once a day
        told = s.execute(select(Member.code, OutboxMessage.payload).join(Member)
                         .where(OutboxMessage.purpose == "bot_quota").order_by(Member.code)).all()
    # the secretaries of ấp 1 and ấp 2 (DV004, DV015), none of ấp 3 or of Tân Hưng; the admin
    assert [code for code, _ in told] == ["AD001", "DV001", "DV011"]
    assert "«DP-TT» chỉ còn 1/3000 tin" in told[0][1]["text"] and "cần 2 tin" in told[0][1]["text"]


def test_a_default_bot_short_of_quota_holds_back_no_branch_bot_and_is_named_to_the_secretaries(province):
    """Beside branch bots, the default bot (ZALO_BOT_TOKEN) is one bot among the others: short of quota it
    refuses nothing; its members beyond what is left go to their other messenger or the call list, the
    branch bots' members get the broadcast, and the secretaries of its members and the admins are told."""
    from bot.channels.zalo.fleet import FleetBudget, FleetTransport
    from bot.outbox.sender import SendError

    now = utcnow()
    month = now.astimezone(TZ).strftime("%Y-%m")
    with province.session() as s:
        units = dict(s.execute(select(Unit.code, Unit.id)).all())
        bot_b = ZaloBot(zalo_id="2", unit_id=units["HQ-TH"], name="HQ-TH", token="2:x", webhook_secret="s" * 16,
                        mode="webhook", created_at=now)
        s.add(bot_b)
        s.flush()
        members = dict(s.execute(select(Member.code, Member.id)).all())
        for code, bot in (("DV004", None), ("DV015", None), ("DV034", bot_b.id)):
            s.add(ChatAccount(channel="zalo", external_id=code, member_id=members[code], linked_at=now, bot_id=bot))
        s.add(ChannelUsage(channel="zalo", month=month, sent=2999, updated_at=now))
        default = ZaloQuota(province, 3000, TZ)
        budget = FleetBudget(province, default, 3000, TZ, default_name="Bot Học Tập")
        ids = [members["DV004"], members["DV015"], members["DV034"]]
        assert budget.shortfalls(s, ids, now) == {None: ([members["DV004"], members["DV015"]], 1)}
        assert budget.refusal(s, ids, now) is None  # bot B's member is not held back
        told = s.execute(select(Member.code, OutboxMessage.payload).join(Member)
                         .where(OutboxMessage.purpose == "bot_quota").order_by(Member.code)).all()
    assert [code for code, _ in told] == ["AD001", "DV001", "DV011"]  # the admin; the secretaries of ấp 1 and ấp 2
    assert "«Bot Học Tập» chỉ còn 1/3000 tin" in told[0][1]["text"] and "cần 2 tin" in told[0][1]["text"]

    class Default:  # the default bot's transport: it must not be reached once its quota is used up
        quota, sent = default, []

        async def deliver(self, external_id, reply, attachment):
            self.sent.append(external_id)

    class Fleet:
        clock = staticmethod(utcnow)

    transport = FleetTransport(Fleet(), Default())
    asyncio.run(transport.deliver("DV004", Reply("📢"), None, via=None))  # the last message left
    default.add(1, now)
    with pytest.raises(SendError) as refused:
        asyncio.run(transport.deliver("DV015", Reply("📢"), None, via=None))
    assert refused.value.kind == "permanent" and CALL_LIST in str(refused.value)
    assert Default.sent == ["DV004"]


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
