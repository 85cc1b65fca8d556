"""Who sees which units: member, secretary, cadre, admin, unlinked and deactivated people ×
their own unit, a unit below, another unit, and an id nobody has."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.domain.permissions import (
    DENIED_MEMBER_ONLY, DENIED_REPORT, DENIED_UNIT, DENIED_UNLINKED, PermissionDenied, can_remind, can_report,
    can_see_phone, can_view_unit, require_remind, require_report, require_view_unit, visible_root_units,
)
from bot.storage.models import Member, Unit

# actor -> member code in the sample roster (None: not linked to anyone)
ACTORS = {
    "member": "DV002",  # DP-TT-01
    "secretary": "DV001",  # secretary of DP-TT-01
    "cadre": "CB002",  # cadre of DP (district)
    "admin": "AD001",  # at BP
    "unlinked": None,
}
# (actor, unit code) -> may view / remind. "own" unit is the actor's; HQ-TH-01 is another district.
EXPECTED_VIEW = {
    ("member", "DP-TT-01"): False, ("member", "HQ-TH-01"): False,
    ("secretary", "DP-TT-01"): True, ("secretary", "DP-TT-02"): False, ("secretary", "HQ-TH-01"): False,
    ("secretary", "DP-TT"): False,  # the unit above their branch
    ("cadre", "DP"): True, ("cadre", "DP-TT"): True, ("cadre", "DP-TT-03"): True,
    ("cadre", "HQ-TH-01"): False, ("cadre", "HQ"): False, ("cadre", "BP"): False,
    ("admin", "BP"): True, ("admin", "HQ-TH-01"): True, ("admin", "DP-TT-01"): True,
    ("unlinked", "DP-TT-01"): False, ("unlinked", "BP"): False,
}


def _actor(s, name):
    code = ACTORS[name]
    return None if code is None else s.scalar(select(Member).where(Member.code == code))


def _unit(s, code):
    return s.scalar(select(Unit).where(Unit.code == code))


def test_view_and_remind_matrix_by_role_and_unit(province):
    """Every (actor, unit) pair of EXPECTED_VIEW: the yes/no answer and, for a no, the sentence."""
    with province.session() as s:
        for (actor, unit_code), allowed in sorted(EXPECTED_VIEW.items()):
            where = f"{actor} × {unit_code}"
            who, unit = _actor(s, actor), _unit(s, unit_code)
            assert can_view_unit(s, who, unit.id) is allowed, where
            assert can_view_unit(s, who, unit) is allowed, where  # a Unit or its id
            assert can_remind(s, who, unit.id) is allowed, where
            if allowed:
                require_view_unit(s, who, unit.id)
                require_remind(s, who, unit.id)
                continue
            with pytest.raises(PermissionDenied) as denied:
                require_view_unit(s, who, unit.id)
            expected = {"member": DENIED_MEMBER_ONLY, "unlinked": DENIED_UNLINKED}.get(actor, DENIED_UNIT)
            assert str(denied.value) == expected, where
            with pytest.raises(PermissionDenied):
                require_remind(s, who, unit.id)


def test_refusal_for_another_unit_is_the_vietnamese_sentence(province):
    with province.session() as s:
        with pytest.raises(PermissionDenied, match="Đồng chí không có quyền xem số liệu của đơn vị này."):
            require_view_unit(s, _actor(s, "secretary"), _unit(s, "HQ-TH-01").id)


def test_guessed_unit_id_that_does_not_exist_is_refused_for_everyone(province):
    with province.session() as s:
        for actor in ACTORS:
            assert can_view_unit(s, _actor(s, actor), 987654) is False, actor


def test_report_only_for_cadre_and_admin_and_only_for_their_units(province):
    with province.session() as s:
        assert [a for a in sorted(ACTORS) if can_report(_actor(s, a))] == ["admin", "cadre"]
        require_report(s, _actor(s, "cadre"), _unit(s, "DP").id)
        require_report(s, _actor(s, "admin"), _unit(s, "HQ").id)
        with pytest.raises(PermissionDenied, match=DENIED_UNIT):
            require_report(s, _actor(s, "cadre"), _unit(s, "HQ").id)
        with pytest.raises(PermissionDenied, match=DENIED_REPORT):
            require_report(s, _actor(s, "secretary"), _unit(s, "DP-TT-01").id)
        with pytest.raises(PermissionDenied, match=DENIED_REPORT):
            require_report(s, _actor(s, "member"), _unit(s, "DP-TT-01").id)
        with pytest.raises(PermissionDenied, match=DENIED_UNLINKED):
            require_report(s, None, _unit(s, "DP").id)


def test_visible_root_units_per_role(province):
    with province.session() as s:
        roots = {a: [u.code for u in visible_root_units(s, _actor(s, a))] for a in ACTORS}
    assert roots == {"member": [], "secretary": ["DP-TT-01"], "cadre": ["DP"], "admin": ["BP"], "unlinked": []}


def test_deactivated_secretary_and_cadre_lose_every_permission(province):
    with province.session() as s:
        for name, unit_code in (("secretary", "DP-TT-01"), ("cadre", "DP")):
            who = _actor(s, name)
            who.active = False
            s.flush()
            unit = _unit(s, unit_code)
            assert not can_view_unit(s, who, unit.id)
            assert not can_remind(s, who, unit.id)
            assert not can_report(who)
            assert visible_root_units(s, who) == []
            with pytest.raises(PermissionDenied, match=DENIED_UNLINKED):
                require_view_unit(s, who, unit.id)


def test_phones_only_for_the_secretary_of_the_members_unit_and_admin(province):
    with province.session() as s:
        own, other = _unit(s, "DP-TT-01").id, _unit(s, "DP-TT-02").id
        assert can_see_phone(_actor(s, "secretary"), own)
        assert not can_see_phone(_actor(s, "secretary"), other)
        assert not can_see_phone(_actor(s, "cadre"), own)
        assert not can_see_phone(_actor(s, "member"), own)
        assert not can_see_phone(None, own)
        assert can_see_phone(_actor(s, "admin"), other)
