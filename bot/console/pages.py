"""One function per console page or action: check, call the same service as the chat or the CLI, render.

Each takes ``(console, request, visit)``; ``visit`` holds the session (read-only for a GET: audit lines go
through ``visit.record``; one transaction for a POST), the logged-in member, the session's CSRF token and the
moment. Refusals raise ``PermissionDenied`` or ``Refused``.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import tempfile
import unicodedata
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.orm import selectinload
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bot.console.http import CSP, MAX_ROSTER_UPLOAD, MAX_UPLOAD, Refused, path_id, read_form, secured
from bot.domain import oversight_messages as om
from bot.domain.ids import parse_id
from bot.domain.messages import percent
from bot.domain.permissions import (
    ROLE_RANK, PermissionDenied, can_report, can_see_phone, can_view_unit, outranks, require_report,
    require_round_for_unit, require_view_unit, shown_phones, visible_root_units,
)
from bot.domain.phones import display_phone
from bot.services import console_access, oversight, stats
from bot.services.rounds import RoundError, round_status
from bot.storage.models import Document, Member, Round, RoundUnit, Unit, UnitAncestor
from bot.timeutil import PLAUSIBLE_YEARS, parse_local

MANAGERS = ("cadre", "admin")
CHANNEL_NAMES = {"telegram": "Telegram", "zalo": "Zalo"}
DENIED_MANAGE = "Chỉ cán bộ phụ trách và quản trị viên mới mở, đóng hay gia hạn đợt học tập của đơn vị mình."
DENIED_DOCUMENTS = "Chỉ cán bộ phụ trách và quản trị viên mới nạp văn bản và câu hỏi."
DENIED_REPLACE = ("Văn bản này đang dùng cho đợt học tập số {round} của đơn vị ngoài phạm vi của đồng chí; chỉ người "
                  "phụ trách tất cả các đợt chưa kết thúc của văn bản mới thay được nội dung và câu hỏi.")


def _context(visit, **more) -> dict:
    return {"me": visit.member, "csrf": visit.csrf, "manager": visit.member.role in MANAGERS, **more}


def _figures(s, member, round_id, unit_id, now):
    """(total, children) as the chat's figures show them: drill-down for cadres and admins."""
    if member.role in MANAGERS:
        return stats.unit_rollup(s, round_id, unit_id, now)
    return stats.unit_figures(s, round_id, unit_id, now), []


def _require_manage(s, member: Member, rnd: Round | None = None, denied: str = DENIED_MANAGE) -> None:
    """A cadre or an admin; with ``rnd``, one whose reach covers every unit of the round."""
    if member.role not in MANAGERS or (rnd is not None and not all(can_view_unit(s, member, ru.unit_id)
                                                                    for ru in rnd.units)):
        raise PermissionDenied(denied)


def _require_replace(s, member: Member, document_id: str, now) -> None:
    """Loading over a document changes the summary and quiz of every round that uses it: only someone who
    manages each of its rounds not yet ended (open, or opening later) may do it."""
    for rnd in s.scalars(select(Round).where(Round.document_id == document_id, Round.closed_at.is_(None),
                                             Round.closes_at > now)):
        _require_manage(s, member, rnd, DENIED_REPLACE.format(round=rnd.id))


def _redirect(url: str) -> Response:
    return secured(RedirectResponse(url, status_code=303))


# -- overview and drill-down ------------------------------------------------------------------------
async def overview(console, request: Request, visit) -> Response:
    s, member, now = visit.s, visit.member, visit.now
    blocks = []
    for unit in visible_root_units(s, member):
        for rnd in stats.rounds_for_unit(s, unit.id, now):
            total, children = _figures(s, member, rnd.id, unit.id, now)
            blocks.append({"round": rnd, "unit": unit, "total": total, "children": children})
    return console.render("overview.html", **_context(visit, blocks=blocks, upcoming=_upcoming(s, member, now)))


def _upcoming(s, member: Member, now, limit: int = 20) -> list[tuple[Round, Unit]]:
    """Rounds opened for a later day, for units within reach (one statement): each with one such unit (its
    page), soonest first."""
    covered = select(RoundUnit.round_id.label("round_id"), RoundUnit.unit_id.label("unit_id"))
    if member.role != "admin":
        below = covered.join(UnitAncestor, (UnitAncestor.descendant_id == RoundUnit.unit_id)
                             & (UnitAncestor.ancestor_id == member.unit_id))
        # a round for a unit above the viewer's (the province's) covers theirs: shown on their own unit's page
        above = (select(RoundUnit.round_id, literal(member.unit_id))
                 .join(UnitAncestor, (UnitAncestor.ancestor_id == RoundUnit.unit_id)
                       & (UnitAncestor.descendant_id == member.unit_id) & (UnitAncestor.depth > 0)))
        covered = union_all(below, above)
    covered = covered.subquery()
    mine = select(covered.c.round_id, func.min(covered.c.unit_id).label("unit_id")).group_by(covered.c.round_id).subquery()
    rows = s.execute(select(Round, Unit).join(mine, mine.c.round_id == Round.id).join(Unit, Unit.id == mine.c.unit_id)
                     .where(Round.opens_at > now, Round.closed_at.is_(None))
                     .options(selectinload(Round.document), selectinload(Round.units))
                     .order_by(Round.opens_at, Round.id).limit(limit)).all()
    return [(rnd, unit) for rnd, unit in rows]


def _round_unit(request: Request, visit, require=require_view_unit) -> tuple[Round, Unit]:
    """The round and unit of the URL, refused unless the unit is within reach (``require``) and the
    round covers it."""
    round_id, unit_id = path_id(request, "round_id"), path_id(request, "unit_id")
    require(visit.s, visit.member, unit_id)
    return require_round_for_unit(visit.s, round_id, unit_id), visit.s.get(Unit, unit_id)


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _download(data: bytes, name: str, media_type: str = XLSX) -> Response:
    """An attachment named ``name``: HTTP headers are Latin-1, so the name goes as UTF-8 in ``filename*``
    (RFC 6266) with an ASCII fallback (diacritics dropped: ``05-NQ-ĐU`` → ``05-NQ-DU``) for old clients."""
    plain = unicodedata.normalize("NFD", name.replace("đ", "d").replace("Đ", "D"))
    plain = "".join("_" if ch in '"\\' or not " " <= ch <= "~" else ch
                    for ch in plain if not unicodedata.combining(ch))
    disposition = f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"
    return secured(Response(data, media_type=media_type, headers={"Content-Disposition": disposition}))


NOT_FINISHED_PAGE = 50  # members per page of the not-finished list: a province's list is hundreds of thousands


def _not_finished_page(s, round_id: int, unit_id: int, number: int):
    return stats.not_finished_members(s, round_id, unit_id, (number - 1) * NOT_FINISHED_PAGE, NOT_FINISHED_PAGE)


async def unit_page(console, request: Request, visit) -> Response:
    s, member, now = visit.s, visit.member, visit.now
    rnd, unit = _round_unit(request, visit)
    round_id, unit_id = rnd.id, unit.id
    total, children = _figures(s, member, round_id, unit_id, now)
    number = parse_id(request.query_params.get("trang", "")) or 1  # 0, -1, abc, beyond any id: the first page
    count, rows = _not_finished_page(s, round_id, unit_id, number)
    pages_count = max(1, -(-count // NOT_FINISHED_PAGE))
    if number > pages_count:  # past the end (an old link, a list grown shorter): the last page
        number = pages_count
        count, rows = _not_finished_page(s, round_id, unit_id, number)
    phones = shown_phones(member, (r.member for r in rows))
    parent = s.get(Unit, unit.parent_id) if unit.parent_id else None
    if parent is not None and not (can_view_unit(s, member, parent.id) and
                                   stats.rounds_for_unit(s, parent.id, now)):
        parent = None
    may_manage = member.role in MANAGERS and all(can_view_unit(s, member, ru.unit_id) for ru in rnd.units)
    return console.render("unit.html", **_context(
        visit, round=rnd, unit=unit, total=total, children=children, rows=rows, phones=phones, parent=parent,
        not_finished=count, page=number, pages=pages_count,
        state=round_status(rnd, now), may_report=can_report(member), may_manage=may_manage,
        in_progress=om.IN_PROGRESS, left_unfinished=om.LEFT_UNFINISHED))


async def report_xlsx(console, request: Request, visit) -> Response:
    """The workbook ``/baocao`` sends, for one round and unit (phones only for admins, as in chat)."""
    from bot.reports.xlsx import build_workbook, report_data

    s, member, now = visit.s, visit.member, visit.now
    rnd, unit = _round_unit(request, visit, require_report)
    data = report_data(s, rnd.id, unit.id, now, tz=console.tz, include_phones=member.role == "admin")
    name = f"baocao-{rnd.document.code.replace('/', '-')}-{unit.code}-{now.astimezone(console.tz):%Y%m%d}.xlsx"
    visit.record("report", f"{rnd.document.code} — {unit.code}")
    return _download(build_workbook(data), name)


async def chart_png(console, request: Request, visit) -> Response:
    from bot.reports.chart import rate_chart_png

    rnd, unit = _round_unit(request, visit)
    total, children = _figures(visit.s, visit.member, rnd.id, unit.id, visit.now)
    png = rate_chart_png(children or [total], rnd.target_rate, title=f"Tỷ lệ hoàn thành {rnd.document.code}",
                         subtitle=unit.name)
    return secured(Response(png, media_type="image/png"))


async def remind(console, request: Request, visit) -> Response:
    """The ``/nhacnho`` of the chat: once a day per member, through the outbox."""
    await read_form(request, visit.csrf)
    replies = oversight.remind(visit.s, visit.member, visit.now, console.tz, console.quiet, budget=console.budget,
                               links=console.links)
    texts = [r.text for r in replies]
    console_access.record(visit.s, visit.member, "remind", "\n".join(texts), visit.now)
    return console.render("done.html", **_context(visit, title="Nhắc nhở", lines=texts))


# -- rounds ---------------------------------------------------------------------------------------
def _reachable_units(s, member: Member, query: str = "") -> list[tuple[int, Unit]]:
    """(depth, unit) of the units within ``member``'s reach, depth-first, filtered by ``query``."""
    from bot.services.chat import fold
    from bot.services.roster import unit_tree

    wanted = fold(query)
    reach = set(s.scalars(_reach(s, member)))
    return [(depth, u) for depth, u, _n in unit_tree(s)
            if u.id in reach and (not wanted or wanted in fold(f"{u.code} {u.name}"))]


def _reach(s, member: Member):
    """The ids of the units ``member`` may view (``can_view_unit``), as one statement: the closure below their
    visible roots."""
    roots = [u.id for u in visible_root_units(s, member)]
    return select(UnitAncestor.descendant_id).where(UnitAncestor.ancestor_id.in_(roots))


TARGET = re.compile(r"[0-9]{1,3}(?:[.,][0-9])?")  # 98, 97,5 or 97.5 (a "%" after it is dropped); ASCII digits only


def _local(console, text: str, label: str, *, end_of_day: bool = False):
    text = (text or "").strip()
    try:
        when = parse_local(text, console.tz, end_of_day=end_of_day)
    except ValueError:
        when = None
    shaped = re.fullmatch(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})", text)
    day, month, year = (int(part) for part in shaped.groups()) if shaped else (0, 0, 0)
    if when is None and year in PLAUSIBLE_YEARS:  # the right form, but no such month (13) or day (31/02)
        if not 1 <= month <= 12:
            raise Refused(400, f"{label}: “{text}” không có tháng {month}; tháng là số từ 1 đến 12 (dd/mm/yyyy).")
        days = calendar.monthrange(year, month)[1]
        if day > days:
            raise Refused(400, f"{label}: không có ngày {text}: tháng {month} năm {year} chỉ có {days} ngày; hãy "
                               "kiểm tra lại ngày.")
    if when is None or when.astimezone(console.tz).year not in PLAUSIBLE_YEARS:
        raise Refused(400, f"{label}: cần một ngày dạng dd/mm/yyyy từ năm {PLAUSIBLE_YEARS[0]} đến "
                           f"{PLAUSIBLE_YEARS[-1]} "
                           f"(ví dụ 15/12/2026), đồng chí đã nhập “{text[:40]}”.")
    return when


LONGEST_ROUND = timedelta(days=366)
OPENED_BACK = timedelta(days=7)


def _check_span(console, opens, closes, now) -> None:
    """A typo in a year (2062 for 2026, 2020 for 2026) opens a round at once or for decades: refused, with the
    dates as read, rather than announced to a province."""
    if opens < now - OPENED_BACK:
        raise Refused(400, f"Ngày mở {opens.astimezone(console.tz):%d/%m/%Y} đã qua hơn 7 ngày; hãy kiểm tra lại "
                           "ngày và năm (một đợt đã bắt đầu thì ghi ngày hôm nay).")
    if closes - opens > LONGEST_ROUND:
        raise Refused(400, f"Hạn cuối {closes.astimezone(console.tz):%d/%m/%Y} cách ngày mở "
                           f"{opens.astimezone(console.tz):%d/%m/%Y} hơn một năm; hãy kiểm tra lại ngày và năm.")


async def new_round(console, request: Request, visit) -> Response:
    from bot.services.rounds import open_round, same_round

    s, member, now = visit.s, visit.member, visit.now
    _require_manage(s, member)
    query = request.query_params.get("q", "")[:100]
    documents = list(s.scalars(select(Document).order_by(Document.id)))
    units = _reachable_units(s, member, query)
    error, values, chosen = None, {}, []
    if request.method == "POST":
        form = await read_form(request, visit.csrf)
        values = {k: str(form.get(k, "")) for k in ("document", "opens", "closes", "target")}
        chosen = [parse_id(str(v)) for v in form.getlist("unit")]
        work = s.begin_nested()
        try:
            if not chosen or None in chosen:
                raise Refused(400, "Chọn ít nhất một đơn vị.")
            picked = [s.get(Unit, uid) for uid in chosen]
            for unit in picked:
                if unit is None:
                    raise Refused(400, "Chọn ít nhất một đơn vị.")
                require_view_unit(s, member, unit.id)
            opens = _local(console, values["opens"], "Ngày mở")
            closes = _local(console, values["closes"], "Hạn cuối", end_of_day=True)
            typed = values["target"].strip().rstrip("%").strip() or "98"
            if not TARGET.fullmatch(typed):
                raise Refused(400, "Mục tiêu: cần một số phần trăm, ví dụ 98.")
            target = float(typed.replace(",", "."))
            if closes <= opens or closes <= now:
                raise Refused(400, "Hạn cuối phải sau ngày mở và chưa qua.")
            _check_span(console, opens, closes, now)
            if not 1 <= target <= 100:
                raise Refused(400, "Mục tiêu phải từ 1 đến 100%.")
            twice = same_round(s, values["document"], [u.id for u in picked], opens, closes)
            if twice is not None and twice.target_rate != target:  # not the same form: say so, open none
                raise Refused(400, f"Đã có đợt học tập số {twice.id} cho văn bản và các đơn vị này, cùng ngày mở và "
                                   f"hạn cuối, với mục tiêu {percent(twice.target_rate)}. Không mở đợt trùng lặp.")
            if twice is not None:  # the same form again: show the round it opened, open no second one
                work.rollback()
                return _redirect(f"/quantri/dot/{twice.id}/donvi/{picked[0].id}")
            try:
                rnd = open_round(s, values["document"], [u.code for u in picked], opens, closes, target, now)
            except RoundError as exc:
                raise Refused(400, f"Không mở được đợt học tập: {_for_the_console(str(exc))}") from None
            console_access.record(s, member, "open_round", f"đợt {rnd.id}: {rnd.document_id} cho "
                                  f"{', '.join(u.code for u in picked)}, mục tiêu {percent(target)}", now)
            work.commit()
            return _redirect(f"/quantri/dot/{rnd.id}/donvi/{picked[0].id}")
        except Refused as exc:
            work.rollback()
            error = exc.message
    return console.render("new_round.html", status=400 if error else 200, **_context(
        visit, documents=documents, units=units, query=query, error=error, values=values, ticked=set(chosen)))


def _managed_round(request: Request, visit) -> Round:
    rnd = visit.s.get(Round, path_id(request, "round_id"))
    if rnd is None:
        raise PermissionDenied(DENIED_MANAGE)
    _require_manage(visit.s, visit.member, rnd)
    return rnd


def _back_to(visit, rnd: Round) -> str:
    first = next(ru.unit_id for ru in rnd.units if can_view_unit(visit.s, visit.member, ru.unit_id))
    return f"/quantri/dot/{rnd.id}/donvi/{first}"


async def close_round(console, request: Request, visit) -> Response:
    from bot.services.rounds import close_round as close

    rnd = _managed_round(request, visit)
    form = await read_form(request, visit.csrf)
    if form.get("confirm") != "1":  # one tap next to "Gia hạn" must not end a round for good
        return console.render("confirm.html", **_context(
            visit, title="Kết thúc đợt học tập?", action=f"/quantri/dot/{rnd.id}/dong", back=_back_to(visit, rnd),
            button="Kết thúc đợt ngay",
            question=f"Đợt học tập số {rnd.id} ({rnd.document.code}) sẽ kết thúc ngay bây giờ: đảng viên chưa làm "
                     "sẽ không làm bài được nữa, và đợt đã kết thúc không mở lại hay gia hạn được."))
    try:
        close(visit.s, rnd.id, visit.now)
    except RoundError:
        raise Refused(400, "Đợt học tập này đã kết thúc.") from None
    console_access.record(visit.s, visit.member, "close_round", f"đợt {rnd.id}: {rnd.document_id}", visit.now)
    return _redirect(_back_to(visit, rnd))


async def extend_round(console, request: Request, visit) -> Response:
    from bot.services.rounds import extend_round as extend

    rnd = _managed_round(request, visit)
    form = await read_form(request, visit.csrf)
    back = _back_to(visit, rnd)
    try:
        closes = _local(console, str(form.get("closes", "")), "Hạn mới", end_of_day=True)
    except Refused as exc:
        raise Refused(exc.status, exc.message, back) from None
    if closes - rnd.opens_at > LONGEST_ROUND:
        raise Refused(400, f"Hạn mới {closes.astimezone(console.tz):%d/%m/%Y} cách ngày mở đợt "
                           f"{rnd.opens_at.astimezone(console.tz):%d/%m/%Y} hơn một năm; hãy kiểm tra lại ngày và năm.",
                      back)
    try:
        before = extend(visit.s, rnd.id, closes, visit.now, console.tz)
    except RoundError:
        raise Refused(400, "Hạn mới phải sau hạn hiện tại, và đợt học tập phải còn đang mở.", back) from None
    console_access.record(visit.s, visit.member, "extend_round",
                          f"đợt {rnd.id}: {before.astimezone(console.tz):%d/%m/%Y} → "
                          f"{closes.astimezone(console.tz):%d/%m/%Y}", visit.now)
    return _redirect(_back_to(visit, rnd))


def _upload_path(tmp: str, name: str) -> Path:
    """Where an upload is read: a short name of our own with the upload's suffix (a browser may send a name of
    any length, or one a file system refuses); problems show the organiser's own name (``_shown``)."""
    return Path(tmp) / f"upload{Path(name).suffix.lower()}"


def _shown(name: str) -> str:
    return name if len(name) <= 80 else f"{name[:77]}…"


# -- documents ------------------------------------------------------------------------------------
DOCUMENT_SUFFIXES = (".yaml", ".yml")
QUESTION_BANK_SUFFIXES = (".xlsx", ".txt", ".gift")  # hoctap content import: Excel sheet, Aiken, GIFT


def _document_from_upload(path: Path, doc_id: str, loaded: Document | None = None):
    """(DocumentSpec or None, problems) of an uploaded file: a document file is checked as it is; an
    Excel question sheet, Aiken or GIFT text goes through ``hoctap content import``'s readers first,
    taking what it lacks (title, summary...) from ``loaded``, the document of that id already loaded."""
    from bot.content.authoring import SourceProblems, fill_from_loaded, write_document
    from bot.content.moodle import looks_like_gift, read_aiken, read_gift, read_text_file
    from bot.content.validate import check_file
    from bot.content.workbook import read_workbook

    suffix = path.suffix.lower()
    if suffix in QUESTION_BANK_SUFFIXES:
        if suffix == ".xlsx":
            reader = read_workbook
        else:
            reader = read_gift if suffix == ".gift" or looks_like_gift(read_text_file(path)[0]) else read_aiken
        draft = reader(path)
        if loaded is not None:
            fill_from_loaded(draft, loaded)
        try:
            path = write_document(path.parent / "doc", doc_id, draft)
        except SourceProblems as exc:
            return None, list(exc.problems)
        if loaded is None and not draft.meta.get("title"):
            return None, ["Tệp chỉ có câu hỏi. Để thay câu hỏi của một văn bản đã nạp, ghi mã văn bản "
                          "đó; để nạp văn bản mới, tải tệp .yaml hoặc mẫu Excel có trang «Văn bản» (tiêu đề, "
                          "số hiệu, loại, tóm tắt)."]
        doc, problems = check_file(path, named_by_id=False)
        # the file checked was written from the upload: its lines are not the organiser's, its questions are
        return doc, [_in_the_upload(p, draft, doc_id) for p in problems]
    doc, problems = check_file(path, named_by_id=False)  # in the browser a file's name does not matter
    return doc, [str(p) for p in problems]


_QUESTION_FIELD = re.compile(r"^questions\[(\d+)\](?:\.(\w+))?")
_QUESTION_CITED = re.compile(r"questions\[(\d+)\] \(dòng \d+\)")
_QUESTION_PARTS = {"text": "Câu hỏi", "options": "phương án", "answer": "Đáp án", "explanation": "Giải thích"}


def _in_the_upload(problem, draft, doc_id: str) -> str:
    """A problem of the document written from an uploaded question file, located where the organiser wrote the
    question (sheet row or line) rather than in the document file they never saw."""
    def where(number: str) -> str | None:
        index = int(number) - 1
        return draft.questions[index].where if 0 <= index < len(draft.questions) else None

    message = _QUESTION_CITED.sub(lambda m: where(m.group(1)) or m.group(0), problem.message)
    asked = _QUESTION_FIELD.match(problem.field)
    if asked and where(asked.group(1)):
        part = _QUESTION_PARTS.get(asked.group(2) or "", asked.group(2) or "")
        return f"{where(asked.group(1))}{f' ({part})' if part else ''}: {message}"
    return f"Văn bản «{doc_id}»: {problem.field}: {message}"


# what the checkers (shared with the command line) point at, as the console offers it
CONSOLE_HINTS = {
    "--id: ": "Mã văn bản: ",
    "(lệnh hoctap content template)": "(nút «Tải mẫu Excel» trên trang này)",
    "(xem mẫu quizzes/kh-64-tu-binh-phuoc.yaml)": "(hoặc dùng mẫu Excel: nút «Tải mẫu Excel» trên trang này)",
    "hãy chạy 'hoctap content load' trước": "hãy nạp văn bản ở trang «Văn bản» trước",
    # the quiz's settings by the names the Excel template gives them (Aiken and GIFT files have none)
    "quiz.questions_per_attempt: ": "Số câu mỗi lần làm: ", "quiz.pass_score: ": "Điểm đạt (%): ",
    "quiz.max_attempts: ": "Số lần làm tối đa: ",
    "; hãy giảm số này hoặc thêm câu hỏi": "; hãy tải lên ít nhất chừng ấy câu hỏi, hoặc dùng mẫu Excel (trang "
                                            "«Văn bản», dòng «Số câu mỗi lần làm») để đặt số nhỏ hơn",
}


def _for_the_console(problem: str) -> str:
    for cli, console in CONSOLE_HINTS.items():
        problem = problem.replace(cli, console)
    return problem


async def document_template(console, request: Request, visit) -> Response:
    """The Excel template for questions (and the document's details), as ``hoctap content template`` writes it."""
    from bot.content.workbook import template_bytes

    _require_manage(visit.s, visit.member, denied=DENIED_DOCUMENTS)
    return _download(template_bytes(), "mau-cau-hoi.xlsx")


async def documents(console, request: Request, visit) -> Response:
    """Upload a document file: its problems by line, a preview, and loading as ``hoctap content load``."""
    from bot.console.preview import preview
    from bot.content.load import code_clashes, load_document

    s, member, now = visit.s, visit.member, visit.now
    _require_manage(s, member, denied=DENIED_DOCUMENTS)
    result, typed_id = {}, ""
    if request.method == "POST":
        form = await read_form(request, visit.csrf, limit=MAX_UPLOAD)
        typed_id = str(form.get("doc_id") or "").strip()[:64]  # shown again with the file's problems
        upload = form.get("file")
        name = Path(getattr(upload, "filename", "") or "").name
        if not name or Path(name).suffix.lower() not in DOCUMENT_SUFFIXES + QUESTION_BANK_SUFFIXES:
            raise Refused(400, "Chọn một tệp văn bản .yaml, hoặc câu hỏi dạng Excel (.xlsx), Aiken (.txt) hay GIFT.")
        doc_id = str(form.get("doc_id") or "").strip() or Path(name).stem.lower()
        data = await upload.read()
        with tempfile.TemporaryDirectory() as tmp:
            path = _upload_path(tmp, name)
            path.write_bytes(data)
            doc, problems = _document_from_upload(path, doc_id, s.get(Document, doc_id))
            problems = [_for_the_console(p.replace(str(path), _shown(name)).replace(path.name, _shown(name)))
                        for p in problems]
        if doc is not None:
            doc.source_file = _shown(name)
        if doc is not None and not problems:
            problems = [str(p) for p in code_clashes(s, [doc])]
        result = {"name": name, "problems": problems, "doc": doc,
                  "preview": preview(doc) if doc is not None and not problems else None}
        if not problems and doc is not None and form.get("action") == "load":
            _require_replace(s, member, doc.id, now)
            report = load_document(s, doc, now)
            result["loaded"] = report
            console_access.record(s, member, "upload", f"{name}: {doc.id}, {report.questions_current} câu hỏi "
                                  f"({report.questions_added} mới, {report.questions_retired} bỏ)", now)
    loaded = list(s.scalars(select(Document).order_by(Document.id)))
    return console.render("documents.html", status=400 if result.get("problems") else 200,
                          **_context(visit, result=result, loaded=loaded, typed_id=typed_id))


# -- roster ---------------------------------------------------------------------------------------
async def roster(console, request: Request, visit) -> Response:
    """Search members within reach; admins also upload the units and members files (all-or-nothing)."""
    s, member = visit.s, visit.member
    result = None
    if request.method == "POST":
        result = await _import(console, request, visit)
    query = request.query_params.get("q", "")[:100].strip()
    members = _members_in_reach(s, member, query) if query else []
    phones = shown_phones(member, members)
    units = [u for _d, u in _reachable_units(s, member)]
    return console.render("roster.html", status=400 if result and result.problems else 200, **_context(
        visit, query=query, members=members, phones=phones, result=result, units=units))


def _members_in_reach(s, member: Member, query: str, limit: int = 200) -> list[Member]:
    """Members of the viewer's units whose code or name holds ``query``, or whose phone holds it as people
    write numbers (``0333 378 379``, ``+84 333…``), where the viewer may see that phone: a search must not
    let a cadre guess, digit by digit, a number the page hides from them. The first ``limit`` by code: the
    roster is read as plain rows in batches and only the members shown are loaded (an admin's reach is the
    whole province)."""
    from sqlalchemy.orm import joinedload

    from bot.services.chat import fold

    wanted = fold(query)
    digits = re.sub(r"[\s.\-()]", "", query)
    digits = digits if re.fullmatch(r"\+?\d{3,}", digits) else None
    rows = s.execute(select(Member.id, Member.code, Member.full_name, Member.phone, Member.unit_id)
                     .where(Member.unit_id.in_(_reach(s, member))).order_by(Member.code)
                     .execution_options(yield_per=2000))
    found: list[int] = []
    try:
        for row in rows:
            if wanted in fold(f"{row.code} {row.full_name}") or (
                    digits and row.phone and can_see_phone(member, row.unit_id) and _phone_holds(row.phone, digits)):
                found.append(row.id)
                if len(found) == limit:
                    break
    finally:
        rows.close()
    members = s.scalars(select(Member).options(joinedload(Member.unit)).where(Member.id.in_(found))).all()
    return sorted(members, key=lambda m: m.code)


def _phone_holds(phone: str, digits: str) -> bool:
    """``+84333378379`` holds ``0333378379``, ``333378``, ``+84333`` and ``84333378379``."""
    local = "0" + phone[3:] if phone.startswith("+84") else phone
    return any(digits in form for form in (phone, phone.lstrip("+"), local))


async def _import(console, request: Request, visit):
    from bot.roster.importer import import_members, import_units

    if visit.member.role != "admin":
        raise PermissionDenied("Chỉ quản trị viên mới nạp danh sách đơn vị và đảng viên.")
    form = await read_form(request, visit.csrf, limit=MAX_ROSTER_UPLOAD,
                           too_big="Tệp .xlsx nhỏ hơn nhiều so với .csv: hãy lưu danh sách từ Excel dạng .xlsx rồi "
                                   "tải lên lại; một danh sách lớn hơn nữa được nạp bằng lệnh 'hoctap members import' "
                                   "trên máy chủ.")
    upload, kind = form.get("file"), form.get("kind")
    name = Path(getattr(upload, "filename", "") or "").name
    if kind not in ("units", "members") or Path(name).suffix.lower() not in (".csv", ".xlsx"):
        raise Refused(400, "Chọn loại danh sách và một tệp .csv hoặc .xlsx.")
    data = await upload.read()
    me = visit.member
    role_before = me.role
    work = visit.s.begin_nested()  # all or nothing, as 'hoctap units/members import'
    with tempfile.TemporaryDirectory() as tmp:
        path = _upload_path(tmp, name)
        path.write_bytes(data)
        if kind == "units":
            result = import_units(visit.s, path)
        else:
            result = import_members(visit.s, path, full=form.get("full") == "1")
    problems = [p.replace(str(path), _shown(name)) for p in result.problems]
    if result.ok and not me.active:  # a full list without the uploader would lock them out of the console
        problems = [f"{_shown(name)}: danh sách đầy đủ này không có chính đồng chí ({me.code}), nên sẽ ngừng sinh "
                    "hoạt cả tài khoản đang nạp; hãy thêm dòng của đồng chí vào tệp. Chưa nạp gì."]
    elif result.ok and ROLE_RANK.get(me.role, 0) < ROLE_RANK.get(role_before, 0):
        # demoting oneself ends one's own session at the next page: another admin must do it
        problems = [f"{_shown(name)}: tệp ghi vai trò của chính đồng chí ({me.code}) thấp hơn vai trò hiện tại, nên "
                    "đồng chí sẽ mất quyền vào trang quản trị ngay sau khi nạp; hãy giữ vai trò của mình trong tệp, "
                    "hoặc nhờ một quản trị viên khác đổi. Chưa nạp gì."]
    elif result.ok and not _active_admins(visit.s):
        problems = [f"{_shown(name)}: sau khi nạp sẽ không còn quản trị viên nào đang sinh hoạt, và không ai vào "
                    "được trang quản trị để sửa lại; hãy giữ ít nhất một quản trị viên trong tệp. Chưa nạp gì."]
    confirm = result.deactivated if result.ok and not problems else 0
    token = f"{confirm}:{hashlib.sha256(data).hexdigest()[:16]}"  # this count, from this very file
    if confirm and form.get("confirm") == token:
        confirm = 0  # seen and confirmed
    shown = SimpleNamespace(ok=not problems and not confirm, problems=problems, created=result.created,
                            updated=result.updated, unchanged=result.unchanged, deactivated=result.deactivated,
                            reactivated=result.reactivated, confirm=confirm, confirm_token=token,
                            stopped=[f"{m.code} {m.full_name}" for m in result.stopped[:20]])
    if not shown.ok:  # problems, or deactivations not yet confirmed: nothing is kept
        work.rollback()
        return shown
    work.commit()
    console_access.record(visit.s, visit.member, "import_" + kind, f"{name}: {result.created} mới, "
                          f"{result.updated} sửa, {result.reactivated} hoạt động lại, {result.deactivated} ngừng",
                          visit.now)
    return shown


def _active_admins(s) -> int:
    return s.scalar(select(func.count()).select_from(Member).where(Member.role == "admin", Member.active))


async def deactivate(console, request: Request, visit) -> Response:
    s, member = visit.s, visit.member
    target = s.get(Member, path_id(request, "member_id"))
    if target is None or not can_view_unit(s, member, target.unit_id):
        raise PermissionDenied("Đồng chí không có quyền sửa đảng viên này.")
    form = await read_form(request, visit.csrf)
    if target.id == member.id:
        raise Refused(400, "Đồng chí không thể tự ngừng sinh hoạt của mình.")
    if not outranks(member, target):
        raise Refused(403, "Chỉ quản trị viên hoặc người có vai trò cao hơn mới ngừng sinh hoạt được đồng chí này.")
    if form.get("confirm") != "1":
        return console.render("confirm.html", **_context(
            visit, title="Ngừng sinh hoạt?", action=f"/quantri/doanvien/{target.id}/ngung",
            back=f"/quantri/doanvien?q={quote(target.code)}", button="Ngừng sinh hoạt",
            question=f"Đồng chí {target.full_name} ({target.code}, {target.unit.name}) sẽ không còn trong danh sách "
                     "sinh hoạt: không được nhắc, không tính vào tỷ lệ, và không vào được trang học tập. Có thể cho "
                     "sinh hoạt lại sau."))
    target.active = False
    console_access.record(s, member, "deactivate", f"{target.code} {target.full_name}", visit.now)
    return _redirect(f"/quantri/doanvien?q={quote(target.code)}")


async def relink(console, request: Request, visit) -> Response:
    """A code for one member that moves their link to a new phone or account (``linking.relink_code``): made by
    whoever could stop that member, shown once on the page, recorded in the audit log."""
    from bot.services.linking import format_code, relink_code

    s, member = visit.s, visit.member
    target = s.get(Member, path_id(request, "member_id"))
    if target is None or not can_view_unit(s, member, target.unit_id):
        raise PermissionDenied("Đồng chí không có quyền sửa đảng viên này.")
    form = await read_form(request, visit.csrf)
    if not target.active or target.id == member.id or not outranks(member, target):
        raise Refused(403, "Chỉ bí thư, cán bộ phụ trách hoặc quản trị viên cấp trên mới cấp mã liên kết mới cho "
                           "đồng chí này, và chỉ khi đồng chí còn sinh hoạt.")
    channel = "zalo" if form.get("channel") == "zalo" else "telegram"
    if channel == "telegram" and not console.bot_name:
        raise Refused(400, "Máy chủ chưa khai báo tên bot Telegram (telegram.bot_username); liên hệ quản trị viên.")
    code = relink_code(s, target, visit.now, channel)
    console_access.record(s, member, "relink", f"{target.code} {target.full_name} ({CHANNEL_NAMES[channel]})",
                          visit.now)
    return console.render("relink.html", **_context(
        visit, target=target, channel=channel, code=format_code(code),
        link=f"https://t.me/{console.bot_name}?start={code}"))


async def reactivate(console, request: Request, visit) -> Response:
    """Undo "Ngừng sinh hoạt" for a member within reach, by whoever could have stopped them."""
    s, member = visit.s, visit.member
    target = s.get(Member, path_id(request, "member_id"))
    if target is None or not can_view_unit(s, member, target.unit_id):
        raise PermissionDenied("Đồng chí không có quyền sửa đảng viên này.")
    await read_form(request, visit.csrf)
    if not outranks(member, target):
        raise Refused(403, "Chỉ quản trị viên hoặc người có vai trò cao hơn mới cho đồng chí này sinh hoạt lại được.")
    if target.phone and s.scalar(select(Member.code).where(Member.phone == target.phone, Member.active,
                                                           Member.id != target.id)):
        # never a phone it hides
        number = f" {display_phone(target.phone)}" if can_see_phone(member, target.unit_id) else ""
        raise Refused(400, f"Số điện thoại{number} của đồng chí này đang là số của một đảng viên khác đang sinh hoạt; "
                           "hãy sửa danh sách đảng viên trước.")
    target.active = True
    console_access.record(s, member, "reactivate", f"{target.code} {target.full_name}", visit.now)
    return _redirect(f"/quantri/doanvien?q={quote(target.code)}")


async def invitations(console, request: Request, visit) -> Response:
    """Per-member Telegram links or Zalo codes of a branch and below as XLSX, as ``hoctap members invite``
    writes them (earlier unused codes of those members stop working)."""
    from bot.roster.files import write_table
    from bot.services.linking import create_invites, invitation_rows, units_bots
    from bot.services.roster import list_members

    s, member = visit.s, visit.member
    form = await read_form(request, visit.csrf)
    unit = s.get(Unit, parse_id(str(form.get("unit", ""))) or 0)
    if unit is None:
        raise Refused(400, "Chọn một đơn vị.")
    require_view_unit(s, member, unit.id)
    channel = "zalo" if form.get("channel") == "zalo" else "telegram"
    if channel == "telegram" and not console.bot_name:
        raise Refused(400, "Máy chủ chưa khai báo tên bot Telegram (telegram.bot_username); liên hệ quản trị viên.")
    members = list_members(s, unit.code)
    codes = create_invites(s, members, visit.now, channel=channel)
    bots = units_bots(s, {m.unit_id for m in members}) if channel == "zalo" else None  # each member's own bot
    header, rows = invitation_rows(members, codes, channel, bot_name=console.bot_name, zalo_link=console.zalo_link,
                                   unit_bots=bots, phone_shown=lambda m: can_see_phone(member, m.unit_id))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thumoi.xlsx"
        write_table(path, header, rows)
        data = path.read_bytes()
    console_access.record(s, member, "invite", f"{unit.code} ({CHANNEL_NAMES[channel]}): {len(rows)} đồng chí",
                          visit.now)
    return _download(data, f"thumoi-{channel}-{unit.code}.xlsx")


async def audit(console, request: Request, visit) -> Response:
    return console.render("audit.html", **_context(visit, rows=console_access.audit_log(visit.s),
                                                   actions=console_access.ACTIONS))


# -- the Zalo Official Account's authorisation ------------------------------------------------------
NO_OA = "Máy chủ này chưa cấu hình Zalo Official Account (mục zalo_oa trong config.yaml)."


async def zalo_oa(console, request: Request, visit) -> Response:
    """Whether the OA may send, until when, and the button that (re)connects it: admins only."""
    if console.oa is None:
        raise Refused(404, NO_OA)
    tokens, callback = console.oa
    response = console.render("zalo_oa.html", **_context(visit, state=tokens.state(), callback=callback))
    # the button's form is answered with a redirect to Zalo's permission page: the one other place it may go
    zalo = urlsplit(tokens.oauth_url)
    response.headers["Content-Security-Policy"] = CSP.replace(
        "form-action 'self'", f"form-action 'self' {zalo.scheme}://{zalo.netloc}")
    return response


async def zalo_oa_connect(console, request: Request, visit) -> Response:
    """Start the authorisation (PKCE, its state kept) and send the admin's browser to Zalo's permission page;
    Zalo sends it back to ``/zalo-oa/callback`` (``bot/channels/zalo_oa/callback.py``), which completes it."""
    if console.oa is None:
        raise Refused(404, NO_OA)
    await read_form(request, visit.csrf)
    tokens, callback = console.oa
    if not callback:
        raise Refused(400, "Máy chủ chưa khai báo địa chỉ công khai (web.public_url) để Zalo gửi lại mã cấp quyền.")
    url = tokens.permission_url(callback, visit.now, visit.s)
    console_access.record(visit.s, visit.member, "zalo_oa_authorize", "mở trang cấp quyền của Zalo", visit.now)
    return _redirect(url)
