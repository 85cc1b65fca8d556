"""Read the roster: the unit tree and members of a subtree."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from bot.storage.models import Member, Unit, UnitAncestor


class RosterError(Exception):
    """A roster request that cannot be honoured; the message says what to do."""


def subtree_unit_ids(unit_id: int):
    """Subquery: the unit and every unit below it."""
    return select(UnitAncestor.descendant_id).where(UnitAncestor.ancestor_id == unit_id)


def unit_by_code(session: Session, code: str) -> Unit:
    unit = session.scalar(select(Unit).where(Unit.code == code))
    if unit is None:
        raise RosterError(f"không có đơn vị mã '{code}'; xem các đơn vị bằng 'hoctap units list'")
    return unit


def list_members(session: Session, unit_code: str | None = None, *, include_inactive: bool = False) -> list[Member]:
    query = select(Member).options(joinedload(Member.unit)).order_by(Member.code)
    if unit_code:
        query = query.where(Member.unit_id.in_(subtree_unit_ids(unit_by_code(session, unit_code).id)))
    if not include_inactive:
        query = query.where(Member.active)
    return list(session.scalars(query))


def unit_tree(session: Session) -> list[tuple[int, Unit, int]]:
    """(depth, unit, active members in the unit itself), depth-first in code order."""
    units = list(session.scalars(select(Unit).order_by(Unit.code)))
    counts = dict(session.execute(
        select(Member.unit_id, func.count()).where(Member.active).group_by(Member.unit_id)
    ).all())
    children: dict[int | None, list[Unit]] = {}
    for u in units:
        children.setdefault(u.parent_id, []).append(u)
    out: list[tuple[int, Unit, int]] = []

    def walk(parent_id, depth):
        for u in children.get(parent_id, []):
            out.append((depth, u, counts.get(u.id, 0)))
            walk(u.id, depth + 1)

    walk(None, 0)
    return out
