"""Announcements and reminders through the durable outbox, delivered to the Telegram emulator."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from telegram import Bot

from bot.channels.telegram import TelegramTransport
from bot.domain.replies import Reply
from bot.outbox.queue import QuietHours
from bot.outbox.sender import OutboxSender
from bot.scheduling.due import Schedule, run_due
from bot.services.rounds import open_round
from bot.storage.models import Attempt, ChatAccount, Member, OutboxMessage, Round

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
OPENS = datetime(2026, 12, 1, 7, 0, tzinfo=TZ)
CLOSES = datetime(2026, 12, 15, 21, 0, tzinfo=TZ)


def local(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=TZ).astimezone(timezone.utc)


@pytest.fixture
def branch(province, emulator):
    """A round for branch DP-TT-01 (10 members), all linked to emulator users except DV010."""
    with province.session() as s:
        s.delete(s.get(Round, 1))  # only this test's round is on the calendar
        s.flush()
        rnd = open_round(s, "kh-83-hu-tuy-phuoc", ["DP-TT-01"], OPENS, CLOSES, 98, OPENS - timedelta(days=1))
        members = s.scalars(select(Member).where(Member.code.between("DV001", "DV009")).order_by(Member.code)).all()
        for m in members:
            s.add(ChatAccount(channel="telegram", external_id=str(50_000 + m.id), member_id=m.id, linked_at=OPENS))
        users = {m.code: emulator.user(50_000 + m.id, first_name=m.code) for m in members}
        rid = rnd.id
    for user in users.values():  # a member must have started the bot before it can write to them
        user.send_text("/start")
    return rid, users


def deliver(db, emulator, at: datetime, **kwargs):
    async def go():
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, TelegramTransport(bot) as transport:
            sender = OutboxSender(db, {"telegram": transport}, clock=lambda: at,
                                  rate=kwargs.pop("rate", 200), per_chat_interval=kwargs.pop("per_chat", 0.0), **kwargs)
            return await sender.run(until_idle=True)

    return asyncio.run(go())


def received(user) -> list[str]:
    return [m["text"] for m in user.messages if m["text"].startswith(("📢", "⏰"))]


def finished(db, round_id: int, codes, started: str) -> None:
    """These members handed in the quiz (9/10) ten minutes after ``started`` (local time)."""
    with db.session() as s:
        for code in codes:
            m = s.scalar(select(Member).where(Member.code == code))
            s.add(Attempt(round_id=round_id, member_id=m.id, number=1, started_at=local(started),
                          submitted_at=local(started) + timedelta(minutes=10), question_count=10, correct_count=9,
                          score=90.0, passed=True))


def statuses(db) -> dict[str, int]:
    with db.session() as s:
        return dict(s.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())


def test_announcement_reaches_every_linked_member_once(province, emulator, branch):
    round_id, users = branch
    schedule = Schedule()
    report = run_due(province, local("2026-12-01 07:00"), schedule)
    assert f"announce:{round_id}: 9 message(s)" in report.jobs
    assert report.skipped_unlinked == 1  # DV010 never linked a messenger
    again = run_due(province, local("2026-12-01 07:01"), schedule)
    assert not [j for j in again.jobs if j.startswith(f"announce:{round_id}")]
    stats = deliver(province, emulator, local("2026-12-01 07:01"))
    assert stats.sent == 9
    for user in users.values():
        texts = received(user)
        assert len(texts) == 1 and texts[0].startswith("📢 Đợt học tập mới: 83-KH/HU")
        assert "trước 21:00 ngày 15/12/2026" in texts[0]
    assert deliver(province, emulator, local("2026-12-01 07:05")).sent == 0


def test_nothing_is_sent_in_quiet_hours_it_waits_for_the_morning(province, emulator, branch):
    round_id, users = branch
    with province.session() as s:
        s.get(Round, round_id).opens_at = local("2026-12-01 22:30")
    run_due(province, local("2026-12-01 22:30"), Schedule())
    assert deliver(province, emulator, local("2026-12-01 23:00")).sent == 0
    assert deliver(province, emulator, local("2026-12-02 06:59")).sent == 0
    assert all(received(u) == [] for u in users.values())
    assert deliver(province, emulator, local("2026-12-02 07:00")).sent == 9


def test_an_announcement_waiting_for_the_morning_names_the_deadline_moved_overnight(province, emulator, branch):
    """Opened at 22:30, announced at 07:00; extended from 15/12 to 20/12 at 23:00: the members read the new
    deadline, once each, and the link in the announcement still opens the round."""
    from bot.services.rounds import extend_round

    round_id, users = branch
    with province.session() as s:
        s.get(Round, round_id).opens_at = local("2026-12-01 22:30")
    run_due(province, local("2026-12-01 22:30"), Schedule())
    with province.session() as s:
        extend_round(s, round_id, local("2026-12-20 21:00"), local("2026-12-01 23:00"), TZ)
    run_due(province, local("2026-12-02 07:00"), Schedule())
    assert deliver(province, emulator, local("2026-12-02 07:00")).sent == 9
    for user in users.values():
        texts = received(user)
        assert len(texts) == 1 and "trước 21:00 ngày 20/12/2026" in texts[0], texts
        assert "15/12/2026" not in texts[0]


def test_a_deadline_moved_while_the_scheduler_tick_runs_is_the_one_the_announcement_names(
        province, emulator, branch, monkeypatch):
    """The tick has read the round (deadline 15/12) when a cadre extends it to 20/12, before the announcement's
    job runs: the job does not queue the old deadline; the next tick announces the new one, once each."""
    from bot.scheduling import due
    from bot.services.rounds import extend_round

    round_id, users = branch
    real_once, extended = due._once, []

    def extended_first(db, key, *args, **kwargs):  # the cadre's extension lands between the read and the job
        if not extended:
            extended.append(key)
            with province.session() as s:
                extend_round(s, round_id, local("2026-12-20 21:00"), local("2026-12-01 07:00"), TZ)
        return real_once(db, key, *args, **kwargs)

    monkeypatch.setattr(due, "_once", extended_first)
    first = run_due(province, local("2026-12-01 07:00"), Schedule())
    assert extended == [f"announce:{round_id}"]
    second = run_due(province, local("2026-12-01 07:00") + timedelta(seconds=15), Schedule())
    assert f"announce:{round_id}: 9 message(s)" in first.jobs + second.jobs
    assert deliver(province, emulator, local("2026-12-01 07:01")).sent == 9
    for user in users.values():
        texts = received(user)
        assert len(texts) == 1 and "trước 21:00 ngày 20/12/2026" in texts[0], texts


def test_announcements_a_sender_holds_when_the_deadline_moves_go_back_to_the_queue_and_out_reworded(
        province, emulator, branch):
    """A sender has claimed the announcements (their text read) when the round is extended: it may not send them
    (its claim is gone); the next sending round sends each once, naming the new deadline."""
    from bot.outbox import queue
    from bot.services.rounds import extend_round

    round_id, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    with province.session() as s:
        held = queue.claim(s, "sender-a", local("2026-12-01 07:00"), limit=20)
    assert len(held) == 9
    with province.session() as s:
        extend_round(s, round_id, local("2026-12-20 21:00"), local("2026-12-01 07:00"), TZ)
    with province.session() as s:
        assert queue.mark_sending_many(s, [(r.id, "telegram", local("2026-12-01 07:00")) for r in held], "sender-a") == set()
    assert deliver(province, emulator, local("2026-12-01 07:01")).sent == 9
    for user in users.values():
        texts = received(user)
        assert len(texts) == 1 and "trước 21:00 ngày 20/12/2026" in texts[0], texts


def test_an_announcement_waiting_its_turn_at_a_paced_messenger_is_not_sent_with_the_old_deadline_once_reclaimed(
        province, emulator, branch):
    """On Zalo a claimed announcement waits its turn for seconds before its request leaves. If the round is
    extended meanwhile, its row goes back to the queue and the same sender may claim it again, reworded: the job
    still waiting with the old words must then send nothing (its claim is over), or the member would get both."""
    from bot.outbox import queue
    from bot.services.rounds import extend_round

    round_id, _users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    first_claim = local("2026-12-01 07:00")
    with province.session() as s:
        old = queue.claim(s, "sender-a", first_claim, limit=20)[0]
    with province.session() as s:
        extend_round(s, round_id, local("2026-12-20 21:00"), first_claim, TZ)
    second_claim = first_claim + timedelta(seconds=2)
    with province.session() as s:
        again = {r.id: r for r in queue.claim(s, "sender-a", second_claim, limit=20)}
    assert old.id in again  # the same sender holds it again, with the new words
    with province.session() as s:
        assert not queue.mark_sending(s, old.id, "zalo", "sender-a", first_claim)  # the old job: nothing
        # nor may the old job settle it, should its turn end in a refusal before any request (a used-up quota)
        queue.mark_failed(s, old.id, "zalo", "the bot's monthly quota is used up", first_claim)
        queue.retry_later(s, old.id, second_claim + timedelta(minutes=5), "busy", None, first_claim)
        queue.mark_dropped(s, old.id, "expired before it could be sent", first_claim)
    with province.session() as s:
        assert queue.mark_sending(s, old.id, "zalo", "sender-a", second_claim)
        queue.mark_sent(s, old.id, "zalo", second_claim, second_claim)
    assert statuses(province).get("sent") == 1


def test_announcements_one_sender_claims_twice_around_an_extension_reach_each_member_once_with_the_new_deadline(
        province, emulator, branch):
    """A sender holds a second's worth of claimed rows before it starts them. If the round is extended meanwhile,
    the rows go back to the queue and the same sender's next claim, at the same instant by its clock, takes them
    again with the new words: the jobs still holding the old words must send nothing, whichever group starts
    first, or each member reads both deadlines. (The sender's steps are driven one by one to force the order.)"""
    from bot.services.rounds import extend_round

    round_id, users = branch
    at = local("2026-12-01 07:00")
    run_due(province, at, Schedule())

    async def go():
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, TelegramTransport(bot) as transport:
            sender = OutboxSender(province, {"telegram": transport}, clock=lambda: at, rate=200, per_chat_interval=0.0)
            stale = await asyncio.to_thread(sender._claim, at, 20)
            with province.session() as s:
                extend_round(s, round_id, local("2026-12-20 21:00"), at, TZ)
            fresh = await asyncio.to_thread(sender._claim, at, 20)
            assert {j.id for j in stale} == {j.id for j in fresh} and len(fresh) == 9
            await sender._start_group(stale[:4])  # these start before their fresh copies...
            await sender._start_group(fresh)
            await sender._start_group(stale[4:])  # ...and these after
            while sender._in_flight:
                await asyncio.gather(*list(sender._in_flight))
            await sender._apply_marks()

    asyncio.run(go())
    for user in users.values():
        texts = received(user)
        assert len(texts) == 1 and "trước 21:00 ngày 20/12/2026" in texts[0], texts
    assert statuses(province) == {"sent": 9}


def test_a_waiting_reminder_that_does_not_name_the_old_deadline_is_dropped_not_sent_wrong(province, emulator, branch):
    from bot.outbox import queue
    from bot.services.rounds import extend_round

    round_id, users = branch
    with province.session() as s:
        dv002 = s.scalar(select(Member.id).where(Member.code == "DV002"))
        queue.enqueue_many(s, purpose="remind", keyed_members=[(f"remind:{round_id}:x:{dv002}", dv002)],
                           reply=Reply("⏰ Nhắc nhở: hạn cuối là ngày 15 tháng 12."), now=local("2026-12-12 22:00"),
                           not_before=local("2026-12-13 07:00"), expires_at=CLOSES, round_id=round_id)
        extend_round(s, round_id, local("2026-12-20 21:00"), local("2026-12-12 23:00"), TZ)
    assert statuses(province) == {"dropped": 1}
    assert deliver(province, emulator, local("2026-12-13 07:00")).sent == 0


def test_messages_in_hand_when_quiet_hours_begin_wait_for_the_morning_and_go_out_once(province, emulator, branch):
    """A sender holds a second or two of claimed rows; at 21:00 (or after a flood-control wait that ends after it)
    those not yet started go back to the queue: nothing announced at night, each member reached once."""
    round_id, users = branch
    with province.session() as s:
        s.get(Round, round_id).opens_at = local("2026-12-01 20:58")
    run_due(province, local("2026-12-01 20:58"), Schedule())

    def clock():  # 20:59:59 until the first announcement leaves, then past nine in the evening
        sent = len(emulator.calls("sendMessage"))
        return local("2026-12-01 20:59") + timedelta(seconds=59 if not sent else 90)

    async def go(at):
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, TelegramTransport(bot) as transport:
            return await OutboxSender(province, {"telegram": transport}, clock=at, rate=2, per_chat_interval=0.0,
                                      quiet=QuietHours(tz=TZ)).run(until_idle=True)

    emulator.reset_log()
    evening = asyncio.run(go(clock))
    assert evening.sent == 1 and statuses(province).get("pending") == 8  # only the one started before 21:00
    morning = asyncio.run(go(lambda: local("2026-12-02 07:00")))
    assert evening.sent + morning.sent == 9
    assert all(len(received(u)) == 1 for u in users.values())


def reminders_of(user) -> list[str]:
    return [t for t in received(user) if t.startswith("⏰")]


def test_a_reminder_waiting_for_the_morning_names_the_deadline_moved_overnight(province, emulator, branch):
    """Queued at 22:00 for 07:00, naming 15/12; the round is extended to 20/12 at 23:00: the reminder goes out
    at 07:00 naming 20/12 (nobody is told the old deadline), then the new deadline's slots remind once each."""
    from bot.services.rounds import extend_round

    round_id, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    deliver(province, emulator, local("2026-12-01 07:01"))
    queued = run_due(province, local("2026-12-12 22:00"), Schedule())  # the 12/12 08:00 slot, caught up late
    assert [j for j in queued.jobs if j.startswith("remind")] == [f"remind:{round_id}:2026-12-12: 9 message(s)"]
    with province.session() as s:
        extend_round(s, round_id, local("2026-12-20 21:00"), local("2026-12-12 23:00"), TZ)
    run_due(province, local("2026-12-13 07:00"), Schedule())  # no reminder slot of the new deadline yet
    assert deliver(province, emulator, local("2026-12-13 07:00")).sent == 9
    for at in ("2026-12-17 08:00", "2026-12-19 08:00", "2026-12-20 08:00"):  # 3 and 1 days before 20/12
        run_due(province, local(at), Schedule())
        deliver(province, emulator, local(at))
    for user in users.values():
        reminders = reminders_of(user)
        assert len(reminders) == 3 and all("21:00 ngày 20/12/2026" in t for t in reminders), reminders
        assert not any("15/12/2026" in t for t in reminders)


@pytest.mark.parametrize("moved_at, new_deadline", [("2026-12-14 21:30", "2026-12-16 23:59"),
                                                    ("2026-12-14 10:00", "2026-12-16 21:00")],
                         ids=["in-the-evening", "in-the-day"])
def test_a_deadline_moved_after_the_last_reminder_reminds_only_at_the_new_deadlines_slots_still_ahead(
        province, emulator, branch, moved_at, new_deadline):
    """Reminded on 12/12 and 14/12 for 15/12; moved to 16/12 on 14/12: the new deadline's slot three days
    before (13/12) had passed when it moved, so it is not caught up; its slot one day before (15/12 08:00)
    reminds once. No reminder at once, none an hour apart."""
    from bot.services.rounds import extend_round

    round_id, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    deliver(province, emulator, local("2026-12-01 07:01"))
    for at in ("2026-12-12 08:00", "2026-12-14 08:00"):
        run_due(province, local(at), Schedule())
        deliver(province, emulator, local(at))
    with province.session() as s:
        extend_round(s, round_id, local(new_deadline), local(moved_at), TZ)
    sent = {}
    for at in (moved_at, "2026-12-14 23:00", "2026-12-15 07:00", "2026-12-15 08:00", "2026-12-16 08:00"):
        run_due(province, local(at), Schedule())
        sent[at] = deliver(province, emulator, local(at), quiet=QuietHours(tz=TZ)).sent
    assert sent == {moved_at: 0, "2026-12-14 23:00": 0, "2026-12-15 07:00": 0, "2026-12-15 08:00": 9,
                    "2026-12-16 08:00": 0}
    reminders = reminders_of(users["DV002"])
    assert len(reminders) == 3 and new_deadline[8:10] + "/12/2026" in reminders[-1]


def test_a_secretarys_evening_nudge_goes_out_in_the_morning_with_the_deadline_moved_overnight(province, emulator,
                                                                                            branch):
    """/nhacnho at 21:30 is held for 07:00; a cadre extends the round at 22:00: the nudge the secretary was told
    about still goes out, naming the new deadline."""
    from bot.services.chat import ChannelTraits, ChatService
    from bot.services.rounds import extend_round

    round_id, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    deliver(province, emulator, local("2026-12-01 07:01"))
    told = ChatService(province, ChannelTraits("telegram", 4096), TZ).on_text(
        str(users["DV001"].id), "/nhacnho", local("2026-12-05 21:30")).replies[0].text
    assert "07:00" in told
    with province.session() as s:
        extend_round(s, round_id, local("2026-12-20 23:59"), local("2026-12-05 22:00"), TZ)
    run_due(province, local("2026-12-06 07:00"), Schedule())
    assert deliver(province, emulator, local("2026-12-06 07:00"), quiet=QuietHours(tz=TZ)).sent >= 8
    reminders = reminders_of(users["DV002"])
    assert len(reminders) == 1 and "23:59 ngày 20/12/2026" in reminders[0], reminders


def test_a_send_answered_too_late_is_uncertain_and_never_sent_twice(province, emulator, branch):
    """Telegram took the request but answered after the read timeout (it delivered the message): as after a kill
    during the request, the row is ``uncertain``, shown to the secretary, never sent again."""
    import threading

    round_id, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    slow = users["DV003"]
    emulator.hold(slow.id)
    threading.Timer(4, emulator.release, args=(slow.id,)).start()

    async def go():
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, \
                TelegramTransport(bot, timeout=2) as transport:
            return await OutboxSender(province, {"telegram": transport}, clock=lambda: local("2026-12-01 07:01"),
                                      rate=200, per_chat_interval=0.0).run(until_idle=True)

    stats = asyncio.run(go())
    assert stats.sent == 8 and stats.uncertain == 1 and statuses(province).get("uncertain") == 1
    assert deliver(province, emulator, local("2026-12-01 09:00")).sent == 0
    slow.wait_for(lambda u: received(u), timeout=10)  # Telegram answers once the network lets it
    assert len(received(slow)) == 1  # delivered once, by the request that timed out


def test_a_deadline_moved_later_the_same_day_reminds_the_waiting_members_with_the_new_time(province, emulator,
                                                                                          branch):
    """The slot's job had run (reminders queued for 07:00); the deadline moves from 21:00 to 23:30 the same day:
    the reminders go out at 07:00 naming 23:30, once, and a member reminded before is not reminded again."""
    from bot.services.rounds import extend_round

    round_id, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    deliver(province, emulator, local("2026-12-01 07:01"))
    run_due(province, local("2026-12-14 22:00"), Schedule())  # the 14/12 08:00 slot, caught up late
    with province.session() as s:
        extend_round(s, round_id, local("2026-12-15 23:30"), local("2026-12-14 23:00"), TZ)
    run_due(province, local("2026-12-15 07:00"), Schedule())
    deliver(province, emulator, local("2026-12-15 07:01"))
    for user in users.values():
        reminders = [t for t in received(user) if t.startswith("⏰")]
        assert len(reminders) == 1 and "23:30 ngày 15/12/2026" in reminders[0], reminders
    run_due(province, local("2026-12-15 08:00"), Schedule())
    assert deliver(province, emulator, local("2026-12-15 08:01")).sent == 0


def test_a_long_message_whose_first_part_got_no_answer_sends_only_the_rest_later(province, emulator, branch):
    """Part 1 of 2 left and got no answer in time (Telegram delivered it): the retry sends part 2 only."""
    import threading

    from bot.outbox import queue

    _round_id, users = branch
    slow = users["DV004"]
    with province.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV004"))
        queue.enqueue(s, dedupe_key="long:1", purpose="digest", member_id=member.id, now=local("2026-12-01 07:00"),
                      reply=Reply(("Đoạn một. " * 350).strip() + "\n\n" + ("Đoạn hai. " * 300).strip()))
    emulator.hold(slow.id)
    threading.Timer(4, emulator.release, args=(slow.id,)).start()

    async def go(at):
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, \
                TelegramTransport(bot, timeout=2) as transport:
            return await OutboxSender(province, {"telegram": transport}, clock=lambda: at, rate=200,
                                      per_chat_interval=0.0).run(until_idle=True)

    first = asyncio.run(go(local("2026-12-01 07:01")))
    assert first.sent == 0 and first.retried == 1
    slow.wait_for(lambda u: any(m["text"].startswith("Đoạn một") for m in u.messages), timeout=10)
    assert asyncio.run(go(local("2026-12-01 07:10"))).sent == 1
    texts = [m["text"] for m in slow.messages]
    assert sum(t.startswith("Đoạn một") for t in texts) == 1 and sum(t.startswith("Đoạn hai") for t in texts) == 1


def test_reminders_skip_members_who_finished_and_are_caught_up_once(province, emulator, branch):
    round_id, users = branch
    schedule = Schedule()
    run_due(province, local("2026-12-01 07:00"), schedule)
    finished(province, round_id, ["DV001"], "2026-12-02 09:00")
    # the bot was down from 11/12 until 14/12 10:00: both reminder slots (12/12 and 14/12 at 08:00)
    # were missed; only the latest is caught up, and only once
    first = run_due(province, local("2026-12-14 10:00"), schedule)
    assert [j for j in first.jobs if j.startswith("remind")] == [f"remind:{round_id}:2026-12-14: 8 message(s)"]
    assert not [j for j in run_due(province, local("2026-12-14 10:01"), schedule).jobs if j.startswith("remind")]
    deliver(province, emulator, local("2026-12-14 10:02"))
    assert [t[:1] for t in received(users["DV001"])] == ["📢"]  # finished: announcement only
    assert [t[:1] for t in received(users["DV002"])] == ["📢", "⏰"]
    # after the deadline nothing is reminded
    late = run_due(province, local("2026-12-15 22:00"), schedule)
    assert not [j for j in late.jobs if j.startswith("remind")]


def test_a_reminder_caught_up_after_downtime_is_not_followed_by_the_days_own_an_hour_later(province, emulator, branch):
    round_id, users = branch
    run_due(province, OPENS, Schedule())
    deliver(province, emulator, OPENS)
    # down from 11/12 until 14/12 07:30: the 12/12 slot is caught up, and the 14/12 one comes half an hour later
    caught_up = run_due(province, local("2026-12-14 07:30"), Schedule())
    assert [j for j in caught_up.jobs if j.startswith("remind")] == [f"remind:{round_id}:2026-12-12: 9 message(s)"]
    deliver(province, emulator, local("2026-12-14 07:31"))
    own = run_due(province, local("2026-12-14 08:00"), Schedule())
    assert [j for j in own.jobs if j.startswith("remind")] == [f"remind:{round_id}:2026-12-14: 0 message(s)"]
    deliver(province, emulator, local("2026-12-14 08:01"))
    assert [t[:1] for t in received(users["DV002"])] == ["📢", "⏰"]


def test_a_round_opened_after_the_days_reminder_time_is_announced_without_a_reminder(province, emulator, branch):
    """A cadre opens at 10:00 a round "from today" (00:00) closing in three days: the 08:00 slot of its first
    day passed before it existed; its members get the announcement alone, and the next slot's reminder."""
    _round_id, users = branch
    with province.session() as s:
        s.delete(s.get(Round, _round_id))
        s.flush()
        rnd = open_round(s, "kh-83-hu-tuy-phuoc", ["DP-TT-01"], local("2026-12-10 00:00"), local("2026-12-13 21:00"),
                         98, local("2026-12-10 10:00"))
        round_id = rnd.id
    run_due(province, local("2026-12-10 10:00"), Schedule())  # the first tick after it was opened
    deliver(province, emulator, local("2026-12-10 10:01"))
    assert [t[:1] for t in received(users["DV002"])] == ["📢"]
    later = run_due(province, local("2026-12-12 08:00"), Schedule())
    assert [j for j in later.jobs if j.startswith("remind")] == [f"remind:{round_id}:2026-12-12: 9 message(s)"]
    deliver(province, emulator, local("2026-12-12 08:01"))
    assert [t[:1] for t in received(users["DV002"])] == ["📢", "⏰"]


def test_a_secretarys_nudge_and_the_scheduled_reminder_reach_a_member_once_a_day_whichever_comes_first(
        province, emulator, branch):
    from bot.services.chat import ChannelTraits, ChatService

    round_id, users = branch
    run_due(province, OPENS, Schedule())
    deliver(province, emulator, OPENS)
    secretary = ChatService(province, ChannelTraits("telegram", 4096), TZ)
    nudged = secretary.on_text(str(users["DV001"].id), "/nhacnho", local("2026-12-12 06:30")).replies[0].text
    assert "đã gửi nhắc nhở tới 9 đồng chí" in nudged  # held for 07:00; DV010 has no chat
    scheduled = run_due(province, local("2026-12-12 08:00"), Schedule())
    assert [j for j in scheduled.jobs if j.startswith("remind")] == [f"remind:{round_id}:2026-12-12: 0 message(s)"]
    deliver(province, emulator, local("2026-12-12 08:01"))
    assert [t[:1] for t in received(users["DV002"])] == ["📢", "⏰"]
    # the other way round: the scheduler's reminder at 08:00 on 14/12, then the secretary's /nhacnho
    run_due(province, local("2026-12-14 08:00"), Schedule())
    again = secretary.on_text(str(users["DV001"].id), "/nhacnho", local("2026-12-14 09:00")).replies[0].text
    assert "đã gửi nhắc nhở tới 0 đồng chí" in again and "9 đồng chí đã được nhắc hoặc thông báo" in again
    deliver(province, emulator, local("2026-12-14 09:01"))
    assert [t[:1] for t in received(users["DV002"])] == ["📢", "⏰", "⏰"]


def test_a_blocked_member_is_marked_and_not_retried(province, emulator, branch):
    round_id, users = branch
    emulator.block(users["DV003"].id)
    run_due(province, local("2026-12-01 07:00"), Schedule())
    stats = deliver(province, emulator, local("2026-12-01 07:00"))
    assert (stats.sent, stats.failed) == (8, 1)
    with province.session() as s:
        failed = s.scalar(select(OutboxMessage).where(OutboxMessage.status == "failed"))
        assert "blocked" in failed.error
    before = len(emulator.calls("sendMessage"))
    deliver(province, emulator, local("2026-12-01 08:00"))
    assert len(emulator.calls("sendMessage")) == before


def test_a_flood_of_429_delays_but_loses_nothing(province, emulator, branch):
    _round_id, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    emulator.inject_error("sendMessage", 429, retry_after=1, times=5)
    at = local("2026-12-01 07:00")
    first = deliver(province, emulator, at)
    assert first.retried >= 1
    # retried rows wait until their new time; later runs deliver them
    for minute in range(1, 5):
        deliver(province, emulator, at + timedelta(minutes=minute))
    assert statuses(province) == {"sent": 9}
    assert all(len(received(u)) == 1 for u in users.values())


def test_two_schedulers_and_two_senders_on_one_database_send_once(province, emulator, branch):
    _round_id, users = branch
    at = local("2026-12-01 07:00")
    run_due(province, at, Schedule())
    run_due(province, at, Schedule())  # a second process doing the same tick

    async def two_senders():
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, TelegramTransport(bot) as transport:
            senders = [OutboxSender(province, {"telegram": transport}, clock=lambda: at, rate=500,
                                    per_chat_interval=0, worker=f"w{i}") for i in range(2)]
            return await asyncio.gather(*(s.run(until_idle=True) for s in senders))

    results = asyncio.run(two_senders())
    assert sum(r.sent for r in results) == 9
    assert all(len(received(u)) == 1 for u in users.values())


def test_quiet_hours_boundaries():
    quiet = QuietHours(tz=TZ)
    assert quiet.next_allowed(local("2026-12-01 20:59")) == local("2026-12-01 20:59")
    assert quiet.next_allowed(local("2026-12-01 21:00")) == local("2026-12-02 07:00")
    assert quiet.next_allowed(local("2026-12-02 03:00")) == local("2026-12-02 07:00")
    assert quiet.next_allowed(local("2026-12-02 07:00")) == local("2026-12-02 07:00")


def test_a_whole_round_from_announcement_to_closing_report(province, emulator, branch):
    from bot.config import load_settings
    from bot.scheduling.reports import ReportBuilder

    round_id, users = branch
    with province.session() as s:
        cadre = s.scalar(select(Member).where(Member.code == "CB002"))
        s.add(ChatAccount(channel="telegram", external_id=str(50_000 + cadre.id), member_id=cadre.id, linked_at=OPENS))
    boss = emulator.user(50_000 + cadre.id, first_name="CB002")
    boss.send_text("/start")
    builder = ReportBuilder(load_settings(environ={}))
    schedule = Schedule()

    def tick(when: str):
        report = run_due(province, local(when), schedule, builder)
        deliver(province, emulator, local(when))
        return report

    tick("2026-12-01 07:00")  # announcement
    finished(province, round_id, ["DV002", "DV003"], "2026-12-03 09:00")
    digest = tick("2026-12-04 16:00")  # Friday
    assert [j for j in digest.jobs if j.startswith("digest:")] == ["digest:2026-12-04T09:00: 2 message(s)"]
    tick("2026-12-12 08:00")  # 3 days before
    tick("2026-12-14 08:00")  # 1 day before
    closing = tick("2026-12-15 21:00")
    assert f"close:{round_id}: 2 message(s)" in closing.jobs
    assert not any(m.get("text", "").startswith("🏁") for m in boss.messages)  # 21:00: quiet hours
    assert tick("2026-12-16 07:00").jobs == []  # delivered in the morning, not enqueued again

    secretary = [m.get("text") or "" for m in users["DV001"].messages]
    assert any(t.startswith("🗓 Tổng hợp tuần — Chi bộ ấp 1") and "Đã hoàn thành: 2/10 — 20%" in t
               and "Tăng thêm 2 đồng chí" in t for t in secretary)
    assert any(t.startswith("🏁 Kết thúc đợt học tập 83-KH/HU — Chi bộ ấp 1") and "2/10 — 20%" in t for t in secretary)
    assert len([t for t in received(users["DV004"]) if t.startswith("⏰")]) == 2
    assert [t for t in received(users["DV002"]) if t.startswith("⏰")] == []  # finished: no reminders
    cadre_messages = boss.messages
    assert any(m["text"].startswith("🏁 Kết thúc đợt học tập 83-KH/HU — Đảng bộ xã Đồng Phú") for m in cadre_messages)
    files = [m for m in cadre_messages if "file" in m]
    assert len(files) == 1 and files[0]["document"]["file_name"].endswith(".xlsx")
    with province.session() as s:
        assert s.get(Round, round_id).closed_at == CLOSES


def test_a_daily_digest_counts_who_finished_since_yesterdays(province, emulator, branch):
    from bot.config import load_settings
    from bot.scheduling.reports import ReportBuilder

    round_id, users = branch
    builder, schedule = ReportBuilder(load_settings(environ={})), Schedule(digest_cron="0 16 * * *")
    finished(province, round_id, ["DV002", "DV003"], "2026-12-03 09:00")
    for day in ("2026-12-03 16:00", "2026-12-04 16:00"):
        run_due(province, local(day), schedule, builder)
        deliver(province, emulator, local(day))
    digests = [m["text"] for m in users["DV001"].messages if m.get("text", "").startswith("🗓")]
    assert [d.splitlines()[0] for d in digests] == ["🗓 Tổng hợp ngày — Chi bộ ấp 1 (Tân Tiến)"] * 2
    assert "Tăng thêm 2 đồng chí hoàn thành" in digests[0]
    assert "Tăng thêm 0 đồng chí hoàn thành" in digests[1]  # nobody since yesterday's, not "2 this week"


def test_a_round_called_off_before_it_opened_sends_no_closing_report(province, emulator, branch):
    """Nobody had a chance to take part: a closing report would blame the branch for 0% (and announce nothing)."""
    from bot.config import load_settings
    from bot.scheduling.reports import ReportBuilder
    from bot.services.rounds import close_round

    round_id, users = branch
    with province.session() as s:
        close_round(s, round_id, OPENS - timedelta(days=2))
    report = run_due(province, OPENS, Schedule(), ReportBuilder(load_settings(environ={})))
    assert f"close:{round_id}: 0 message(s)" in report.jobs
    assert f"close:{round_id}: closed before it opened; no closing report" in report.dropped
    deliver(province, emulator, OPENS)
    assert not [m for user in users.values() for m in user.messages if m.get("text", "")[:1] in ("📢", "🏁")]


def test_update_ids_are_forgotten_after_a_week(province):
    from bot.scheduling.due import prune_processed_updates
    from bot.storage.models import ProcessedUpdate

    with province.session() as s:
        s.add(ProcessedUpdate(channel="telegram", update_key="old", processed_at=local("2026-12-01 07:00")))
        s.add(ProcessedUpdate(channel="telegram", update_key="new", processed_at=local("2026-12-07 07:00")))
    assert prune_processed_updates(province, local("2026-12-09 07:00")) == 1
    with province.session() as s:
        assert s.scalars(select(ProcessedUpdate.update_key)).all() == ["new"]


def test_an_unexpected_transport_error_keeps_the_message_for_later(province, emulator, branch):
    from bot.outbox.sender import OutboxSender

    class Broken:
        channel = "telegram"

        async def deliver(self, external_id, reply, attachment):
            raise KeyError("surprise")

    run_due(province, local("2026-12-01 07:00"), Schedule())
    stats = asyncio.run(OutboxSender(province, {"telegram": Broken()}, clock=lambda: local("2026-12-01 07:00"),
                                     rate=500, per_chat_interval=0).run(until_idle=True))
    assert stats.sent == 0 and stats.retried == 9
    assert statuses(province) == {"pending": 9}
    deliver(province, emulator, local("2026-12-01 08:00"))
    assert statuses(province) == {"sent": 9}


def refused_once(monkeypatch, module, name: str, times: int | None = 1) -> list[int]:
    """``module.name`` refused by the database on its first ``times`` calls (None: every call), as by a lock
    or a lost connection; returns the list its calls are counted in."""
    from sqlalchemy.exc import OperationalError

    real, calls = getattr(module, name), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if times is None or len(calls) <= times:
            raise OperationalError("UPDATE outbox_messages", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return calls


def test_sends_the_database_refused_to_record_are_recorded_later_and_the_members_next_message_follows(
        province, emulator, branch, monkeypatch):
    from bot.outbox import queue

    _round_id, users = branch
    at = local("2026-12-01 07:00")
    run_due(province, at, Schedule())
    with province.session() as s:  # DV002 also has a second message waiting behind the announcement
        dv002 = s.scalar(select(Member).where(Member.code == "DV002"))
        queue.enqueue(s, dedupe_key="second", purpose="nudge", member_id=dv002.id, reply=Reply("⏰ Nhắc lại"), now=at)
    calls = refused_once(monkeypatch, queue, "mark_sent_many")
    stats = deliver(province, emulator, at)
    assert len(calls) >= 2  # refused, then written
    assert statuses(province) == {"sent": 10}
    assert [t[:1] for t in received(users["DV002"])] == ["📢", "⏰"]
    assert all(len(received(u)) == 1 for code, u in users.items() if code != "DV002")
    assert stats.sent == 10 and stats.uncertain == 0


def test_a_claim_the_database_refused_does_not_stop_the_sender(province, emulator, branch, monkeypatch):
    from bot.outbox import queue

    _round_id, users = branch
    run_due(province, local("2026-12-01 07:00"), Schedule())
    calls = refused_once(monkeypatch, queue, "claim")
    stats = deliver(province, emulator, local("2026-12-01 07:00"))
    assert len(calls) >= 2
    assert stats.sent == 9 and statuses(province) == {"sent": 9}
    assert all(len(received(u)) == 1 for u in users.values())


def test_a_sender_stopped_while_the_database_refuses_its_records_stops_within_seconds_and_sends_nothing_twice(
        province, emulator, branch, monkeypatch):
    """The database starts refusing every "sent" record after the first sends, then the process is asked to
    stop: the sender stops a few seconds later and cleanly, though the database refuses its leaving too (it
    does not wait minutes for a database that does not come back); the messages it could not record are never
    sent again (they count as perhaps delivered) and the rest go out from the next sender."""
    import time

    from bot.outbox import queue
    from bot.outbox.sender import STOP_WAIT

    _round_id, users = branch
    at = local("2026-12-01 07:00")
    run_due(province, at, Schedule())
    refusals = refused_once(monkeypatch, queue, "mark_sent_many", times=None)
    refused_once(monkeypatch, queue, "leave", times=None)

    async def stop_once_refused():
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, TelegramTransport(bot) as transport:
            sender = OutboxSender(province, {"telegram": transport}, clock=lambda: at, rate=200, per_chat_interval=0)
            running = asyncio.create_task(sender.run())
            while not refusals and not running.done():
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            sender.stop()
            asked = time.monotonic()
            await running
            return time.monotonic() - asked

    took = asyncio.run(stop_once_refused())
    assert took < STOP_WAIT + 3, took
    first = sum(len(received(u)) for u in users.values())
    monkeypatch.undo()
    assert 1 <= first < 9
    # a later sender (the stopped one's lease has run out): what went unrecorded is not sent again
    assert deliver(province, emulator, at + timedelta(minutes=5)).sent == 9 - first
    assert statuses(province) == {"uncertain": first, "sent": 9 - first}
    assert all(len(received(u)) == 1 for u in users.values())


def test_a_reminder_waiting_for_the_morning_is_dropped_if_the_member_finished_overnight(province, emulator, branch):
    round_id, users = branch
    run_due(province, OPENS, Schedule())
    deliver(province, emulator, OPENS)  # the announcement
    run_due(province, local("2026-12-12 22:00"), Schedule())  # the reminder waits for 07:00
    finished(province, round_id, ["DV002"], "2026-12-12 23:00")
    stats = deliver(province, emulator, local("2026-12-13 07:00"))
    assert stats.dropped == 1
    assert [t[:1] for t in received(users["DV002"])] == ["📢"]
    assert [t[:1] for t in received(users["DV003"])] == ["📢", "⏰"]


def not_finished_lines(db, secretary_user, at: datetime) -> dict[str, str]:
    """The secretary's /chualam, as {member code: its line}."""
    from bot.services.chat import ChannelTraits, ChatService

    text = ChatService(db, ChannelTraits("telegram", 4096), TZ).on_text(
        str(secretary_user.id), "/chualam", at).replies[0].text
    with db.session() as s:
        names = dict(s.execute(select(Member.full_name, Member.code)).all())
    return {names[line.split(". ", 1)[1].split(" — ")[0]]: line
            for line in text.splitlines() if line[:1].isdigit()}


def test_a_message_in_flight_when_its_sender_died_is_not_sent_again_and_the_secretary_sees_it(
        province, emulator, branch):
    from bot.outbox import queue

    round_id, users = branch
    at = local("2026-12-01 07:00")
    run_due(province, at, Schedule())
    with province.session() as s:  # a sender took every row and died during DV005's request
        dv005 = s.scalar(select(Member).where(Member.code == "DV005"))
        rows = queue.claim(s, "dead-sender", at, 100)
        assert queue.mark_sending(s, next(r.id for r in rows if r.member_id == dv005.id), "telegram", "dead-sender")
    emulator.block(users["DV003"].id)
    stats = deliver(province, emulator, at + timedelta(minutes=5))  # a new sender, later
    assert (stats.sent, stats.failed) == (7, 1)
    assert statuses(province) == {"sent": 7, "failed": 1, "uncertain": 1}
    assert received(users["DV005"]) == []  # never sent twice, and here it never arrived
    assert deliver(province, emulator, at + timedelta(minutes=10)).sent == 0
    lines = not_finished_lines(province, users["DV001"], at + timedelta(minutes=10))
    assert lines["DV005"].endswith("; có thể chưa nhận được tin nhắn về đợt này)")
    assert lines["DV003"].endswith("; không nhận được tin nhắn của bot)")
    assert [code for code, line in lines.items() if "chưa nhận được tin nhắn về đợt này" in line] == ["DV005"]
    # a reminder that surely arrived clears the doubt, and the refusal of one who unblocked the bot: the
    # secretary is not sent to call someone the bot reaches again
    emulator.unblock(users["DV003"].id)
    run_due(province, local("2026-12-12 08:00"), Schedule())
    deliver(province, emulator, local("2026-12-12 08:00"))
    assert [t[:1] for t in received(users["DV005"])] == ["⏰"]
    lines = not_finished_lines(province, users["DV001"], local("2026-12-12 08:05"))
    assert "chưa nhận được tin nhắn về đợt này" not in lines["DV005"]
    assert "không nhận được tin nhắn của bot" not in lines["DV003"]


def test_rows_recorded_as_sent_by_the_old_reconcile_are_marked_uncertain_by_the_migration(province, emulator, branch):
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from alembic.script import ScriptDirectory
    from sqlalchemy import update

    from bot.storage.db import alembic_config

    run_due(province, local("2026-12-01 07:00"), Schedule())
    with province.session() as s:
        first, second = s.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id).limit(2)).all()
        s.execute(update(OutboxMessage).where(OutboxMessage.id == first).values(
            status="sent", sent_at=local("2026-12-01 07:05"), error="uncertain: the sender stopped during the request"))
        s.execute(update(OutboxMessage).where(OutboxMessage.id == second).values(
            status="sent", sent_at=local("2026-12-01 07:01")))
    migration = ScriptDirectory.from_config(alembic_config(province.url)).get_revision("0002_outbox_uncertain").module
    with province.engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        migration.upgrade()
    with province.session() as s:
        rows = {r.id: r for r in s.scalars(select(OutboxMessage).where(OutboxMessage.id.in_((first, second))))}
    assert (rows[first].status, rows[first].sent_at) == ("uncertain", None)
    assert (rows[second].status, rows[second].sent_at) == ("sent", local("2026-12-01 07:01"))


def test_a_sender_stopped_with_claimed_rows_in_hand_puts_them_back_and_each_member_gets_one(
        province, emulator, branch):
    round_id, users = branch
    at = local("2026-12-01 07:00")
    run_due(province, at, Schedule())

    async def stop_after_first_send():
        async with Bot(emulator.token, base_url=emulator.base_url) as bot, TelegramTransport(bot) as transport:
            sender = OutboxSender(province, {"telegram": transport}, clock=lambda: at, rate=2, per_chat_interval=0.0)
            deliver_one = transport.deliver

            async def deliver_then_stop(*args):
                await deliver_one(*args)
                sender.stop()

            transport.deliver = deliver_then_stop
            return await sender.run()

    first = asyncio.run(stop_after_first_send())
    left = statuses(province)
    assert "claimed" not in left  # back in the queue at once, not after a stale claim times out
    assert left["sent"] == first.sent and left["sent"] + left["pending"] == 9
    assert deliver(province, emulator, at).sent == left["pending"]
    assert all(len(received(u)) == 1 for code, u in users.items() if code != "DV010")
