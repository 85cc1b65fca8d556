"""Open, list and close study rounds; who is in a round's audience."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from bot.domain.messages import local
from bot.outbox import queue
from bot.storage.models import Document, Member, Round, RoundUnit, Unit, UnitAncestor, WebLink


class RoundError(Exception):
    """A round request that cannot be honoured; the message says why and what to do."""


def round_status(rnd: Round, now: datetime) -> str:
    """``scheduled`` before it opens, ``open`` while it runs, ``closed`` after close or deadline."""
    if rnd.closed_at is not None or now >= rnd.closes_at:
        return "closed"
    if now < rnd.opens_at:
        return "scheduled"
    return "open"


def audience_unit_ids(round_id: int):
    """Subquery: every unit in the round's audience (the chosen units and all below them)."""
    return (
        select(UnitAncestor.descendant_id)
        .join(RoundUnit, RoundUnit.unit_id == UnitAncestor.ancestor_id)
        .where(RoundUnit.round_id == round_id)
    )


def counted_member():
    """Members who count in rounds: active and not exempt (miễn sinh hoạt). Deactivated and exempt
    members leave audiences, rates and reminders; exempt ones stay on the roster."""
    return and_(Member.active, Member.exempt.is_(False))


def audience_members(round_id: int):
    """Select of the members in the audience who count (see :func:`counted_member`)."""
    return select(Member).where(counted_member(), Member.unit_id.in_(audience_unit_ids(round_id)))


def same_round(session: Session, document_id: str, unit_ids: list[int], opens_at: datetime,
               closes_at: datetime) -> Round | None:
    """A round not closed early with this document, these dates and exactly these units: the one a form
    posted twice (a double click, the back button, also after the round was extended) already opened."""
    candidates = session.scalars(select(Round).where(
        Round.document_id == document_id, Round.opens_at == opens_at,
        or_(Round.closes_at == closes_at, Round.first_closes_at == closes_at),
        Round.closed_at.is_(None)).options(selectinload(Round.units)))
    return next((r for r in candidates if {ru.unit_id for ru in r.units} == set(unit_ids)), None)


def overlapping_round(session: Session, document_id: str, unit_ids: list[int], opens_at: datetime,
                      closes_at: datetime, now: datetime, *, other_than: int | None = None) -> Round | None:
    """A round of this document (``other_than`` aside), not over, whose time overlaps these dates and
    whose audience shares members with these units (one is the other, or above or below it). Members
    would see the document twice, be reminded twice, and count as not done in one round after finishing
    the other."""
    shares_members = or_(
        select(UnitAncestor.ancestor_id).where(UnitAncestor.ancestor_id == RoundUnit.unit_id,
                                               UnitAncestor.descendant_id.in_(unit_ids)).exists(),
        select(UnitAncestor.ancestor_id).where(UnitAncestor.descendant_id == RoundUnit.unit_id,
                                               UnitAncestor.ancestor_id.in_(unit_ids)).exists())
    return session.scalar(
        select(Round).join(RoundUnit, RoundUnit.round_id == Round.id)
        .where(Round.document_id == document_id, Round.closed_at.is_(None), Round.closes_at > now,
               Round.opens_at < closes_at, Round.closes_at > opens_at, shares_members,
               Round.id != (other_than or 0))
        .order_by(Round.id).limit(1))


def _overlap_error(doc: Document, running: Round, advice: str) -> RoundError:
    names = sorted(ru.unit.name for ru in running.units)
    where = ", ".join(names[:3]) + (f" và {len(names) - 3} đơn vị khác" if len(names) > 3 else "")
    return RoundError(f"văn bản {doc.code} đã có đợt học tập số {running.id} ({where}) trùng thời gian với "
                      f"đợt này cho cùng đảng viên; {advice}")


def open_round(
    session: Session, document_id: str, unit_codes: list[str], opens_at: datetime, closes_at: datetime,
    target: float, now: datetime,
) -> Round:
    doc = session.get(Document, document_id)
    if doc is None:
        known = ", ".join(session.scalars(select(Document.id).order_by(Document.id))) or "chưa có"
        raise RoundError(f"chưa nạp văn bản '{document_id}' (đã nạp: {known}); "
                         "hãy chạy 'hoctap content load' trước")
    codes = [c.strip() for c in unit_codes if c.strip()]
    if not codes:
        raise RoundError("chưa chọn đơn vị nào; hãy ghi mã các đơn vị sau --units CODE[,CODE...]")
    units = {u.code: u for u in session.scalars(select(Unit).where(Unit.code.in_(codes)))}
    missing = [c for c in codes if c not in units]
    if missing:
        raise RoundError(f"không có đơn vị mã {', '.join(missing)}; xem các đơn vị bằng 'hoctap units list'")
    if closes_at <= opens_at:
        raise RoundError("hạn cuối phải sau thời điểm mở đợt; hãy kiểm tra --opens và --closes")
    if closes_at <= now:
        raise RoundError("hạn cuối đã qua; hãy ghi một hạn cuối (--closes) chưa tới")
    if not 0 < target <= 100:
        raise RoundError(f"mục tiêu {target:g} nằm ngoài khoảng 1-100; hãy ghi một tỷ lệ phần trăm, ví dụ 98")
    running = overlapping_round(session, doc.id, [units[c].id for c in codes], opens_at, closes_at, now)
    if running is not None:
        raise _overlap_error(doc, running, "hãy gia hạn đợt đó, hoặc chọn đơn vị hay thời gian khác")
    rnd = Round(document_id=doc.id, opens_at=opens_at, closes_at=closes_at, target_rate=float(target), created_at=now)
    rnd.units = [RoundUnit(unit_id=units[c].id) for c in dict.fromkeys(codes)]
    session.add(rnd)
    session.flush()
    return rnd


@dataclass
class RoundRow:
    round: Round
    status: str
    audience: int
    unit_codes: list[str]


def list_rounds(session: Session, now: datetime) -> list[RoundRow]:
    rounds = session.scalars(
        select(Round).options(selectinload(Round.units).selectinload(RoundUnit.unit), selectinload(Round.document))
        .order_by(Round.opens_at, Round.id)
    ).all()
    rows = []
    for rnd in rounds:
        audience = session.scalar(select(func.count()).select_from(audience_members(rnd.id).subquery()))
        rows.append(RoundRow(rnd, round_status(rnd, now), audience or 0, sorted(ru.unit.code for ru in rnd.units)))
    return rows


def close_round(session: Session, round_id: int, now: datetime) -> Round:
    rnd = session.get(Round, round_id, with_for_update=True, populate_existing=True)  # as ``extend_round``
    if rnd is None:
        raise RoundError(f"không có đợt học tập số {round_id}; xem các đợt bằng 'hoctap rounds list'")
    if round_status(rnd, now) == "closed":
        raise RoundError(f"đợt học tập số {round_id} đã kết thúc")
    rnd.closed_at = now
    # the members' links to this round were valid until it closed: it closes now (``extend_round`` moves them
    # later); links to the list of their rounds (round_id NULL) keep their lifetime
    session.execute(update(WebLink).where(WebLink.round_id == rnd.id, WebLink.expires_at > now)
                    .values(expires_at=now))
    return rnd


def extend_round(session: Session, round_id: int, closes_at: datetime, now: datetime, tz: ZoneInfo) -> datetime:
    """Move a running or scheduled round's deadline later (never earlier: close it instead) and return the
    deadline it replaced; ``tz``: the members' clock, in which waiting announcements name the deadline. The
    round is locked first, so that a scheduler job queueing its announcement or reminder finishes before (its
    rows are reworded here) or starts after (it reads the new deadline); the deadline returned is the one read
    after the lock (another cadre's extension a moment ago, not what a page showed earlier)."""
    rnd = session.get(Round, round_id, with_for_update=True, populate_existing=True)  # read after the lock
    if rnd is None:
        raise RoundError(f"không có đợt học tập số {round_id}; xem các đợt bằng 'hoctap rounds list'")
    if round_status(rnd, now) == "closed":
        raise RoundError(f"đợt học tập số {round_id} đã kết thúc")
    if closes_at <= rnd.closes_at:
        raise RoundError("hạn mới phải sau hạn hiện tại; hãy chọn một ngày muộn hơn")
    later = overlapping_round(session, rnd.document_id, [ru.unit_id for ru in rnd.units], rnd.opens_at, closes_at,
                              now, other_than=rnd.id)
    if later is not None:  # the same members would be asked twice at once
        raise _overlap_error(rnd.document, later, "hãy chọn hạn mới trước khi đợt đó mở")
    # the members' links to this round (announcements, reminders) were valid until it closed: still so; and
    # their links to the list of their rounds (``/hoc``) live at least as long as this one now runs
    in_audience = select(Member.id).where(Member.unit_id.in_(audience_unit_ids(rnd.id)))
    session.execute(update(WebLink).where(WebLink.round_id == rnd.id, WebLink.expires_at == rnd.closes_at)
                    .values(expires_at=closes_at))
    session.execute(update(WebLink).where(
        WebLink.round_id.is_(None), WebLink.member_id.in_(in_audience), WebLink.revoked_at.is_(None),
        WebLink.expires_at >= rnd.closes_at, WebLink.expires_at < closes_at).values(expires_at=closes_at))
    # waiting announcements, reminders and nudges go out as queued, naming the new deadline; the scheduler
    # skips the new deadline's reminder slots that had passed by now (``deadline_moved_at``)
    queue.deadline_moved(session, rnd.id, rnd.closes_at, closes_at, local(rnd.closes_at, tz), local(closes_at, tz),
                         now)
    replaced = rnd.closes_at
    rnd.first_closes_at = rnd.first_closes_at or replaced
    rnd.closes_at, rnd.deadline_moved_at = closes_at, now
    return replaced
