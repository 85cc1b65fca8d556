"""Windows and money on the OA: each message the product starts climbs the ladder (free consultation,
paid consultation, ZNS, call list), the outbox records the rung and its cost, the monthly budget warns at
80% and refuses a broadcast that cannot fit; ZNS keeps to 06:00-21:59; a member on two messengers gets
the last-used one first and the other when the OA cannot reach them."""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select

from bot.channels.zalo import ZaloClient, ZaloTransport
from bot.domain.replies import Reply
from bot.outbox import queue
from bot.outbox.sender import OutboxSender
from bot.storage.models import Member, OutboxMessage, ZaloOaContact, ZaloOaSend
from bot.timeutil import utcnow
from tests.messengers import TZ, say
from tests.test_zalo_channel import ZaloProcess, zalo_link
from tests.test_zalo_oa_channel import OAProcess, oa_link


def shift_to(hour: int) -> timedelta:
    """How far ahead the next ``hour``:00 local time is (the tests' clock runs there)."""
    now = utcnow().astimezone(TZ)
    target = datetime.combine(now.date(), time(hour), tzinfo=TZ)
    return target - now if target > now else target + timedelta(days=1) - now


class Day:
    """The OA process, Zalo's clock and ours, all moved to a chosen local hour."""

    def __init__(self, province, emulator, hour: int = 10, **settings):
        settings.setdefault("zns_last_hours", 0)  # ZNS at any time before the deadline, unless a test says
        self.shift = shift_to(hour)
        emulator.travel(self.shift.total_seconds())
        self.db, self.emulator = province, emulator
        self.process = OAProcess(province, emulator, clock=self.now, paid_consultation=True,
                                 zns_template_id="ZNS-REMIND-1", **settings).start()

    def now(self) -> datetime:
        return utcnow() + self.shift

    def age(self, user, hours: float) -> None:
        """The member's last interaction is ``hours`` older, on Zalo and in our records."""
        self.emulator.age(user, hours * 3600)
        with self.db.session() as s:
            contact = s.get(ZaloOaContact, user.id)
            contact.last_interaction_at -= timedelta(hours=hours)

    def member_id(self, code: str) -> int:
        with self.db.session() as s:
            return s.scalar(select(Member.id).where(Member.code == code))

    def enqueue(self, purpose: str, codes: list[str], text: str = "🔔 Nhắc nhở: hạn hoàn thành 64-KH/TU sắp đến.") -> None:
        with self.db.session() as s:
            queue.enqueue_many(s, purpose=purpose, keyed_members=[(f"{purpose}:t:{c}", self.member_id(c)) for c in codes],
                               reply=Reply(text), now=self.now(), round_id=1)

    def send(self, transports: dict | None = None) -> None:
        sender = OutboxSender(self.db, transports or {"zalo_oa": self.process.runtime.transport}, clock=self.now,
                              per_chat_interval=0)
        self.process.running.run(sender.run(until_idle=True))

    def rungs(self) -> dict[str, tuple[str, int]]:
        with self.db.session() as s:
            rows = s.execute(select(Member.code, ZaloOaSend.rung, ZaloOaSend.cost)
                             .join(OutboxMessage, OutboxMessage.id == ZaloOaSend.outbox_id)
                             .join(Member, Member.id == OutboxMessage.member_id)).all()
        return {code: (rung, cost) for code, rung, cost in rows}

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def day(province, oa_emulator):
    running = Day(province, oa_emulator)
    yield running
    running.stop()


def test_each_member_gets_the_cheapest_rung_that_reaches_them_and_the_outbox_records_it(day, oa_emulator,
                                                                                       oa_invite, province):
    fresh = oa_link(oa_emulator, oa_invite, "DV002", "oa-2")
    lapsed = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
    silent = oa_link(oa_emulator, oa_invite, "DV004", "oa-4", phone="84370089645")
    gone = oa_link(oa_emulator, oa_invite, "DV005", "oa-5")
    day.age(lapsed, 72)  # 3 days: a paid consultation message
    day.age(silent, 240)  # 10 days: no consultation at all; ZNS to the phone
    gone.unfollow()
    day.process.settle(4 * 2 + 1)
    shown = {u.id: len(u.messages) for u in (fresh, lapsed, silent, gone)}
    day.enqueue("remind", ["DV002", "DV003", "DV004", "DV005"])
    day.send()
    assert day.rungs() == {"DV002": ("free", 0), "DV003": ("paid", 55), "DV004": ("zns", 300),
                           "DV005": ("call_list", 0)}
    assert "Nhắc nhở" in fresh.messages[-1]["text"] and "Nhắc nhở" in lapsed.messages[-1]["text"]
    assert [z["phone"] for z in oa_emulator.zns] == ["84370089645"] and silent.messages[-1]["kind"] == "zns"
    assert len(gone.messages) == shown["oa-5"]
    assert oa_emulator.spent == 355  # what Zalo billed is what we recorded
    with province.session() as s:
        status = dict(s.execute(select(Member.code, OutboxMessage.status).join(Member)).all())
    assert status == {"DV002": "sent", "DV003": "sent", "DV004": "sent", "DV005": "failed"}


def test_zns_is_kept_for_the_purposes_set_and_an_announcement_goes_to_the_call_list(day, oa_emulator, oa_invite,
                                                                                     province):
    from bot.services.oversight import not_finished

    silent = oa_link(oa_emulator, oa_invite, "DV004", "oa-4", phone="84370089645")
    day.age(silent, 240)
    day.enqueue("announce", ["DV004"], "📢 Đợt học tập mới: 64-KH/TU")
    day.send()
    assert day.rungs() == {"DV004": ("call_list", 0)} and oa_emulator.zns == [] and oa_emulator.spent == 0
    with province.session() as s:
        secretary = s.scalar(select(Member).where(Member.code == "DV001"))
        listing = "\n".join(r.text for r in not_finished(s, secretary, day.now()))
    assert "Đặng Văn Tuấn — Chi bộ ấp 1 (Tân Tiến) (0370 089 645; chưa liên lạc được qua Zalo)" in listing


def test_zns_is_kept_for_the_last_48_hours_before_the_deadline(province, oa_emulator, oa_invite):
    from bot.storage.models import Round

    day = Day(province, oa_emulator, zns_last_hours=48)
    try:
        silent = oa_link(oa_emulator, oa_invite, "DV004", "oa-4", phone="84370089645")
        day.age(silent, 240)
        day.enqueue("remind", ["DV004"])  # the deadline is 14 days away
        day.send()
        assert day.rungs() == {"DV004": ("call_list", 0)} and oa_emulator.zns == []
        with province.session() as s:
            s.get(Round, 1).closes_at = day.now() + timedelta(hours=30)
            s.execute(OutboxMessage.__table__.delete())
        day.enqueue("remind", ["DV004"])
        day.send()
        assert len(oa_emulator.zns) == 1 and silent.messages[-1]["kind"] == "zns"
    finally:
        day.stop()


def test_zns_waits_for_the_morning_outside_its_hours_and_goes_then_however_long_the_night(
        province, oa_emulator, oa_invite):
    """Waiting for 06:00 is not a failed try: the reminder is not given up after the sender's retries (the
    quiet hours may allow sending at 23:00, ZNS does not) and goes at 06:00."""
    night = Day(province, oa_emulator, hour=23)
    try:
        silent = oa_link(oa_emulator, oa_invite, "DV004", "oa-4", phone="84370089645")
        night.age(silent, 240)
        night.enqueue("remind", ["DV004"])
        night.send()
        with province.session() as s:
            row = s.scalar(select(OutboxMessage))
        assert row.status == "pending" and "06:00" in row.error and oa_emulator.zns == []
        assert row.attempts == 0
        morning = (night.now().astimezone(TZ) + timedelta(days=1)).replace(hour=6, minute=0, second=0, microsecond=0)
        assert abs((row.not_before.replace(tzinfo=timezone.utc) - morning).total_seconds()) < 1
        night.shift += timedelta(hours=7)  # 06:00 the next morning
        oa_emulator.travel(7 * 3600)
        night.send()
        with province.session() as s:
            assert s.scalar(select(OutboxMessage.status)) == "sent"
        assert len(oa_emulator.zns) == 1
    finally:
        night.stop()


def test_a_night_reminder_for_a_round_ending_before_06_00_goes_to_the_call_list_not_to_a_late_zns(
        province, oa_emulator, oa_invite):
    from bot.storage.models import Round

    night = Day(province, oa_emulator, hour=23)
    try:
        silent = oa_link(oa_emulator, oa_invite, "DV004", "oa-4", phone="84370089645")
        night.age(silent, 240)
        with province.session() as s:
            s.get(Round, 1).closes_at = night.now() + timedelta(hours=4)  # 03:00: ZNS could only go after it
        night.enqueue("remind", ["DV004"])
        other = oa_link(oa_emulator, oa_invite, "DV005", "oa-5", phone="0912345605")
        night.age(other, 240)
        with province.session() as s:  # a message of no round, of no use after 02:00
            queue.enqueue(s, dedupe_key="remind:t:solo", purpose="remind", member_id=night.member_id("DV005"),
                          reply=Reply("🔔 Nhắc nhở"), now=night.now(), expires_at=night.now() + timedelta(hours=3))
        night.send()
        with province.session() as s:
            assert set(s.scalars(select(OutboxMessage.status))) == {"failed"}
        assert oa_emulator.zns == []
        assert night.rungs() == {"DV004": ("call_list", 0), "DV005": ("call_list", 0)}
    finally:
        night.stop()


def test_the_budget_warns_at_80_percent_and_refuses_a_reminder_round_that_cannot_fit(province, oa_emulator,
                                                                                     oa_invite, caplog):
    day = Day(province, oa_emulator, monthly_budget=350)
    try:
        secretary = oa_link(oa_emulator, oa_invite, "DV001", "oa-1")
        lapsed = oa_link(oa_emulator, oa_invite, "DV002", "oa-2", phone="0333378379")
        day.age(lapsed, 240)
        caplog.set_level(logging.WARNING)
        assert "đã gửi nhắc nhở tới" in say(secretary, "/nhacnho", "nhắc nhở")
        day.send()
        assert day.rungs()["DV002"] == ("zns", 300)
        assert any("300 đ of the 350 đ monthly budget spent" in r.getMessage() for r in caplog.records)
        another = oa_link(oa_emulator, oa_invite, "DV003", "oa-3", phone="0387382584")
        day.age(another, 240)
        refused = say(secretary, "/nhacnho", "chưa gửi")
        # DV003's ZNS alone: DV002 was nudged today already (and paid for), so is not priced again
        assert "cần khoảng 300 đ tin Zalo OA nhưng ngân sách tháng" in refused and "chỉ còn 50 đ" in refused
        assert "nâng ngân sách, hoặc đồng chí nhắc trực tiếp" in refused
        with province.session() as s:
            assert s.scalar(select(OutboxMessage).where(OutboxMessage.member_id == day.member_id("DV003"))) is None
    finally:
        day.stop()


def test_reminders_sent_together_never_spend_past_the_monthly_budget(province, oa_emulator, oa_invite):
    """Five ZNS reminders in flight together (enqueued before the budget was lowered) and 650 đ for the month:
    two go by ZNS; the others, which the budget cannot pay, go to the secretary's call list instead of each
    counting the same đồng left as theirs."""
    day = Day(province, oa_emulator, monthly_budget=650)
    codes = ["DV002", "DV003", "DV004", "DV005", "DV006"]
    try:
        for n, code in enumerate(codes):
            day.age(oa_link(oa_emulator, oa_invite, code, f"oa-{n}", phone=f"09123456{n:02d}"), 240)
        day.enqueue("remind", codes)
        day.send()
        assert len(oa_emulator.zns) == 2
        assert sorted(rung for rung, _cost in day.rungs().values()) == ["call_list"] * 3 + ["zns"] * 2
        assert day.process.budget().used(day.now()) == 600
    finally:
        day.stop()


def test_an_announcement_that_costs_nothing_on_the_oa_is_not_held_back_by_a_budget_only_reminders_would_exceed(
        province, oa_emulator, oa_invite):
    """ZNS is kept for reminders (the default), so members outside the window get the announcement on the call
    list, free: the budget guard prices it so and lets it out, to every messenger; a reminder round to the same
    members by ZNS (900 đ) is what it refuses."""
    from bot.scheduling.due import Schedule, run_due
    from bot.storage.models import Round

    day = Day(province, oa_emulator, monthly_budget=350)
    try:
        for code, uid, phone in (("DV002", "oa-2", "0333378379"), ("DV003", "oa-3", "0387382584"),
                                 ("DV004", "oa-4", "84370089645")):
            day.age(oa_link(oa_emulator, oa_invite, code, uid, phone=phone), 240)
        with province.session() as s:
            s.get(Round, 1).opens_at = day.now() - timedelta(days=1)
        schedule = Schedule(budget=day.process.budget())
        announced = run_due(province, day.now() - timedelta(hours=21), schedule)  # yesterday: not "told lately"
        assert "announce:1: 3 message(s)" in announced.jobs, announced
        with province.session() as s:
            s.get(Round, 1).closes_at = day.now() + timedelta(hours=20)  # the reminder slot one day before
        reminded = run_due(province, day.now(), schedule)
        assert any(j.startswith("remind:1:") and "needs about 900 đ" in j and "(0 đ spent or committed)" in j
                   for j in reminded.dropped), reminded  # the waiting announcements commit nothing
    finally:
        day.stop()


def test_every_message_waiting_for_a_member_counts_against_the_budget_not_one_per_member(province, oa_emulator,
                                                                                         oa_invite):
    """Three reminders wait for one member (three documents closing the same week), each a ZNS of 300 đ: the
    900 đ budget is committed, and a fourth is refused."""
    from bot.storage.models import Round

    day = Day(province, oa_emulator, monthly_budget=900)
    try:
        day.age(oa_link(oa_emulator, oa_invite, "DV002", "oa-2", phone="0333378379"), 240)
        member = day.member_id("DV002")
        with province.session() as s:
            for n in range(3):
                queue.enqueue_many(s, purpose="remind", keyed_members=[(f"remind:t{n}:{member}", member)],
                                   reply=Reply(f"⏰ Nhắc nhở {n}"), now=day.now(), round_id=1)
            closes = s.get(Round, 1).closes_at
            refusal = day.process.budget().refusal(s, [member], day.now(), purpose="remind", closes_at=closes)
        assert refusal is not None and (refusal.needed, refusal.left, refusal.spent) == (300, 0, 900)
    finally:
        day.stop()


def test_a_member_on_two_messengers_gets_the_last_used_first_and_the_other_when_the_oa_cannot_reach(
        day, oa_emulator, oa_invite, zalo_emulator, zalo_invite, province):
    bot = ZaloProcess(province, zalo_emulator).start()
    try:
        on_zalo = zalo_link(zalo_emulator, zalo_invite, "DV006", "z-6")
        on_oa = oa_link(oa_emulator, oa_invite, "DV006", "oa-6")  # used last
        # the Zalo bot's own transport sends in its own event loop (its HTTP pool is bound to it, as in
        # ``hoctap run``, where one loop serves every channel); this sender runs in the OA's loop
        zalo = ZaloClient(zalo_emulator.token, zalo_emulator.base_url)
        transports = {"zalo_oa": day.process.runtime.transport, "zalo": ZaloTransport(zalo, rate=50)}
        day.enqueue("remind", ["DV006"], "🔔 Lần một")
        day.send(transports)
        assert "Lần một" in on_oa.messages[-1]["text"] and "Lần một" not in on_zalo.messages[-1]["text"]
        day.age(on_oa, 240)  # the OA cannot write any more, and there is no phone template for an announcement
        day.enqueue("announce", ["DV006"], "📢 Lần hai")
        day.send(transports)
        assert "Lần hai" in on_zalo.messages[-1]["text"] and "Lần hai" not in on_oa.messages[-1]["text"]
        with province.session() as s:
            assert list(s.scalars(select(ZaloOaSend.rung).order_by(ZaloOaSend.id))) == ["free", "call_list"]
            assert list(s.scalars(select(OutboxMessage.channel).order_by(OutboxMessage.id))) == ["zalo_oa", "zalo"]
        day.process.running.run(zalo.aclose())
    finally:
        bot.stop()


def test_an_interaction_we_did_not_see_is_found_by_the_quota_pre_flight_and_the_message_is_free(
        day, oa_emulator, oa_invite, province):
    member = oa_link(oa_emulator, oa_invite, "DV003", "oa-3", phone="0387382584")
    with province.session() as s:  # our record says 10 days; Zalo saw the member today (a call, a menu tap)
        s.get(ZaloOaContact, "oa-3").last_interaction_at -= timedelta(days=10)
    day.enqueue("remind", ["DV003"])
    day.send()
    assert day.rungs() == {"DV003": ("free", 0)} and oa_emulator.spent == 0 and oa_emulator.zns == []
    assert "Nhắc nhở" in member.messages[-1]["text"]


@pytest.mark.parametrize("stored", ["now", "by-an-earlier-version"])
def test_a_member_who_followed_before_the_bot_came_and_just_typed_is_asked_about_before_paying(
        day, oa_emulator, oa_invite, province, stored):
    """No follow event ever reached us (they followed the OA before rollout): they are not taken for someone who
    unfollowed, and the quota pre-flight finds the call Zalo saw today, so the reminder goes free. Earlier
    versions stored such a member as not following: that alone does not skip the pre-flight either."""
    from bot.services.linking import format_code

    member = oa_emulator.user("oa-7", "0387382584", following=True)
    say(member, format_code(oa_invite("DV007")), "Liên kết thành công")
    with province.session() as s:
        contact = s.get(ZaloOaContact, "oa-7")
        assert contact.following and contact.unfollowed_at is None
        contact.following = stored == "now"
        contact.last_interaction_at -= timedelta(days=10)  # our record: 10 days; Zalo saw a call today
    day.enqueue("remind", ["DV007"])
    day.send()
    assert day.rungs() == {"DV007": ("free", 0)} and oa_emulator.spent == 0 and oa_emulator.zns == []
    assert "Nhắc nhở" in member.messages[-1]["text"]


def test_when_zalo_says_the_window_is_closed_the_message_climbs_to_the_next_rung(day, oa_emulator, oa_invite):
    member = oa_link(oa_emulator, oa_invite, "DV004", "oa-4", phone="84370089645")
    oa_emulator.age(member, 240 * 3600)  # Zalo: 10 days without interaction; our record: just now
    before = len(oa_emulator.calls("cs"))
    day.enqueue("remind", ["DV004"])
    day.send()
    assert len(oa_emulator.calls("cs")) - before == 2  # free, then paid: both refused with -230
    assert day.rungs() == {"DV004": ("zns", 300)} and member.messages[-1]["kind"] == "zns"


def test_a_paid_message_long_enough_for_three_zalo_messages_costs_three(day, oa_emulator, oa_invite):
    lapsed = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
    day.age(lapsed, 72)  # out of the free window: each consultation message is paid
    day.process.settle(2)
    long_text = "\n".join(f"• Nội dung {i}: Kế hoạch số 64-KH/TU, phần đồng chí cần đọc lại." for i in range(80))
    assert len(long_text) > 4000  # Zalo takes 2,000 characters per message
    day.enqueue("remind", ["DV003"], text=long_text)
    day.send()
    parts = [m for m in lapsed.messages if m["text"].startswith("• Nội dung")]
    assert len(parts) == 3
    assert day.rungs() == {"DV003": ("paid", 3 * 55)}
    assert oa_emulator.spent == 3 * 55  # what Zalo billed is what we recorded


def test_a_paid_message_whose_cost_the_database_failed_to_record_is_not_sent_again(day, oa_emulator, oa_invite,
                                                                                  monkeypatch):
    """The message went (Zalo billed it) and the database failed as its cost was written: the member reads it
    once, Zalo bills it once, and the outbox holds it as sent."""
    from sqlalchemy.exc import OperationalError

    from bot.channels.zalo_oa.transport import OATransport

    lapsed = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
    day.age(lapsed, 72)
    day.process.settle(2)

    def database_gone(self, *args, **kwargs):
        raise OperationalError("INSERT INTO zalo_oa_sends", {}, Exception("database is locked"))

    monkeypatch.setattr(OATransport, "_record", database_gone)  # the database failing cannot happen here on cue
    day.enqueue("remind", ["DV003"])
    day.send()
    day.shift += timedelta(minutes=30)  # past any retry's wait
    day.send()  # a later round of the sender
    assert [m["kind"] for m in lapsed.messages if m["text"].startswith("🔔")] == ["cs"]
    assert oa_emulator.spent == 55
    with day.db.session() as s:
        assert s.scalar(select(OutboxMessage.status).where(OutboxMessage.purpose == "remind")) == "sent"


def test_a_long_paid_message_cut_by_a_failure_is_finished_later_each_part_sent_and_paid_once(day, oa_emulator,
                                                                                            oa_invite, province):
    import time as clock

    lapsed = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
    day.age(lapsed, 72)
    day.process.settle(2)
    long_text = "\n".join(f"• Nội dung {i}: Kế hoạch số 64-KH/TU, phần đồng chí cần đọc lại." for i in range(80))
    day.enqueue("remind", ["DV003"], text=long_text)
    oa_emulator.inject_error("cs", 502, after=1)  # the first part goes, the second meets a failing server
    day.send()
    clock.sleep(1.6)  # the retry's back-off
    day.send()
    parts = [m["text"] for m in lapsed.messages if m["text"].startswith("• Nội dung")]
    assert "\n".join(parts).split("\n") == long_text.split("\n") and len(parts) == 3
    with province.session() as s:
        recorded = sum(s.scalars(select(ZaloOaSend.cost)))
        status = s.scalar(select(OutboxMessage.status).where(OutboxMessage.purpose == "remind"))
    assert status == "sent" and recorded == oa_emulator.spent == 3 * 55


def test_a_long_message_refused_partway_by_its_rung_sends_only_the_rest_on_the_next_each_part_paid_once(
        day, oa_emulator, oa_invite, province):
    """Part 1 goes free; Zalo then says the member is out of the free window (-224): parts 2 and 3 go as paid
    consultation messages. Part 1 is not sent again, nor paid for."""
    member = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
    day.process.settle(2)
    long_text = "\n".join(f"• Nội dung {i}: Kế hoạch số 64-KH/TU, phần đồng chí cần đọc lại." for i in range(80))
    day.enqueue("remind", ["DV003"], text=long_text)
    oa_emulator.inject_error("cs", -224, "out of window", after=1)
    day.send()
    parts = [m["text"] for m in member.messages if m["text"].startswith("• Nội dung")]
    assert "\n".join(parts).split("\n") == long_text.split("\n") and len(parts) == 3
    with province.session() as s:
        paid = sorted(s.execute(select(ZaloOaSend.rung, ZaloOaSend.cost)).all())
        status = s.scalar(select(OutboxMessage.status).where(OutboxMessage.purpose == "remind"))
    assert status == "sent" and paid == [("free", 0), ("paid", 2 * 55)]


def test_parts_delivered_before_the_rest_must_wait_for_zns_hours_are_remembered_not_sent_again(
        province, oa_emulator, oa_invite):
    """At 23:00 part 1 goes free, Zalo then refuses the free and the paid rung (-224) and ZNS waits for 06:00:
    the row waits remembering that part 1 was delivered, so the morning's try does not send it again."""
    night = Day(province, oa_emulator, hour=23)
    try:
        oa_link(oa_emulator, oa_invite, "DV003", "oa-3", phone="0387382584")
        night.process.settle(2)
        long_text = "\n".join(f"• Nội dung {i}: Kế hoạch số 64-KH/TU, phần đồng chí cần đọc lại." for i in range(80))
        night.enqueue("remind", ["DV003"], text=long_text)
        oa_emulator.inject_error("cs", -224, "out of window", times=2, after=1)
        night.send()
        with province.session() as s:
            row = s.scalar(select(OutboxMessage).where(OutboxMessage.purpose == "remind"))
            recorded = s.execute(select(ZaloOaSend.rung, ZaloOaSend.cost)).all()
        assert (row.status, row.parts_sent) == ("pending", 1) and "06:00" in row.error
        assert recorded == [("free", 0)]
    finally:
        night.stop()


def test_a_paid_message_zalo_took_but_did_not_answer_in_time_is_uncertain_never_sent_nor_paid_twice(day, oa_emulator,
                                                                                                    oa_invite, province):
    """Zalo took the request and answered after our read timeout (it delivered, and billed, the message): the
    row is ``uncertain``, its cost is recorded once, and a later sending round does not send it again."""
    import threading

    from bot.channels.zalo_oa import OAClient
    from bot.channels.zalo_oa.transport import OATransport

    lapsed = oa_link(oa_emulator, oa_invite, "DV003", "oa-3")
    day.age(lapsed, 72)  # outside the free window: a paid consultation message
    day.process.settle(2)
    day.enqueue("remind", ["DV003"])
    runtime = day.process.runtime
    impatient = OAClient(runtime.tokens, runtime.settings.api_base_url, timeout=1.0, clock=day.now)
    transport = OATransport(impatient, runtime.budget, rate=100, clock=day.now)
    oa_emulator.hold(lapsed.id)
    threading.Timer(2.5, oa_emulator.release, args=(lapsed.id,)).start()
    try:
        day.send({"zalo_oa": transport})
        lapsed.wait_for(lambda u: any(m["text"].startswith("🔔") for m in u.messages), timeout=10)
        day.send({"zalo_oa": transport})  # a later round of the sender
    finally:
        day.process.running.run(impatient.aclose())
    with province.session() as s:
        status = s.scalar(select(OutboxMessage.status).where(OutboxMessage.purpose == "remind"))
    assert status == "uncertain"
    assert [m["text"] for m in lapsed.messages].count("🔔 Nhắc nhở: hạn hoàn thành 64-KH/TU sắp đến.") == 1
    reminders = [call for call in oa_emulator.calls("cs") if call["message"]["text"].startswith("🔔")]
    assert len(reminders) == 1  # never asked twice
    assert day.rungs() == {"DV003": ("paid", 55)} and oa_emulator.spent == 55  # billed once, recorded once


def test_an_interaction_is_stored_at_its_own_time_and_never_moves_back_whatever_the_servers_time_zone(db):
    from sqlalchemy import event

    from bot.channels.zalo_oa.ladder import record_interaction

    if db.engine.dialect.name == "postgresql":  # a server set to local time must change nothing
        db.engine.dispose()
        event.listen(db.engine, "connect",
                     lambda conn, _record: conn.cursor().execute("SET TIME ZONE 'Asia/Ho_Chi_Minh'"))
    first = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    record_interaction(db, "oa-tz", first, True)
    record_interaction(db, "oa-tz", first + timedelta(minutes=5))
    record_interaction(db, "oa-tz", first - timedelta(hours=1))  # an older event arriving late
    with db.session() as s:
        assert s.get(ZaloOaContact, "oa-tz").last_interaction_at == first + timedelta(minutes=5)


@pytest.mark.parametrize("language", ["vi", "km"])
def test_the_longest_announcement_and_reminder_a_document_allows_are_one_zalo_message_each_as_budgets_count_them(
        language):
    """The OA budget and the Zalo bot's monthly quota estimate a broadcast at one message per member. That holds
    for every document the checker accepts: code, title, note and translated title at their longest, a member
    reading the translation, and their own study link on a long public address."""
    from dataclasses import replace

    from bot.channels.zalo.rendering import TEXT_LIMIT, reply_text
    from bot.channels.zalo_oa.rendering import reply_messages
    from bot.content.validate import MAX_CODE_CHARS, MAX_NOTE_CHARS, MAX_TITLE_CHARS
    from bot.domain import messages as msg
    from bot.domain.replies import split_text
    from bot.services.web_links import StudyLinks
    from bot.storage.models import Document, Round

    doc = Document(id="d" * 64, code="Đ" * MAX_CODE_CHARS, title="Ữ" * MAX_TITLE_CHARS, note="ệ" * MAX_NOTE_CHARS,
                   translations={"km": {"title": "ត" * MAX_TITLE_CHARS, "summary": "…"}})
    rnd = Round(id=2**31 - 1, document=doc, closes_at=datetime(2026, 12, 31, 16, 59, tzinfo=timezone.utc))
    link = StudyLinks("https://hoctap.tinhuy.example.gov.vn/mot-duong-dan-rat-dai-cua-tinh-uy", b"k").link("t" * 43)
    for reply in (msg.announcement(rnd, TZ, language), msg.reminder(rnd, TZ, language)):
        reply = replace(reply, link=link)
        assert len(split_text(reply_text(reply), TEXT_LIMIT)) == 1, reply.text[:80]
        assert len(reply_messages(reply)) == 1, reply.text[:80]


def test_a_zns_token_zalo_calls_expired_is_refreshed_once_and_the_reminder_still_goes(day, oa_emulator, oa_invite):
    """-124 is the spec's "ZNS token expired": refreshed and tried again, as -216 is."""
    silent = oa_link(oa_emulator, oa_invite, "DV004", "oa-4", phone="84370089645")
    day.age(silent, 240)
    refreshes = oa_emulator.refreshes
    oa_emulator.inject_error("zns", -124, "ZNS token expired")
    day.enqueue("remind", ["DV004"])
    day.send()
    assert [z["phone"] for z in oa_emulator.zns] == ["84370089645"] and oa_emulator.refreshes == refreshes + 1


def test_a_message_zalo_rate_limits_waits_and_is_sent_not_given_up(day, oa_emulator, oa_invite, province):
    """-32 ("too many requests") says nothing about the member: the announcement is tried again later,
    and the member is never put on the secretary's call list for it."""
    oa_link(oa_emulator, oa_invite, "DV002", "oa-2")
    oa_emulator.inject_error("cs", -32, "Exceed rate limit")
    day.enqueue("announce", ["DV002"], "📢 Đợt học tập mới: 64-KH/TU")
    day.send()
    with province.session() as s:
        row = s.scalar(select(OutboxMessage))
        assert row.status == "pending" and "Exceed rate limit" in row.error
        row.not_before = day.now()  # the retry's time has come
    day.send()
    with province.session() as s:
        assert s.scalar(select(OutboxMessage.status)) == "sent"


def test_a_member_reached_after_a_refusal_leaves_the_secretarys_call_list(day, oa_emulator, oa_invite, province):
    from bot.outbox.queue import delivery_flags

    user = oa_link(oa_emulator, oa_invite, "DV006", "oa-6")
    user.unfollow()
    day.process.settle(3)
    day.enqueue("announce", ["DV006"], "📢 Đợt học tập mới: 64-KH/TU")
    day.send()
    member = day.member_id("DV006")
    with province.session() as s:
        assert delivery_flags(s, 1, [member]) == {member: ["unreachable"]}
    user.follow()  # back: the next reminder reaches them
    day.process.settle(4)
    day.enqueue("remind", ["DV006"])
    day.send()
    with province.session() as s:
        assert [r.status for r in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))] == ["failed", "sent"]
        assert delivery_flags(s, 1, [member]) == {}


def test_a_zns_reminder_keeps_its_deadline_and_is_shortened_at_a_word(day, oa_emulator, oa_invite, province):
    """The template's text parameter holds 100 characters: the reminder's long title is cut at a word, and the
    round's deadline is kept whatever the reminder's wording."""
    from bot.domain.messages import local, reminder
    from bot.storage.models import Round

    silent = oa_link(oa_emulator, oa_invite, "DV004", "oa-4", phone="84370089645")
    day.age(silent, 240)
    with province.session() as s:
        rnd = s.get(Round, 1)
        text, deadline = reminder(rnd, TZ).text, f"Hạn cuối: {local(rnd.closes_at, TZ)}."
        title = rnd.document.title
    day.enqueue("remind", ["DV004"], text)
    day.send()
    content = oa_emulator.zns[0]["template_data"]["noi_dung"]
    assert len(content) <= 100 and content.endswith(f"… {deadline}"), content
    assert content.startswith("⏰ Nhắc nhở: đồng chí chưa hoàn thành bài kiểm tra 64-KH/TU")
    assert content.split("…")[0].split()[-1] in title.split() + ["64-KH/TU", "—"]  # a whole word before the cut
