"""Secretaries' and cadres' use cases: figures, who has not finished, reminders (reports: ``bot.reports``).

Every entry point checks permissions in the domain (``bot.domain.permissions``) with the ids it is
given, whether they were typed, carried in a button, or forged: the unit must be within the reader's
reach and the round must cover that unit.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain import oversight_messages as om
from bot.domain.messages import local, reminder
from bot.domain.permissions import (
    DENIED_MEMBER_ONLY, PermissionDenied, can_view_unit, require_remind, require_report,
    require_round_for_unit, require_view_unit, sees_units, shown_phones, visible_root_units,
)
from bot.domain.replies import Reply
from bot.outbox import queue
from bot.outbox.queue import QuietHours
from bot.services import stats
from bot.services.rounds import round_status
from bot.storage.models import Member, OutboxMessage, Unit


def answerable_units(s: Session, member: Member) -> list[Unit]:
    """The top units a secretary, cadre or admin answers for; members are refused."""
    if not sees_units(member):
        raise PermissionDenied(DENIED_MEMBER_ONLY)
    return visible_root_units(s, member)


def figures(s: Session, member: Member, now: datetime, tz: ZoneInfo) -> list[Reply]:
    """``/thongke``: each open or recent round of each unit the reader answers for."""
    replies = []
    for unit in answerable_units(s, member):
        rounds = stats.rounds_for_unit(s, unit.id, now)
        if not rounds:
            replies.append(om.no_rounds(unit))
        replies += [unit_view(s, member, rnd.id, unit.id, now, tz) for rnd in rounds]
    return replies


def unit_view(s: Session, member: Member, round_id: int, unit_id: int, now: datetime, tz: ZoneInfo) -> Reply:
    """One unit's figures with its children (drill-down) and a way back up, within the reader's reach."""
    require_view_unit(s, member, unit_id)
    rnd = require_round_for_unit(s, round_id, unit_id)
    unit = s.get(Unit, unit_id)
    if member.role in ("cadre", "admin"):
        total, children = stats.unit_rollup(s, round_id, unit_id, now)
    else:
        total, children = stats.unit_figures(s, round_id, unit_id, now), []
    parent = s.get(Unit, unit.parent_id) if unit.parent_id else None
    can_up = parent is not None and can_view_unit(s, member, parent.id)
    return om.unit_figures_reply(rnd, total, children, parent, tz, can_go_up=can_up)


def not_finished(s: Session, member: Member, now: datetime, round_id: int | None = None,
                 unit_id: int | None = None, page: int = 1) -> list[Reply]:
    """``/chualam``: who has not finished, a page at a time; phones only for the unit's secretary. The open
    rounds; with none open, the one that ended last (within ``stats.RECENT_CLOSED``), whose list the
    secretary follows up."""
    if round_id is None or unit_id is None:
        replies = []
        for unit in answerable_units(s, member):
            recent = stats.rounds_for_unit(s, unit.id, now)  # the open ones first, then the latest to end
            rounds = [r for r in recent if round_status(r, now) == "open"] or recent[:1]
            if not rounds:
                replies.append(om.no_rounds(unit))
            replies += [_not_finished_page(s, member, rnd.id, unit.id, 1, now) for rnd in rounds]
        return replies
    return [_not_finished_page(s, member, round_id, unit_id, page, now)]


def _not_finished_page(s: Session, member: Member, round_id: int, unit_id: int, page: int, now: datetime) -> Reply:
    require_view_unit(s, member, unit_id)
    rnd, unit = require_round_for_unit(s, round_id, unit_id), s.get(Unit, unit_id)
    page = max(page, 1)
    total, rows = stats.not_finished_members(s, round_id, unit_id, (page - 1) * om.PAGE, om.PAGE)
    last = max(1, -(-total // om.PAGE))
    if page > last:  # a button from before members finished, or a forged one: the last page there is
        page = last
        total, rows = stats.not_finished_members(s, round_id, unit_id, (page - 1) * om.PAGE, om.PAGE)
    phones = shown_phones(member, (r.member for r in rows))
    delivery = queue.delivery_flags(s, round_id, [r.member.id for r in rows])
    return om.not_finished_reply(rnd, unit, total, rows, page, phones, delivery,
                                 over=round_status(rnd, now) == "closed")


def remind(s: Session, member: Member, now: datetime, tz: ZoneInfo, quiet: QuietHours, budget=None,
           links=None) -> list[Reply]:
    """``/nhacnho``: at most one reminder per member per round per local day, through the outbox.

    ``budget`` (a channel's monthly quota, see ``ChatService``) may refuse a round's reminders as a
    whole when they cannot all be sent: none is enqueued, and the reply says why. ``links``: a
    ``web_links.StudyLinks`` to put each member's own study link in their reminder."""
    replies = []
    not_before = quiet.next_allowed(now)
    day = not_before.astimezone(tz).date().isoformat()  # the day it reaches the member
    for unit in answerable_units(s, member):
        require_remind(s, member, unit.id)
        recent = stats.rounds_for_unit(s, unit.id, now)  # open ones first, then the latest ended
        rounds = [r for r in recent if round_status(r, now) == "open"]
        if not rounds:
            replies.append(om.nothing_to_remind(unit, recent[0] if recent else None, tz))
        for rnd in rounds:
            _total, rows = stats.not_finished_members(s, rnd.id, unit.id, 0, None)
            ids = [r.member.id for r in rows]
            linked = queue.reachable(s, ids)
            told = set(s.scalars(select(Member.id).where(  # e.g. the scheduler's reminder this morning
                Member.id.in_(linked), queue.told_recently(rnd.id, now, Member.id)))) if linked else set()
            wanted = [mid for mid in ids if mid in linked and mid not in told]
            refusal = budget.refusal(s, wanted, now, purpose="nudge",
                                     closes_at=rnd.closes_at) if budget is not None else None
            if refusal is not None:
                replies.append(Reply(f"🔔 {rnd.document.code} — {unit.name}: {refusal.text}"))
                continue
            keys = {mid: f"nudge:{rnd.id}:{mid}:{day}" for mid in wanted}
            today = dict(s.execute(select(OutboxMessage.dedupe_key, OutboxMessage.status).where(
                OutboxMessage.dedupe_key.in_(list(keys.values())))).all()) if keys else {}
            spent = {key for key, status in today.items() if status not in queue.TOLD}  # dropped or failed: told nobody
            fresh = [mid for mid, key in keys.items() if today.get(key) not in queue.TOLD]  # what this one enqueues
            targets = [(f"{key}:{now:%H%M%S}" if key in spent else key, mid) for mid, key in keys.items()]
            own = links.for_round(s, [mid for _key, mid in targets], rnd, now) if links is not None else None
            sent = queue.enqueue_many(s, purpose="nudge", keyed_members=targets, reply=reminder(rnd, tz), now=now,
                                      not_before=not_before, expires_at=rnd.closes_at, round_id=rnd.id, links=own)
            already = len(targets) - sent + len(told)
            later = local(not_before, tz) if not_before != now else None
            # sent again, but their last message of the round did not reach them: likely this one will not either
            missed = sum(1 for flags in queue.delivery_flags(s, rnd.id, fresh).values()
                         if {"refused", "unreachable"} & set(flags))
            replies.append(om.reminded_reply(rnd, unit, sent, already, len(ids) - len(linked), later, missed))
    return replies


def no_report_files(s: Session, member: Member) -> list[Reply]:
    """``/baocao`` where this process builds no report files (``ChatService(reports=None)``)."""
    for unit in answerable_units(s, member):
        require_report(s, member, unit.id)
    return [om.no_report_files()]
