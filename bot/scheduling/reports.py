"""The weekly digest and the closing report: figures for whoever answers for each unit.

Called by ``run_due`` inside its job transaction; messages go to the outbox with keys
``digest:<fire time>:<member>`` and ``closing:<round>:<member>`` so each is sent once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.domain import oversight_messages as om
from bot.domain.permissions import visible_root_units
from bot.outbox import queue
from bot.services import stats
from bot.services.rounds import audience_unit_ids, counted_member, round_status
from bot.services.roster import subtree_unit_ids
from bot.storage.models import Attempt, Member, Round


class ReportBuilder:
    def __init__(self, settings):
        self.tz = settings.tz

    def _answerable(self, s: Session, at: datetime):
        """(member, unit, the unit's open and recent rounds) for every reachable secretary, cadre, admin."""
        staff = list(s.scalars(select(Member).where(Member.active, Member.role.in_(("secretary", "cadre", "admin")))
                               .order_by(Member.id)))
        linked = queue.reachable(s, [m.id for m in staff])
        for member in staff:
            if member.id in linked:
                for unit in visible_root_units(s, member):
                    yield member, unit, stats.rounds_for_unit(s, unit.id, at)

    def digest(self, s: Session, fire: datetime, at: datetime, schedule, report) -> int:
        """Each secretary, cadre and admin: open rounds of their units and the progress since the last digest."""
        from bot.scheduling.due import previous_fire

        previous = previous_fire(schedule.digest_trigger(), fire)
        period = {1: "ngày", 7: "tuần"}.get(round((fire - previous) / timedelta(days=1)))
        count = 0
        for member, unit, rounds in self._answerable(s, at):
            rounds = [r for r in rounds if round_status(r, at) == "open"]
            if not rounds:
                continue
            parts = [(r, stats.unit_figures(s, r.id, unit.id, at), finished_between(s, r.id, unit.id, previous, fire))
                     for r in rounds]
            count += queue.enqueue(
                s, dedupe_key=f"digest:{fire.isoformat()}:{member.id}:{unit.id}", purpose="digest",
                member_id=member.id, reply=om.digest_text(parts, unit, self.tz, period), now=at,
                not_before=schedule.quiet.next_allowed(at))
        return count

    def closing(self, s: Session, rnd: Round, at: datetime, schedule, report) -> int:
        """Final figures to everyone who answers for a unit of the round; cadres get the workbook."""
        from bot.reports.xlsx import build_workbook, report_data

        count = 0
        for member, unit, rounds in self._answerable(s, at):
            if rnd.id not in {r.id for r in rounds}:
                continue
            figures = stats.unit_figures(s, rnd.id, unit.id, at)
            attachment = None
            if member.role in ("cadre", "admin"):
                data = report_data(s, rnd.id, unit.id, at, tz=self.tz, include_phones=member.role == "admin")
                name = f"baocao-{rnd.document.code.replace('/', '-')}-{unit.code}.xlsx"
                attachment = (name, build_workbook(data))
            count += queue.enqueue(
                s, dedupe_key=f"closing:{rnd.id}:{member.id}:{unit.id}", purpose="closing", member_id=member.id,
                reply=om.closing_text(rnd, unit, figures, self.tz), now=at,
                not_before=schedule.quiet.next_allowed(at), round_id=rnd.id, attachment=attachment)
        return count


def finished_between(s: Session, round_id: int, unit_id: int, start: datetime, end: datetime) -> int:
    """Audience members of the subtree whose first submitted attempt falls in (start, end]."""
    first = (
        select(Attempt.member_id, func.min(Attempt.submitted_at).label("first"))
        .where(Attempt.round_id == round_id, Attempt.submitted_at.is_not(None))
        .group_by(Attempt.member_id).subquery()
    )
    return s.scalar(
        select(func.count()).select_from(first).join(Member, Member.id == first.c.member_id)
        .where(counted_member(), Member.unit_id.in_(audience_unit_ids(round_id)),
               Member.unit_id.in_(subtree_unit_ids(unit_id)), first.c.first > start, first.c.first <= end)
    ) or 0
