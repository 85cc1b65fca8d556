"""What is due at time T: a function of the database and the clock, nothing else.

Each job is recorded in ``job_runs`` once done, and each message has a unique outbox key, so running
``run_due`` twice, in two processes, or late after downtime enqueues everything exactly once.
Missed reminder slots are caught up once (only the latest one), never after the deadline, nor a slot of a
moved deadline that had passed when it moved; a reminder skips members told of the round lately
(``queue.REMINDED_RECENTLY``), whatever told them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from bot.domain import messages as msg
from bot.domain.languages import VI
from bot.domain.replies import Reply
from bot.outbox import queue
from bot.outbox.queue import QuietHours
from bot.services.rounds import audience_members
from bot.storage.db import Database
from bot.storage.models import Attempt, ChatAccount, JobRun, Member, OutboxMessage, Round, UnitAncestor

log = logging.getLogger(__name__)
DIGEST_FRESHNESS = timedelta(hours=24)
FINISHED_LONG_AGO = timedelta(days=31)


@dataclass(frozen=True)
class Schedule:
    """When things happen, in local time (from config.yaml ``scheduler``)."""

    tz: ZoneInfo = ZoneInfo("Asia/Ho_Chi_Minh")
    reminder_days_before: tuple[int, ...] = (3, 1)
    reminder_time: time = time(8, 0)
    digest_cron: str = "0 16 * * fri"
    quiet: QuietHours = field(default_factory=QuietHours)
    # A channel's monthly quota (Zalo): ``refusal(session, member_ids, now)`` -> None or why an
    # announcement or reminder cannot be sent in full. A refused one enqueues nothing and is tried
    # again at the next tick (e.g. after the plan was raised or the month turned).
    budget: Any = None
    # Where the study pages are served: a ``web_links.StudyLinks`` that mints each member's own
    # link into announcements and reminders (valid until the round closes), else None.
    links: Any = None

    def digest_trigger(self) -> CronTrigger:
        return CronTrigger.from_crontab(self.digest_cron, timezone=self.tz)


@dataclass
class DueReport:
    """What one run enqueued, for logs, the CLI and tests."""

    jobs: list[str] = field(default_factory=list)
    enqueued: int = 0
    skipped_unlinked: int = 0
    dropped: list[str] = field(default_factory=list)

    def add(self, job: str, enqueued: int) -> None:
        self.jobs.append(f"{job}: {enqueued} message(s)")
        self.enqueued += enqueued


def run_due(db: Database, at: datetime, schedule: Schedule, report_builder=None) -> DueReport:
    """Do every job due at ``at`` that is not done yet; each job is one transaction."""
    report = DueReport()
    with db.session() as s:
        # rounds that ended over a month ago have nothing left to do (their jobs ran at the time)
        rounds = list(s.scalars(select(Round).options(selectinload(Round.document))
                                .where(Round.closes_at > at - FINISHED_LONG_AGO).order_by(Round.id)))
    for rnd in rounds:
        if rnd.opens_at <= at:
            _once(db, f"announce:{rnd.id}", at, report, lambda s, r=rnd: _announce(s, r, at, schedule, report),
                  schedule.tz)
        if rnd.opens_at <= at < rnd.closes_at and rnd.closed_at is None:
            slot = latest_reminder_slot(rnd, at, schedule)
            if slot is not None:
                key = f"remind:{rnd.id}:{slot.astimezone(schedule.tz).date().isoformat()}"
                _once(db, key, at, report, lambda s, r=rnd, k=key: _remind(s, r, k, at, schedule, report),
                      schedule.tz)
        if at >= rnd.closes_at or rnd.closed_at is not None:
            _once(db, f"close:{rnd.id}", at, report,
                  lambda s, r=rnd: _close(s, r, at, schedule, report, report_builder))
    fire = latest_fire(schedule.digest_trigger(), at)
    if fire is not None and at - fire > DIGEST_FRESHNESS:
        fire = None  # a digest caught up days late says nothing useful; the next one will
    if fire is not None and report_builder is not None:
        key = f"digest:{fire.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M')}"
        _once(db, key, at, report, lambda s: report_builder.digest(s, fire, at, schedule, report))
    return report


class RoundChanged(Exception):
    """The round's dates changed after the tick read it (a cadre moved the deadline or closed it meanwhile):
    the job is not done nor recorded now; the next tick reads the round again and does what is due then."""


def _lock_unchanged(s: Session, rnd: Round) -> None:
    """Lock the round for this job's transaction (a deadline moved now waits for the job, and then rewords what
    it queued: ``queue.deadline_moved``); RoundChanged when its dates are no longer those the tick read."""
    live = s.get(Round, rnd.id, with_for_update=True)
    if live is None or (live.opens_at, live.closes_at, live.closed_at) != (rnd.opens_at, rnd.closes_at,
                                                                            rnd.closed_at):
        raise RoundChanged(rnd.id)


class BroadcastRefused(Exception):
    """The budget refused a broadcast: nothing of it is enqueued and the job is not recorded."""

    def __init__(self, refusal):
        super().__init__(str(refusal))
        self.refusal = refusal  # its ``text`` says why in Vietnamese


def _once(db: Database, key: str, at: datetime, report: DueReport, work, tz: ZoneInfo | None = None) -> None:
    """Run ``work`` and record ``key`` in one transaction; a concurrent runner's record wins. ``tz``: whose
    day a refusal is told once in."""
    try:
        with db.session() as s:
            if s.get(JobRun, key) is not None:
                return
            count = work(s)
            s.add(JobRun(key=key, ran_at=at, detail=f"{count} message(s)"))
            s.flush()
    except IntegrityError:
        log.info("job %s was done by another process", key)
        return
    except RoundChanged:
        log.info("job %s: its round changed during this tick; the next tick does what is due", key)
        return
    except BroadcastRefused as exc:
        report.dropped.append(f"{key}: not sent: {exc}")
        try:
            _tell_staff(db, key, at, exc.refusal.text, (at.astimezone(tz) if tz else at).date().isoformat())
        except Exception:  # noqa: BLE001 - telling is a courtesy: the other jobs of this tick still run
            log.exception("job %s: could not tell the staff why it is held back", key)
        return
    report.add(key, count)


def _tell_staff(db: Database, key: str, at: datetime, why: str, day: str) -> None:
    """A broadcast the budget holds back is tried again at every tick; the admins and the cadres above the
    round's units are told why, once a (local) day (``refused:<job>:<day>``), through the outbox like any
    message."""
    kind, round_id = key.split(":")[:2]
    told = f"refused:{key}:{day}:"
    with db.session() as s:
        rnd = s.get(Round, int(round_id))
        if rnd is None or s.scalar(select(OutboxMessage.id).where(OutboxMessage.dedupe_key.startswith(told,
                                                                                                       autoescape=True))
                                   .limit(1)) is not None:
            return
        units = [ru.unit_id for ru in rnd.units]
        above = select(UnitAncestor.ancestor_id).where(UnitAncestor.descendant_id.in_(units))
        staff = s.scalars(select(Member.id).where(
            Member.active, or_(Member.role == "admin", (Member.role == "cadre") & Member.unit_id.in_(above)),
            exists().where(ChatAccount.member_id == Member.id))).all()
        what = {"announce": "Thông báo", "remind": "Nhắc nhở"}.get(kind, "Tin nhắn")
        text = f"⚠️ {what} đợt học tập {rnd.document.code} (đợt số {rnd.id}) {why}"
        queue.enqueue_many(s, purpose="notice", keyed_members=[(f"{told}{m}", m) for m in staff],
                           reply=Reply(text), now=at)


def _check_budget(s: Session, schedule: Schedule, members: list[int], at: datetime, purpose: str,
                  rnd: Round) -> None:
    refusal = schedule.budget.refusal(s, members, at, purpose=purpose, closes_at=rnd.closes_at) \
        if schedule.budget is not None else None
    if refusal is not None:
        raise BroadcastRefused(refusal)


def latest_reminder_slot(rnd: Round, at: datetime, schedule: Schedule) -> datetime | None:
    """The newest reminder time that has passed, after the round opened and before it closes; a slot of a
    moved deadline that had passed when it moved is none (its members were reminded for the old one)."""
    close_day = rnd.closes_at.astimezone(schedule.tz).date()
    slots = sorted(
        datetime.combine(close_day - timedelta(days=d), schedule.reminder_time, tzinfo=schedule.tz)
        for d in schedule.reminder_days_before
    )
    since = max(rnd.opens_at, rnd.deadline_moved_at or rnd.opens_at)
    passed = [slot for slot in slots if since <= slot <= at and slot < rnd.closes_at]
    return passed[-1] if passed else None


def latest_fire(trigger: CronTrigger, at: datetime, lookback: timedelta = timedelta(days=8)) -> datetime | None:
    """The last time ``trigger`` fired at or before ``at`` (within ``lookback``)."""
    fire = trigger.get_next_fire_time(None, at - lookback)
    last = None
    while fire is not None and fire <= at:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return last


def previous_fire(trigger: CronTrigger, fire: datetime) -> datetime:
    """The time ``trigger`` fired before ``fire`` (a digest's "since the last one"), looked for over the past
    month; a week before when there is none (a first digest of a monthly schedule)."""
    return latest_fire(trigger, fire - timedelta(seconds=1), lookback=timedelta(days=32)) or fire - timedelta(days=7)


def _audience_counts(s: Session, rnd: Round, *, reminder_at: datetime | None) -> tuple[int, int]:
    """(members who can be written to, members with no linked chat) of the broadcast's audience,
    counted in the database: a province's ids are never listed in Python unless a budget asks for them."""
    count = lambda query: s.scalar(select(func.count()).select_from(query.subquery()))  # noqa: E731
    linked = count(_reachable_query(rnd, reminder_at=reminder_at))
    return linked, count(_audience_query(rnd, reminder_at=reminder_at)) - linked


def _announce(s: Session, rnd: Round, at: datetime, schedule: Schedule, report: DueReport) -> int:
    _lock_unchanged(s, rnd)
    if at >= rnd.closes_at or rnd.closed_at is not None:
        report.dropped.append(f"announce:{rnd.id}: the round closed before it could be announced")
        return 0
    return _broadcast(s, rnd, at, schedule, report, "announce", f"announce:{rnd.id}",
                      lambda language: msg.announcement(rnd, schedule.tz, language), reminder_at=None)


def _remind(s: Session, rnd: Round, key: str, at: datetime, schedule: Schedule, report: DueReport) -> int:
    _lock_unchanged(s, rnd)
    return _broadcast(s, rnd, at, schedule, report, "remind", key,
                      lambda language: msg.reminder(rnd, schedule.tz, language), reminder_at=at)


def _broadcast(s: Session, rnd: Round, at: datetime, schedule: Schedule, report: DueReport, purpose: str,
               key: str, reply_in, *, reminder_at: datetime | None) -> int:
    """One message to the reachable audience (a reminder: its part ``_audience_query`` says), keyed ``<key>:<member>``;
    ``reply_in(language)`` words it for members reading a translation of the document. The rows
    are written by one ``INSERT ... SELECT`` per language, not built in Python, unless each member
    gets their own study link."""
    reachable, unlinked = _audience_counts(s, rnd, reminder_at=reminder_at)
    if schedule.budget is not None:
        _check_budget(s, schedule, list(s.scalars(_reachable_query(rnd, reminder_at=reminder_at))), at,
                      purpose, rnd)
    report.skipped_unlinked += unlinked
    if not reachable:
        return 0
    groups = _by_language(rnd, _reachable_query(rnd, reminder_at=reminder_at))
    if schedule.links is None:
        return sum(
            queue.enqueue_select(s, purpose=purpose, key=key, member_ids=ids, reply=reply_in(language), now=at,
                                 not_before=schedule.quiet.next_allowed(at), expires_at=rnd.closes_at,
                                 round_id=rnd.id)
            for language, ids in groups.items())
    added = 0  # each member's own study link: the rows are built per member
    for language, query in groups.items():
        ids = list(s.scalars(query))
        added += queue.enqueue_many(s, purpose=purpose, keyed_members=[(f"{key}:{m}", m) for m in ids],
                                    reply=reply_in(language), now=at, not_before=schedule.quiet.next_allowed(at),
                                    expires_at=rnd.closes_at, round_id=rnd.id,
                                    links=schedule.links.for_round(s, ids, rnd, at))
    return added


def _reachable_query(rnd: Round, *, reminder_at: datetime | None):
    """The broadcast's audience with a linked chat, as a select of ids (for ``INSERT ... SELECT``)."""
    return _audience_query(rnd, reminder_at=reminder_at).where(
        exists().where(ChatAccount.member_id == Member.id))


def _audience_query(rnd: Round, *, reminder_at: datetime | None):
    """The round's audience, linked or not, as a select of ids: all of it for an announcement
    (``reminder_at`` None); for a reminder at ``reminder_at``, those who have not finished and were not
    told of the round lately (``queue.REMINDED_RECENTLY``)."""
    query = select(Member.id).where(Member.id.in_(audience_members(rnd.id).with_only_columns(Member.id)))
    if reminder_at is not None:
        finished = select(Attempt.member_id).where(Attempt.round_id == rnd.id, Attempt.submitted_at.is_not(None))
        query = query.where(Member.id.not_in(finished), ~queue.told_recently(rnd.id, reminder_at, Member.id))
    return query


def _by_language(rnd: Round, members):
    """``members`` (a select of ids) split by the translation of the round's document they read
    (Vietnamese otherwise)."""
    translated = sorted(rnd.document.translations or {})
    if not translated:
        return {VI: members}
    groups = {lang: members.where(Member.language == lang) for lang in translated if lang != VI}
    groups[VI] = members.where(or_(Member.language.is_(None), Member.language.not_in(list(groups))))
    return groups


def _close(s: Session, rnd: Round, at: datetime, schedule: Schedule, report: DueReport, report_builder) -> int:
    live = s.get(Round, rnd.id)
    if live.closed_at is None:
        live.closed_at = live.closes_at
    if live.closed_at <= live.opens_at:  # called off before it opened: nobody had a chance, nothing to report
        report.dropped.append(f"close:{rnd.id}: closed before it opened; no closing report")
        return 0
    if report_builder is None:
        return 0
    return report_builder.closing(s, live, at, schedule, report)


def schedule_from(settings) -> Schedule:
    """The Schedule described by config.yaml's ``scheduler`` section."""
    sch = settings.scheduler
    start, end = (time.fromisoformat(p.strip().zfill(5)) for p in sch.quiet_hours.split("-"))
    return Schedule(
        tz=settings.tz,
        reminder_days_before=tuple(sch.reminder_days_before),
        reminder_time=time.fromisoformat(sch.reminder_time.zfill(5)),
        digest_cron=sch.digest_cron,
        quiet=QuietHours(start, end, settings.tz),
    )


UPDATE_MEMORY = timedelta(days=7)


def prune_processed_updates(db: Database, at: datetime) -> int:
    """Forget update ids older than a week: platforms redeliver within a day (Telegram keeps 24 h)."""
    from sqlalchemy import delete

    from bot.storage.models import ProcessedUpdate

    with db.session() as s:
        return s.execute(delete(ProcessedUpdate).where(ProcessedUpdate.processed_at < at - UPDATE_MEMORY)).rowcount
