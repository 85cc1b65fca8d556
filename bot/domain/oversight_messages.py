"""What secretaries and cadres read: figures, who has not finished, reminders sent, reports.

Pure functions of statistics data; actions ``s:`` (figures of a unit), ``c:`` (not-finished page)
carry ids that the service checks again against the reader's permissions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from zoneinfo import ZoneInfo

from bot.domain.messages import local, percent
from bot.domain.replies import Choice, Reply
from bot.domain.statistics import Figures, NotFinished
from bot.storage.models import Round, Unit

PAGE = 20
# What a flag in a member's delivery state (``bot.outbox.queue.delivery_flags``) tells the secretary.
CALL_LIST = "chưa liên lạc được qua Zalo"  # no OA message or ZNS could reach the member: call them

DELIVERY_NOTES = {
    "refused": "không nhận được tin nhắn của bot",
    "unreachable": CALL_LIST,
    "uncertain": "có thể chưa nhận được tin nhắn về đợt này",
}


def duration(left: timedelta | None) -> str:
    if left is None:
        return "đã kết thúc"
    days, rest = divmod(int(left.total_seconds()), 86400)
    hours = rest // 3600
    if days:
        return f"còn {days} ngày {hours} giờ"
    return f"còn {hours} giờ {rest % 3600 // 60} phút"


def rate_line(f: Figures) -> str:
    """``52/60 — 86,7% (mục tiêu 98%)``"""
    return f"{f.finished}/{f.audience} — {percent(f.rate)} (mục tiêu {percent(f.target)})"


def figures_text(rnd: Round, f: Figures, tz: ZoneInfo) -> str:
    doc = rnd.document
    lines = [
        f"📊 {doc.code} — {f.unit_name}",
        f"Đã hoàn thành: {rate_line(f)}",
        f"Đạt yêu cầu: {f.passed} · Điểm trung bình: {percent(f.average_score) if f.average_score is not None else '—'}",
        f"Chưa làm: {f.not_started} · {'Bỏ dở' if f.time_left is None else 'Đang làm dở'}: {f.in_progress}",
    ]
    if f.audience == 0 and f.exempt:  # nobody to ask for, nothing missed
        lines.append("Tất cả đảng viên của đơn vị được miễn sinh hoạt; không ai cần học trong đợt này.")
    elif f.audience == 0:  # a unit whose members are not imported yet
        lines.append("Đơn vị chưa có đảng viên nào trong danh sách; hãy nạp danh sách đảng viên.")
    elif f.target_met:
        lines.append("✅ Đã đạt mục tiêu.")
    elif f.time_left is None:  # over: nobody can finish any more, so nobody is asked for
        lines.append(f"Không đạt mục tiêu: thiếu {f.needed} đồng chí hoàn thành.")
    else:
        lines.append(f"Cần thêm {f.needed} đồng chí hoàn thành để đạt mục tiêu.")
    if rnd.closed_at is not None and rnd.closed_at < rnd.closes_at:  # closed by hand before its deadline
        lines.append(f"Thời hạn: đã kết thúc sớm lúc {local(rnd.closed_at, tz)} (hạn {local(rnd.closes_at, tz)})")
    else:
        lines.append(f"Thời hạn: {duration(f.time_left)} (hạn {local(rnd.closes_at, tz)})")
    return "\n".join(lines)


def unit_figures_reply(rnd: Round, total: Figures, children: list[Figures], parent: Unit | None, tz: ZoneInfo,
                       *, can_go_up: bool) -> Reply:
    lines = [figures_text(rnd, total, tz)]
    choices: list[list[Choice]] = []
    if children:
        lines += ["", "Theo đơn vị (xa mục tiêu nhất trước):"]
        for i, c in enumerate(children, start=1):
            mark = "✅" if c.target_met else "•"
            lines.append(f"{mark} {i}. {c.unit_name}: {rate_line(c)}")
        choices = [[Choice(f"{i}. {c.unit_name}"[:60], f"s:{rnd.id}:{c.unit_id}", typed=str(i))]
                   for i, c in enumerate(children[:20], start=1) if c.unit_id != total.unit_id]  # not itself again
    if parent is not None and can_go_up:
        choices.append([Choice(f"↑ {parent.name}"[:60], f"s:{rnd.id}:{parent.id}", typed="0")])
    return Reply("\n".join(lines), choices)


def no_rounds(unit: Unit) -> Reply:
    return Reply(f"{unit.name} hiện không có đợt học tập nào đang mở hoặc vừa kết thúc trong 30 ngày qua.")


def nothing_to_remind(unit: Unit, ended: Round | None, tz: ZoneInfo) -> Reply:
    """``/nhacnho`` with no round open: ``no_rounds`` would deny the round that just ended, which /thongke still
    shows; ``ended``: the round of the unit that ended last, if one did lately."""
    text = f"{unit.name} hiện không có đợt học tập nào đang mở: nhắc nhở chỉ gửi cho đợt học tập đang mở."
    if ended is not None:
        text += f" Đợt {ended.document.code} đã kết thúc lúc {local(ended.closed_at or ended.closes_at, tz)}."
    return Reply(text)



IN_PROGRESS = "đang làm dở"  # a quiz begun, while the round runs
LEFT_UNFINISHED = "bỏ dở, chưa nộp bài"  # the same once the round is over: nobody should wait for it


def not_finished_reply(rnd: Round, unit: Unit, total: int, rows: list[NotFinished], page: int,
                       phones: dict[int, str | None], delivery: Mapping[int, Sequence[str]], *, over: bool) -> Reply:
    """A page of who has not finished; ``delivery``: each member's delivery flags (``DELIVERY_NOTES``);
    ``over``: the round has ended, so a quiz begun is one left unfinished, no longer one under way."""
    doc = rnd.document
    if total == 0:
        return Reply(f"✅ {doc.code} — {unit.name}: tất cả đảng viên đã hoàn thành.")
    pages = (total + PAGE - 1) // PAGE
    verdict, when = ("không hoàn thành", "đợt đã kết thúc; ") if over else ("chưa hoàn thành", "")
    lines = [f"📋 {doc.code} — {unit.name}: {total} đồng chí {verdict} ({when}trang {page}/{pages})", ""]
    for n, row in enumerate(rows, start=(page - 1) * PAGE + 1):
        m = row.member
        extra = []
        if row.in_progress:
            extra.append(LEFT_UNFINISHED if over else IN_PROGRESS)
        if phones.get(m.id):
            extra.append(phones[m.id])
        extra += [DELIVERY_NOTES[flag] for flag in delivery.get(m.id, ())]
        suffix = f" ({'; '.join(extra)})" if extra else ""
        lines.append(f"{n}. {m.full_name} — {row.unit_name}{suffix}")
    nav = []
    if page > 1:
        nav.append(Choice("‹ Trước", f"c:{rnd.id}:{unit.id}:{page - 1}", typed="truoc"))
    if page < pages:
        nav.append(Choice("Tiếp ›", f"c:{rnd.id}:{unit.id}:{page + 1}", typed="tiếp"))
    return Reply("\n".join(lines), [nav] if nav else [])


def reminded_reply(rnd: Round, unit: Unit, sent: int, already: int, unlinked: int, later: str | None,
                   missed: int = 0) -> Reply:
    """``missed``: of those sent to, how many did not get the round's last message (blocked the bot, or the
    call list): the secretary should not count on this one reaching them."""
    doc = rnd.document
    lines = [f"🔔 {doc.code} — {unit.name}: đã gửi nhắc nhở tới {sent} đồng chí chưa hoàn thành."]
    if missed:
        lines.append(f"Trong đó {missed} đồng chí chưa nhận được tin nhắn trước của bot; tin này có thể cũng không "
                     "tới: xem /chualam và nhắc trực tiếp.")
    skipped = []
    if already:
        skipped.append(f"{already} đồng chí đã được nhắc hoặc thông báo về đợt này trong 20 giờ qua "
                       "(mỗi ngày nhắc tối đa một lần)")
    if unlinked:
        skipped.append(f"{unlinked} đồng chí chưa liên kết tài khoản với bot (cần nhắc trực tiếp)")
    if skipped:
        lines.append("Bỏ qua: " + "; ".join(skipped) + ".")
    if later:
        lines.append(f"Đang trong giờ nghỉ, tin nhắn sẽ được gửi lúc {later}.")
    return Reply("\n".join(lines))


def report_caption(rnd: Round, unit: Unit, f: Figures) -> str:
    return f"Báo cáo {rnd.document.code} — {unit.name}: {rate_line(f)}"


def no_report_files() -> Reply:
    return Reply("Máy chủ này chưa bật gửi tệp báo cáo; xem số liệu bằng /thongke.")


def digest_text(rounds: list[tuple[Round, Figures, int]], unit: Unit, tz: ZoneInfo, period: str | None = "tuần") -> Reply:
    """The digest (``period``: "tuần" for a weekly one, "ngày" daily, None otherwise): each round's figures
    and how many finished since the previous digest."""
    parts = [f"🗓 Tổng hợp {period} — {unit.name}" if period else f"🗓 Tổng hợp — {unit.name}"]
    for rnd, f, new in rounds:
        parts += ["", figures_text(rnd, f, tz), f"Tăng thêm {new} đồng chí hoàn thành so với lần tổng hợp trước."]
    return Reply("\n".join(parts))


def closing_text(rnd: Round, unit: Unit, f: Figures, tz: ZoneInfo) -> Reply:
    verdict = ("không có đảng viên nào trong danh sách" if f.audience == 0
               else "✅ ĐẠT mục tiêu" if f.target_met else "❌ CHƯA ĐẠT mục tiêu")
    return Reply(f"🏁 Kết thúc đợt học tập {rnd.document.code} — {unit.name}\n"
                 f"Kết quả cuối cùng: {rate_line(f)} — {verdict}.\n"
                 f"Đạt yêu cầu: {f.passed} · Điểm trung bình: "
                 f"{percent(f.average_score) if f.average_score is not None else '—'}")
