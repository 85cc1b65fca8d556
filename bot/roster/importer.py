"""Import units and members: check every row first, then write all of it in one transaction.

Members files may add ``exempt`` (miễn sinh hoạt: x / có) and ``language`` (ngôn ngữ: vi, km, ...)
columns; a file without them leaves those fields as they are.

One bad row means nothing is written and every bad row is listed as ``FILE:ROW: column: problem``.
Re-imports update by code; ``full`` deactivates members missing from the file (never deletes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bot.domain.languages import is_language_tag
from bot.domain.phones import normalize_phone
from bot.paths import display_path
from bot.roster.files import Row, TableError, read_table
from bot.storage.models import Member, Unit, UnitAncestor

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,63}$")

UNIT_HEADERS = {
    "code": "code", "mã đơn vị": "code", "ma don vi": "code",
    "name": "name", "tên đơn vị": "name", "ten don vi": "name",
    "parent code": "parent_code", "parent": "parent_code",
    "mã đơn vị cấp trên": "parent_code", "ma don vi cap tren": "parent_code",
}
MEMBER_HEADERS = {
    "member code": "member_code", "code": "member_code", "mã đảng viên": "member_code", "ma dang vien": "member_code",
    "full name": "full_name", "name": "full_name", "họ và tên": "full_name", "ho va ten": "full_name", "họ tên": "full_name",
    "unit code": "unit_code", "unit": "unit_code", "mã đơn vị": "unit_code", "ma don vi": "unit_code",
    "phone": "phone", "số điện thoại": "phone", "so dien thoai": "phone", "điện thoại": "phone",
    "role": "role", "vai trò": "role", "vai tro": "role",
    "exempt": "exempt", "miễn sinh hoạt": "exempt", "mien sinh hoat": "exempt",
    "language": "language", "ngôn ngữ": "language", "ngon ngu": "language",
}
EXEMPT_WORDS = {
    "": False, "không": False, "khong": False, "no": False, "false": False, "0": False,
    "x": True, "có": True, "co": True, "miễn": True, "mien": True, "yes": True, "true": True, "1": True,
}
ROLE_NAMES = {
    "member": "member", "đảng viên": "member", "dang vien": "member", "": "member",
    "secretary": "secretary", "bí thư": "secretary", "bi thu": "secretary",
    "cadre": "cadre", "cán bộ": "cadre", "can bo": "cadre",
    "admin": "admin", "quản trị": "admin", "quan tri": "admin",
}
NOT_A_CODE = "có ký tự không dùng được; hãy chỉ dùng chữ cái không dấu, chữ số và '.', '-', '_', '/'"


@dataclass
class ImportResult:
    found: list[tuple[int, str]] = field(default_factory=list)  # (row, message line)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    reactivated: int = 0
    stopped: list[Member] = field(default_factory=list)  # who a full list deactivated

    @property
    def problems(self) -> list[str]:
        """Every problem, in row order."""
        return [line for _row, line in sorted(self.found, key=lambda item: item[0])]

    @property
    def ok(self) -> bool:
        return not self.found


def import_units(session: Session, path: Path) -> ImportResult:
    result = ImportResult()
    where = display_path(path)
    try:
        rows = read_table(path, UNIT_HEADERS, ("code", "name", "parent_code"))
    except TableError as exc:
        result.found.append((0, str(exc)))
        return result
    existing = {u.code: u for u in session.scalars(select(Unit))}
    parents: dict[str, str | None] = {code: (u.parent.code if u.parent else None) for code, u in existing.items()}
    spelling = _spellings(existing)
    for row in rows:  # codes, and then parents, as first spelled
        _respell(row.values, "code", spelling, learn=True)
    for row in rows:
        _respell(row.values, "parent_code", spelling)
    first_row: dict[str, int] = {}
    good: list[Row] = []
    for row in rows:
        v = row.values
        bad = _problems_in(where, row)
        if not v["code"]:
            bad("code", "trống; hãy ghi mã đơn vị")
        elif not CODE.match(v["code"]):
            bad("code", f"'{v['code']}' {NOT_A_CODE}")
        elif v["code"] in first_row:
            bad("code", f"'{v['code']}' đã có ở dòng {first_row[v['code']]}; mỗi đơn vị chỉ ghi một lần")
        if not v["name"]:
            bad("name", "trống; hãy ghi tên đơn vị")
        if v["parent_code"] and v["parent_code"] == v["code"]:
            bad("parent_code", "đơn vị không thể là cấp trên của chính nó; hãy sửa mã đơn vị cấp trên")
        if bad.count:
            result.found.extend((row.number, line) for line in bad.lines)
            continue
        first_row[v["code"]] = row.number
        good.append(row)
    for row in good:
        parents[row.values["code"]] = row.values["parent_code"] or None
    for row in good:
        parent = row.values["parent_code"]
        if parent and parent not in parents:
            result.found.append((row.number, f"{where}:{row.number}: {row.column('parent_code')}: không có đơn vị "
                                              f"mã '{parent}'; hãy thêm đơn vị vào tệp hoặc nhập danh sách đơn vị trước"))
    if not result.found:
        for row in good:
            cycle = _cycle_from(row.values["code"], parents)
            if cycle:
                result.found.append((row.number, f"{where}:{row.number}: {row.column('parent_code')}: các đơn vị làm "
                                                  f"cấp trên của nhau ({' → '.join(cycle)}); hãy sửa lại mã đơn vị "
                                                  "cấp trên"))
    if result.found:
        return result

    for row in good:  # create first, so parents can point at units later in the file
        code, name = row.values["code"], row.values["name"]
        unit = existing.get(code)
        if unit is None:
            unit = Unit(code=code, name=name)
            session.add(unit)
            existing[code] = unit
            result.created += 1
        elif unit.name != name or (unit.parent.code if unit.parent else None) != (row.values["parent_code"] or None):
            unit.name = name
            result.updated += 1
        else:
            result.unchanged += 1
    session.flush()
    for row in good:
        parent = row.values["parent_code"]
        existing[row.values["code"]].parent_id = existing[parent].id if parent else None
    session.flush()
    rebuild_closure(session)
    return result


def _cycle_from(code: str, parents: dict[str, str | None]) -> list[str] | None:
    seen = [code]
    current = parents.get(code)
    while current is not None:
        if current in seen:
            return seen[seen.index(current):] + [current]
        seen.append(current)
        current = parents.get(current)
    return None


def rebuild_closure(session: Session) -> None:
    """Recompute the ancestor table from parent links (a few thousand units: milliseconds)."""
    parents = dict(session.execute(select(Unit.id, Unit.parent_id)).all())
    session.execute(delete(UnitAncestor))
    rows = []
    for unit_id in parents:
        depth, current = 0, unit_id
        while current is not None:
            rows.append({"ancestor_id": current, "descendant_id": unit_id, "depth": depth})
            current, depth = parents[current], depth + 1
    if rows:
        session.execute(UnitAncestor.__table__.insert(), rows)


def import_members(session: Session, path: Path, *, full: bool = False, default_language: str = "vi") -> ImportResult:
    """``default_language`` (the ``language`` setting) is given to new members whose row names none."""
    result = ImportResult()
    where = display_path(path)
    try:
        rows = read_table(path, MEMBER_HEADERS, ("member_code", "full_name", "unit_code", "phone", "role"))
    except TableError as exc:
        result.found.append((0, str(exc)))
        return result
    if full and not rows:  # a full list of nobody would stop everyone: surely the wrong file
        result.found.append((0, f"{where}: danh sách đầy đủ nhưng tệp không có đảng viên nào; không ai bị ngừng "
                                "sinh hoạt. Hãy kiểm tra lại tệp"))
        return result
    units = {code: uid for code, uid in session.execute(select(Unit.code, Unit.id))}
    members = {m.code: m for m in session.scalars(select(Member))}
    member_spelling, unit_spelling = _spellings(members), _spellings(units)
    seen_code: dict[str, int] = {}
    seen_phone: dict[str, int] = {}
    parsed: list[tuple[Row, str | None, str]] = []
    for row in rows:
        v = row.values
        bad = _problems_in(where, row)
        code = _respell(v, "member_code", member_spelling, learn=True)
        _respell(v, "unit_code", unit_spelling)
        if not code:
            bad("member_code", "trống; hãy ghi mã đảng viên")
        elif not CODE.match(code):
            bad("member_code", f"'{code}' {NOT_A_CODE}")
        elif code in seen_code:
            bad("member_code", f"'{code}' đã có ở dòng {seen_code[code]}; mỗi đảng viên chỉ ghi một lần")
        if not v["full_name"]:
            bad("full_name", "trống; hãy ghi họ và tên đảng viên")
        if not v["unit_code"]:
            bad("unit_code", "trống; hãy ghi mã đơn vị của đảng viên")
        elif v["unit_code"] not in units:
            bad("unit_code", f"không có đơn vị mã '{v['unit_code']}'; hãy kiểm tra lại mã hoặc nhập danh sách "
                             "đơn vị trước")
        phone = None
        if v["phone"]:
            phone = normalize_phone(v["phone"])
            if phone is None:
                bad("phone", f"'{v['phone']}' không phải số điện thoại Việt Nam; hãy ghi số như 0912 345 678")
            elif phone in seen_phone:
                bad("phone", f"số {v['phone']} đã có ở dòng {seen_phone[phone]}; mỗi đảng viên cần một số riêng, "
                             "hãy kiểm tra lại")
        role = ROLE_NAMES.get(" ".join(v["role"].casefold().split()))
        if role is None:
            bad("role", f"không có vai trò '{v['role']}'; hãy ghi Đảng viên, Bí thư, Cán bộ hoặc Quản trị "
                        "(hay member, secretary, cadre, admin)")
        if "exempt" in v and v["exempt"].casefold().strip() not in EXEMPT_WORDS:
            bad("exempt", f"'{v['exempt']}' không phải là có hoặc không; hãy ghi x (hoặc có) nếu đảng viên được "
                          "miễn sinh hoạt, nếu không thì để trống")
        if "language" in v and v["language"] and not is_language_tag(v["language"].casefold()):
            bad("language", f"'{v['language']}' không phải mã ngôn ngữ; hãy ghi mã như vi, km (tiếng Khmer), en")
        if bad.count:
            result.found.extend((row.number, line) for line in bad.lines)
            continue
        seen_code[code] = row.number
        if phone:
            seen_phone[phone] = row.number
        parsed.append((row, phone, role))
    # Phones must stay unique among active members once the import is done.
    staying = {} if full else {
        m.phone: m.code for m in members.values() if m.active and m.phone and m.code not in seen_code
    }
    for row, phone, _role in parsed:
        if phone in staying:
            result.found.append((row.number,
                f"{where}:{row.number}: {row.column('phone')}: số {row.values['phone']} đang là số của đảng viên "
                f"{staying[phone]}; mỗi đảng viên cần một số riêng, hãy kiểm tra lại"
            ))
    if result.found:
        return result

    for row, phone, role in parsed:
        v = row.values
        fields = {"full_name": v["full_name"], "unit_id": units[v["unit_code"]], "phone": phone, "role": role}
        if "exempt" in v:  # a file without the column leaves exemptions as they are
            fields["exempt"] = EXEMPT_WORDS[v["exempt"].casefold().strip()]
        if v.get("language"):
            fields["language"] = v["language"].casefold()
        elif "language" in v or v["member_code"] not in members:
            fields["language"] = default_language
        member = members.get(v["member_code"])
        if member is None:
            session.add(Member(code=v["member_code"], active=True, **fields))
            result.created += 1
            continue
        changed = any(getattr(member, k) != val for k, val in fields.items())
        if not member.active:
            member.active = True
            result.reactivated += 1
        elif changed:
            result.updated += 1
        else:
            result.unchanged += 1
        for k, val in fields.items():
            setattr(member, k, val)
    if full:
        listed = set(seen_code)
        for code, member in members.items():
            if member.active and code not in listed:
                member.active = False
                result.deactivated += 1
                result.stopped.append(member)
    session.flush()
    return result


AMBIGUOUS = ""  # a case-folded form that two stored codes share (``M1`` and ``m1`` from before): no respelling


@dataclass
class _Spellings:
    """Codes as stored: each by itself, and by its case-folded form where only one code has it."""

    exact: set[str] = field(default_factory=set)
    folded: dict[str, str] = field(default_factory=dict)

    def add(self, code: str) -> None:
        key = code.casefold()
        self.folded[key] = code if self.folded.get(key, code) == code else AMBIGUOUS
        self.exact.add(code)


def _spellings(codes: Iterable[str]) -> _Spellings:
    spelling = _Spellings()
    for code in codes:
        spelling.add(code)
    return spelling


def _respell(values: dict[str, str], column: str, spelling: _Spellings, *, learn: bool = False) -> str:
    """The code in ``column`` as it is already spelled (in the database, or earlier in the file when
    ``learn``): ``dv001`` is the member stored as ``DV001``, never a second one. A code stored exactly as
    written is itself; one whose case-folded form two stored codes share is left as written."""
    code = values[column]
    if not code or code in spelling.exact:
        return code
    known = spelling.folded.get(code.casefold())
    if known:
        values[column] = known
    elif known is None and learn:
        spelling.add(code)
    return values[column]


CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab and line breaks are allowed


class _problems_in:
    """Collects ``FILE:ROW: column: problem`` lines for one row."""

    def __init__(self, where: str, row: Row):
        self.prefix = f"{where}:{row.number}"
        self.row = row
        self.lines: list[str] = []
        for column, value in row.values.items():  # no sheet, report or XML can hold them
            if isinstance(value, str) and CONTROL_CHARACTER.search(value):
                self(column, "có ký tự điều khiển ẩn (thường do dán từ Word); hãy gõ lại ô này")

    def __call__(self, column: str, message: str) -> None:
        self.lines.append(f"{self.prefix}: {self.row.column(column)}: {message}")

    @property
    def count(self) -> int:
        return len(self.lines)
