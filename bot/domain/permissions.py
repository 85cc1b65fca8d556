"""Who may see which units' figures, remind their members and build reports.

The rules live here, not in chat handlers, so every channel (Telegram, Zalo, playground, CLI)
refuses the same things; an id typed or carried in a button is always checked again here.

- **member** (đảng viên): only their own results; no unit figures at all.
- **secretary** (bí thư chi bộ): their own unit (``Member.unit_id``) and every unit below it.
- **cadre** (cán bộ): their own unit and every unit below it, with drill-down into child units;
  may also build the XLSX/PNG report.
- **admin** (quản trị): every unit.
- **unlinked or deactivated** (no member, or ``Member.active`` false): nothing.

"Below" is read from the ``unit_ancestors`` closure table (one row per ancestor/descendant pair,
self included at depth 0), so a check is one indexed lookup whatever the depth of the tree.

A round's figures are shown only for units the round covers (``require_round_for_unit``): a round
of another district, forged into a button of one's own unit, is refused like any other unit.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, literal, or_, select
from sqlalchemy.orm import Session

from bot.domain.phones import display_phone
from bot.storage.models import Member, Round, RoundUnit, Unit, UnitAncestor

UNIT_ROLES = ("secretary", "cadre", "admin")
REPORT_ROLES = ("cadre", "admin")

DENIED_UNIT = "Đồng chí không có quyền xem số liệu của đơn vị này."
DENIED_MEMBER_ONLY = "Đồng chí chỉ xem được kết quả học tập của chính mình (gõ /ketqua)."
DENIED_REMIND = "Đồng chí không có quyền nhắc nhở đảng viên của đơn vị này."
DENIED_REPORT = "Chỉ cán bộ phụ trách mới được lập báo cáo tổng hợp."
DENIED_UNLINKED = "Đồng chí chưa liên kết tài khoản hoặc không còn trong danh sách sinh hoạt."


class PermissionDenied(Exception):
    """A refused request; ``str(exc)`` is the Vietnamese sentence to show the user."""

    def __init__(self, message: str = DENIED_UNIT):
        super().__init__(message)
        self.message = message


def _unit_id(unit: Unit | int) -> int:
    return unit if isinstance(unit, int) else unit.id


def _acting(member: Member | None) -> bool:
    return member is not None and bool(member.active)


def sees_units(member: Member | None) -> bool:
    """True for roles that see unit figures at all (secretary, cadre, admin), when active."""
    return _acting(member) and member.role in UNIT_ROLES


def visible_root_units(session: Session, member: Member | None) -> list[Unit]:
    """The top units of what ``member`` may see (everything below them is visible too).

    Empty for members, unlinked and deactivated people; the own unit for secretaries and cadres;
    the roots of the tree (units without parent, by code) for admins.
    """
    if not sees_units(member):
        return []
    if member.role == "admin":
        return list(session.scalars(select(Unit).where(Unit.parent_id.is_(None)).order_by(Unit.code)))
    unit = session.get(Unit, member.unit_id)
    return [unit] if unit is not None else []


def can_view_unit(session: Session, member: Member | None, unit: Unit | int) -> bool:
    """May ``member`` see the figures (and the not-finished list) of ``unit``?

    Secretaries and cadres: the unit is their own or below it (one closure-table lookup).
    Admins: any existing unit. Everyone else: never.
    """
    if not sees_units(member):
        return False
    unit_id = _unit_id(unit)
    if member.role == "admin":
        return session.get(Unit, unit_id) is not None
    return session.scalar(
        select(UnitAncestor.depth).where(UnitAncestor.ancestor_id == member.unit_id,
                                         UnitAncestor.descendant_id == unit_id)
    ) is not None


def require_view_unit(session: Session, member: Member | None, unit: Unit | int) -> None:
    """Raise :class:`PermissionDenied` (with the sentence to show) unless ``can_view_unit``."""
    if not _acting(member):
        raise PermissionDenied(DENIED_UNLINKED)
    if member.role not in UNIT_ROLES:
        raise PermissionDenied(DENIED_MEMBER_ONLY)
    if not can_view_unit(session, member, unit):
        raise PermissionDenied(DENIED_UNIT)


def round_touches_unit(round_id, unit_id):
    """SQL ``EXISTS``: one of the round's audience roots is the unit, above it (the unit is inside
    the audience) or below it (part of the unit's subtree is). ``round_id`` may be a column."""
    return (
        select(literal(1))
        .select_from(RoundUnit)
        .join(UnitAncestor, or_(
            and_(UnitAncestor.ancestor_id == RoundUnit.unit_id, UnitAncestor.descendant_id == unit_id),
            and_(UnitAncestor.ancestor_id == unit_id, UnitAncestor.descendant_id == RoundUnit.unit_id),
        ))
        .where(RoundUnit.round_id == round_id)
        .exists()
    )


def round_covers_unit(session: Session, round_id: int, unit: Unit | int) -> bool:
    """Is the round about ``unit`` at all (``round_touches_unit``)? False for a round nobody has."""
    return bool(session.scalar(select(round_touches_unit(round_id, _unit_id(unit)))))


def require_round_for_unit(session: Session, round_id: int, unit: Unit | int) -> Round:
    """The round, if it exists and covers ``unit``; else :class:`PermissionDenied` with the same
    sentence as for a unit out of reach (nothing about the round is told)."""
    rnd = session.get(Round, round_id)
    if rnd is None or not round_covers_unit(session, round_id, unit):
        raise PermissionDenied(DENIED_UNIT)
    return rnd


def can_remind(session: Session, member: Member | None, unit: Unit | int) -> bool:
    """May ``member`` send reminders to the not-finished members of ``unit`` (``/nhacnho``)?

    The same units as ``can_view_unit``: whoever answers for a unit's rate may remind it.
    """
    return can_view_unit(session, member, unit)


def require_remind(session: Session, member: Member | None, unit: Unit | int) -> None:
    if not _acting(member):
        raise PermissionDenied(DENIED_UNLINKED)
    if not can_remind(session, member, unit):
        raise PermissionDenied(DENIED_REMIND if member.role in UNIT_ROLES else DENIED_MEMBER_ONLY)


def can_report(member: Member | None) -> bool:
    """May ``member`` build the XLSX/PNG report (``/baocao``)? Cadres and admins only.

    Which unit the report covers is checked separately with ``can_view_unit``.
    """
    return _acting(member) and member.role in REPORT_ROLES


def require_report(session: Session, member: Member | None, unit: Unit | int) -> None:
    """Raise unless ``member`` may build the report of ``unit``."""
    if not _acting(member):
        raise PermissionDenied(DENIED_UNLINKED)
    if not can_report(member):
        raise PermissionDenied(DENIED_REPORT)
    require_view_unit(session, member, unit)


def shown_phones(viewer: Member | None, members: Iterable[Member]) -> dict[int, str]:
    """The phones of ``members`` this viewer may see (``can_see_phone``), by member id, written to be
    dialled (``0903 878 832``)."""
    return {m.id: display_phone(m.phone) for m in members if m.phone and can_see_phone(viewer, m.unit_id)}


def can_see_phone(viewer: Member | None, member_unit_id: int) -> bool:
    """Phones in ``/chualam`` are shown to the secretary of the member's own unit and to admins.

    A cadre sees names and units of a subtree, but phones stay with the branch secretary who
    calls them (the issue's rule); the cadre's report can still include them on purpose.
    """
    if not _acting(viewer):
        return False
    if viewer.role == "admin":
        return True
    return viewer.role == "secretary" and viewer.unit_id == member_unit_id


ROLE_RANK = {"member": 0, "secretary": 1, "cadre": 2, "admin": 3}


def outranks(actor: Member, target: Member) -> bool:
    """Whether ``actor`` may stop ``target``'s participation (in a unit they can view): a role above the
    target's, or an admin. A cadre cannot shut out a fellow cadre or the admin who manages the console."""
    return actor.role == "admin" or ROLE_RANK.get(actor.role, 0) > ROLE_RANK.get(target.role, 0)
