"""``/baocao`` in a chat: the XLSX workbook and the PNG chart of each open or recent round.

The chat service does not build reports (services sit below this layer); the process wiring hands
``report_replies`` to ``ChatService(reports=...)``, so the chat asks for it without importing it.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.domain import oversight_messages as om
from bot.domain.permissions import require_report
from bot.domain.replies import Attachment, Reply
from bot.services import stats
from bot.services.oversight import answerable_units
from bot.storage.models import Member


def report_replies(s: Session, member: Member, now: datetime, tz: ZoneInfo) -> list[Reply]:
    """One reply per round of each unit the reader answers for, with the workbook and the chart."""
    from bot.reports.chart import rate_chart_png  # matplotlib loads on the first /baocao, not at start
    from bot.reports.xlsx import build_workbook, report_data

    replies = []
    for unit in answerable_units(s, member):
        require_report(s, member, unit.id)
        rounds = stats.rounds_for_unit(s, unit.id, now)
        if not rounds:
            replies.append(om.no_rounds(unit))
        for rnd in rounds:
            data = report_data(s, rnd.id, unit.id, now, tz=tz, include_phones=member.role == "admin")
            rr = data.rounds[0]
            stamp = now.astimezone(tz).strftime("%Y%m%d")
            name = f"baocao-{rnd.document.code.replace('/', '-')}-{unit.code}-{stamp}"
            chart = rate_chart_png(rr.units or [rr.total], rr.target,
                                   title=f"Tỷ lệ hoàn thành {rnd.document.code}", subtitle=unit.name)
            replies.append(Reply(om.report_caption(rnd, unit, rr.total), files=[
                Attachment(f"{name}.xlsx", build_workbook(data)),
                Attachment(f"{name}.png", chart, kind="photo"),
            ]))
    return replies
