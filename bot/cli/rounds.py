"""Study rounds: open, list, extend and close them, and report on one."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.cli.base import CommandTree, UsageError, command, id_arg, local_time, open_db
from bot.config import Settings
from bot.timeutil import fmt_datetime, utcnow


@command("rounds open")
def cmd_rounds_open(args, settings: Settings) -> int:
    from bot.services.rounds import RoundError, open_round

    opens = local_time(args.opens, settings, "--opens")
    closes = local_time(args.closes, settings, "--closes", end_of_day=True)
    db = open_db(settings)
    try:
        with db.session() as s:
            rnd = open_round(s, args.document_id, args.units.split(","), opens, closes, args.target, utcnow())
            rid = rnd.id
    except RoundError as exc:
        raise UsageError(str(exc)) from None
    tz = settings.tz
    print(f"round {rid} opened: {args.document_id} for {args.units}, "
          f"{fmt_datetime(opens, tz)} – {fmt_datetime(closes, tz)}, target {args.target:g}%")
    return 0


@command("rounds list")
def cmd_rounds_list(args, settings: Settings) -> int:
    from bot.services.rounds import list_rounds

    db = open_db(settings)
    tz = settings.tz
    with db.read_session() as s:
        rows = list_rounds(s, utcnow())
        for r in rows:
            rnd = r.round
            print(f"{rnd.id}\t{r.status}\t{rnd.document_id}\t{','.join(r.unit_codes)}\t"
                  f"{fmt_datetime(rnd.opens_at, tz)} – {fmt_datetime(rnd.closes_at, tz)}\t"
                  f"target {rnd.target_rate:g}%\t{r.audience} members")
        if not rows:
            print("no rounds yet; open one with 'hoctap rounds open'", file=sys.stderr)
    return 0


@command("rounds close")
def cmd_rounds_close(args, settings: Settings) -> int:
    from bot.services.rounds import RoundError, close_round

    db = open_db(settings)
    try:
        with db.session() as s:
            close_round(s, args.round_id, utcnow())
    except RoundError as exc:
        raise UsageError(str(exc)) from None
    print(f"round {args.round_id} closed")
    return 0


@command("rounds extend")
def cmd_rounds_extend(args, settings: Settings) -> int:
    from bot.services.rounds import RoundError, extend_round

    closes = local_time(args.closes, settings, "--closes", end_of_day=True)
    db = open_db(settings)
    try:
        with db.session() as s:
            extend_round(s, args.round_id, closes, utcnow(), settings.tz)
    except RoundError as exc:
        raise UsageError(str(exc)) from None
    print(f"round {args.round_id} now closes {fmt_datetime(closes, settings.tz)}")
    return 0


@command("report")
def cmd_report(args, settings: Settings) -> int:
    from bot.domain.messages import percent
    from bot.domain.permissions import round_covers_unit
    from bot.reports.chart import rate_chart_png
    from bot.reports.question_review import flagged
    from bot.reports.xlsx import build_workbook, report_data
    from bot.services.roster import RosterError, unit_by_code
    from bot.services.stats import StatsError
    from bot.storage.models import Round

    db = open_db(settings)
    now = utcnow()
    with db.read_session() as s:  # a province's report reads for seconds: no write lock meanwhile
        rnd = s.get(Round, args.round_id)
        if rnd is None:
            raise UsageError(f"no round {args.round_id}; see 'hoctap rounds list'")
        try:
            units = [unit_by_code(s, args.unit)] if args.unit else [ru.unit for ru in rnd.units]
        except RosterError as exc:
            raise UsageError(str(exc)) from None
        if args.unit and not round_covers_unit(s, rnd.id, units[0]):
            covered = ", ".join(sorted(ru.unit.code for ru in rnd.units))
            raise UsageError(f"round {rnd.id} does not cover unit {args.unit} (it covers {covered} and the units "
                             "below them)")
        for unit in units:
            try:
                data = report_data(s, rnd.id, unit.id, now, tz=settings.tz)
            except StatsError as exc:
                raise UsageError(str(exc)) from None
            rr = data.rounds[0]
            t = rr.total
            avg = percent(t.average_score) if t.average_score is not None else "-"
            exempt = f", {t.exempt} exempt (not counted)" if t.exempt else ""
            print(f"{rnd.document.code} — {unit.code} {unit.name}: {t.finished}/{t.audience} — {percent(t.rate)} "
                  f"(target {percent(t.target)}), passed {t.passed}, average {avg}, needed {t.needed}{exempt}")
            for f in rr.units:
                print(f"  {f.unit_code:<14} {f.finished:>6}/{f.audience:<6} {percent(f.rate):>7}  "
                      f"{'met' if f.target_met else 'not met'}")
            for flag in flagged(rr.questions):
                print(f"  review question {flag.position}: {flag.reason}")
            suffix = f"-{unit.code}" if len(units) > 1 else ""
            if args.xlsx:
                path = Path(args.xlsx)
                path = path.with_name(f"{path.stem}{suffix}{path.suffix}")
                path.write_bytes(build_workbook(data))
                print(f"  workbook written to {path}")
            if args.png:
                path = Path(args.png)
                path = path.with_name(f"{path.stem}{suffix}{path.suffix}")
                path.write_bytes(rate_chart_png(rr.units or [t], rr.target,
                                                title=f"Tỷ lệ hoàn thành {rnd.document.code}", subtitle=unit.name))
                print(f"  chart written to {path}")
    return 0


def register(tree: CommandTree) -> None:
    rounds = tree.group("rounds", "study rounds")
    p = tree.leaf(rounds, "open", "open a study round of a document for units and everything below them", "rounds open")
    p.add_argument("document_id", metavar="DOCUMENT_ID")
    p.add_argument("--units", required=True, metavar="CODE[,CODE...]", help="audience units")
    p.add_argument("--opens", required=True, metavar='"YYYY-MM-DD HH:MM"', help="local opening time")
    p.add_argument("--closes", required=True, metavar='"YYYY-MM-DD HH:MM"', help="local closing time")
    p.add_argument("--target", type=float, default=98.0, help="target participation rate in percent (default 98)")
    tree.leaf(rounds, "list", "list study rounds with status and audience size", "rounds list")
    p = tree.leaf(rounds, "extend", "move a study round's deadline later (waiting messages name the new one)",
                  "rounds extend")
    p.add_argument("round_id", type=id_arg, metavar="ROUND_ID")
    p.add_argument("--closes", required=True, metavar='"YYYY-MM-DD HH:MM"', help="the new local closing time")
    p = tree.leaf(rounds, "close", "close a study round now", "rounds close")
    p.add_argument("round_id", type=id_arg, metavar="ROUND_ID")

    p = tree.leaf(tree.sub, "report", "print a round's figures per unit and write the XLSX report and PNG chart", "report")
    p.add_argument("round_id", type=id_arg, metavar="ROUND_ID")
    p.add_argument("--unit", metavar="CODE", help="the unit to report on (default: the round's units)")
    p.add_argument("--xlsx", metavar="FILE", help="write the Excel workbook here")
    p.add_argument("--png", metavar="FILE", help="write the chart here")
