"""The ``hoctap`` command: operators' and cadres' tools on the server.

Each subcommand is a thin shell over a service call; problems print as one line each and exit 1
(bad input) or 2 (bad configuration or database), never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from sqlalchemy.exc import OperationalError

from bot.config import ConfigError, Settings, load_settings
from bot.storage.db import Database
from bot.storage.token_key import TokenKeyError, use_key as use_token_key
from bot.timeutil import fmt_datetime, parse_local, utcnow

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit 1."""


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


def open_db(settings: Settings) -> Database:
    db = Database(settings.database_url)
    db.upgrade()
    return db


# -- run -----------------------------------------------------------------------------------------
@command("run")
def cmd_run(args, settings: Settings) -> int:
    from bot.app import run

    return run(settings)


@command("playground")
def cmd_playground(args, settings: Settings) -> int:
    from bot.app import run_playground

    if args.script and not Path(args.script).exists():
        raise UsageError(f"--script: {args.script} not found")
    at = _local(args.at, settings, "--at") if args.at else None
    return run_playground(settings, as_member=args.member, script=args.script, channel=args.channel, at=at,
                          web=args.web)


@command("scheduler")
def cmd_scheduler(args, settings: Settings) -> int:
    from bot.app import run_scheduler

    return run_scheduler(settings)


@command("scheduler run-due")
def cmd_scheduler_run_due(args, settings: Settings) -> int:
    from bot.scheduling.due import run_due, schedule_from
    from bot.scheduling.reports import ReportBuilder

    at = _local(args.at, settings, "--at") if args.at else utcnow()
    db = open_db(settings)
    report = run_due(db, at, schedule_from(settings), ReportBuilder(settings))
    for job in report.jobs:
        print(job)
    for dropped in report.dropped:
        print(f"dropped: {dropped}")
    if report.skipped_unlinked:
        print(f"{report.skipped_unlinked} recipient(s) skipped: no messenger linked")
    print(f"due at {fmt_datetime(at, settings.tz)}: {report.enqueued} message(s) enqueued", file=sys.stderr)
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


@command("db upgrade")
def cmd_db_upgrade(args, settings: Settings) -> int:
    open_db(settings)
    print("database schema is up to date")
    return 0


# -- content -------------------------------------------------------------------------------------
def _content_paths(args, settings: Settings) -> list[Path]:
    return [Path(p) for p in args.paths] if args.paths else [settings.content_dir]


def _no_document_files(args, settings: Settings) -> int:
    print(f"no document files found in {', '.join(map(str, _content_paths(args, settings)))}", file=sys.stderr)
    return 1


@command("content check")
def cmd_content_check(args, settings: Settings) -> int:
    from bot.content.validate import check_paths

    result = check_paths(_content_paths(args, settings))
    for problem in result.problems:
        print(problem)
    if result.problems:
        print(f"{len(result.problems)} problem(s) found; nothing was loaded", file=sys.stderr)
        return 1
    if not result.documents:
        return _no_document_files(args, settings)
    return _print_quality(result.documents, strict=args.strict)


def _print_quality(documents, *, strict: bool) -> int:
    """Item-writing warnings (errors with --strict), then one line per document."""
    from bot.content.quality import check_quality

    reports = [check_quality(doc) for doc in documents]
    warnings = [w for r in reports for w in r.warnings]
    for w in warnings:
        print(f"{w.file}:{w.line}: {w.field}: {'' if strict else 'warning: '}{w.message}")
    for r in reports:
        print(f"{r.document.source_file}: {r.document.id}: {r.questions} questions, "
              f"{r.longest_correct} guessable by length alone")
    if warnings and strict:
        print(f"{len(warnings)} problem(s) found (--strict)", file=sys.stderr)
        return 1
    return 0


@command("content load")
def cmd_content_load(args, settings: Settings) -> int:
    from bot.content.load import code_clashes, load_document
    from bot.content.validate import check_paths

    result = check_paths(_content_paths(args, settings))
    if not result.problems and result.documents:
        db = open_db(settings)
        with db.session() as s:
            result.problems = code_clashes(s, result.documents)
    for problem in result.problems:
        print(problem)
    if result.problems:
        print(f"{len(result.problems)} problem(s) found; nothing was loaded", file=sys.stderr)
        return 1
    if not result.documents:
        return _no_document_files(args, settings)
    now = utcnow()
    with db.session() as s:
        reports = [load_document(s, doc, now) for doc in result.documents]
    for r in reports:
        state = "new" if r.created else "updated"
        print(f"{r.document_id}: {state}, {r.questions_current} questions "
              f"({r.questions_added} added, {r.questions_retired} retired)")
    return 0


@command("content import")
def cmd_content_import(args, settings: Settings) -> int:
    from bot.content.authoring import SourceProblems, kind_slug, read_summary, write_document
    from bot.content.moodle import looks_like_gift, read_aiken, read_gift, read_text_file
    from bot.content.workbook import read_workbook

    source = Path(args.file)
    if not source.exists():
        raise UsageError(f"{source} not found")
    fmt = args.format or ("xlsx" if source.suffix.lower() in (".xlsx", ".xlsm") else
                          "gift" if source.suffix.lower() == ".gift" else None)
    if fmt is None:
        lines, _ = read_text_file(source)
        fmt = "gift" if looks_like_gift(lines) else "aiken"
    draft = {"xlsx": read_workbook, "gift": read_gift, "aiken": read_aiken}[fmt](source)
    try:
        if args.summary:
            draft.meta["summary"] = read_summary(Path(args.summary))
        for option, key in (("code", "code"), ("title", "title"), ("kind", "kind"), ("issued_by", "issued_by"),
                            ("issued_on", "issued_on"), ("note", "note")):
            value = getattr(args, option)
            if value:
                draft.meta[key] = kind_slug(value) if key == "kind" else value.strip()
        path = write_document(settings.content_dir, args.id, draft, force=args.force)
    except SourceProblems as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) found; nothing was written", file=sys.stderr)
        return 1
    print(f"{path}: {len(draft.questions)} questions from {source.name} ({fmt})")
    from bot.content.validate import check_file

    _doc, problems = check_file(path)
    for problem in problems:
        print(f"to fill in: {problem}")
    if problems:
        print(f"fill in the fields above, then run 'hoctap content check {path}'", file=sys.stderr)
    return 0


@command("content template")
def cmd_content_template(args, settings: Settings) -> int:
    from bot.content.workbook import template_bytes

    out = Path(args.out)
    out.write_bytes(template_bytes())
    print(f"template written to {out}: fill the sheet 'Câu hỏi' (and 'Văn bản'), then 'hoctap content import "
          f"{out.name} --id ID'")
    return 0


@command("content export")
def cmd_content_export(args, settings: Settings) -> int:
    from bot.content.authoring import draft_from_document
    from bot.content.validate import check_paths
    from bot.content.workbook import workbook_bytes

    result = check_paths([settings.content_dir])
    doc = next((d for d in result.documents if d.id == args.document_id), None)
    if doc is None:
        known = ", ".join(d.id for d in result.documents) or "none"
        raise UsageError(f"no checked document '{args.document_id}' in {settings.content_dir} (found: {known}); "
                         "run 'hoctap content check'")
    out = Path(args.xlsx)
    out.write_bytes(workbook_bytes(draft_from_document(doc)))
    print(f"{doc.id}: {len(doc.questions)} questions written to {out}; edit it and run "
          f"'hoctap content import {out.name} --id {doc.id} --force'")
    return 0


# -- roster --------------------------------------------------------------------------------------
def _print_import(result, what: str) -> int:
    if not result.ok:
        for line in result.problems:
            print(line)
        print(f"{len(result.problems)} problem(s) found; no {what} were imported", file=sys.stderr)
        return 1
    parts = [f"{result.created} created", f"{result.updated} updated", f"{result.unchanged} unchanged"]
    if result.reactivated:
        parts.append(f"{result.reactivated} reactivated")
    if result.deactivated:
        parts.append(f"{result.deactivated} deactivated")
    print(f"{what}: " + ", ".join(parts))
    return 0


@command("units import")
def cmd_units_import(args, settings: Settings) -> int:
    from bot.roster.importer import import_units

    db = open_db(settings)
    with db.session() as s:
        result = import_units(s, Path(args.file))
        if not result.ok:
            s.rollback()
    return _print_import(result, "units")


@command("units list")
def cmd_units_list(args, settings: Settings) -> int:
    from bot.services.roster import unit_tree

    db = open_db(settings)
    with db.read_session() as s:
        for depth, unit, members in unit_tree(s):
            print(f"{'  ' * depth}{unit.code}  {unit.name}  ({members} active members)")
    return 0


@command("members import")
def cmd_members_import(args, settings: Settings) -> int:
    from bot.roster.importer import import_members

    db = open_db(settings)
    with db.session() as s:
        result = import_members(s, Path(args.file), full=args.full, default_language=settings.language)
        if not result.ok:
            s.rollback()
    return _print_import(result, "members")


@command("members list")
def cmd_members_list(args, settings: Settings) -> int:
    from bot.services.roster import RosterError, list_members

    db = open_db(settings)
    with db.session() as s:
        try:
            members = list_members(s, args.unit, include_inactive=args.all)
        except RosterError as exc:
            raise UsageError(str(exc)) from None
        for m in members:
            state = ("" if m.active else "  (inactive)") + ("  (exempt)" if m.exempt else "")
            print(f"{m.code}\t{m.full_name}\t{m.unit.code}\t{m.phone or '-'}\t{m.role}{state}")
        print(f"{len(members)} member(s)", file=sys.stderr)
    return 0


@contextmanager
def _new_invites(settings: Settings, unit_code: str | None, channel: str):
    """(members, fresh codes) of a unit and below, in an open transaction; older unused codes retire."""
    from bot.services.linking import create_invites
    from bot.services.roster import RosterError, list_members

    db = open_db(settings)
    with db.session() as s:
        try:
            members = list_members(s, unit_code)
        except RosterError as exc:
            raise UsageError(str(exc)) from None
        yield members, create_invites(s, members, utcnow(), channel=channel)


@command("members invite")
def cmd_members_invite(args, settings: Settings) -> int:
    from bot.roster.files import write_table
    from bot.services.linking import invitation_rows

    if args.channel == "zalo":
        return _zalo_invites(args, settings)
    bot_name = (args.bot or settings.telegram.bot_username or "").lstrip("@")
    if not bot_name:
        raise UsageError("the bot's username is needed for the links; pass --bot NAME or set telegram.bot_username")
    out = Path(args.out or f"invites-{args.unit or 'all'}.csv")
    with _new_invites(settings, args.unit, "telegram") as (members, codes):
        header, rows = invitation_rows(members, codes, "telegram", bot_name=bot_name)
    write_table(out, header, rows)
    print(f"{len(rows)} invitation link(s) written to {out}; earlier unused links no longer work")
    return 0


def _zalo_invites(args, settings: Settings) -> int:
    """Short typed codes (Zalo has no deep-link parameter), beside the bot's share link."""
    from sqlalchemy.orm import object_session

    from bot.roster.files import write_table
    from bot.services.linking import invitation_rows, units_bots

    default_link = args.link or settings.zalo.share_link or ""
    out = Path(args.out or f"invites-zalo-{args.unit or 'all'}.csv")
    with _new_invites(settings, args.unit, "zalo") as (members, codes):
        bots = units_bots(object_session(members[0]), {m.unit_id for m in members}) if members else {}
        header, rows = invitation_rows(members, codes, "zalo", zalo_link=default_link, unit_bots=bots)
    write_table(out, header, rows)
    for row in rows[:args.show]:
        print(f"{row[0]}\t{row[1]}\t{row[4]}")
    if len(rows) > args.show:
        print(f"... and {len(rows) - args.show} more in {out}")
    print(f"{len(rows)} Zalo code(s) written to {out}; earlier unused Zalo codes no longer work")
    link = default_link
    if link or any(row[7] for row in rows):
        print(f"members open {link or 'their unit bot'} and type their code (with or without /start)")
    else:
        print("members open the bot on Zalo and type their code; set zalo.share_link (or --link) to print the "
              "bot's link beside the codes", file=sys.stderr)
    return 0


# -- zalo-oa -------------------------------------------------------------------------------------
def _oa_tokens(settings: Settings):
    from bot.channels.zalo_oa import token_store

    oa = settings.zalo_oa
    if not oa.app_id or not oa.app_secret:
        raise UsageError("zalo_oa.app_id and ZALO_OA_APP_SECRET are needed (see README: Zalo Official Account)")
    return token_store(oa, open_db(settings))


def _oa_redirect(settings: Settings) -> str:
    public = settings.zalo_oa.public_url or settings.web_server.public_url
    if not public:
        raise UsageError("web.public_url is needed: the callback address registered for the app")
    return public.rstrip("/") + "/zalo-oa/callback"


@command("zalo-oa authorize")
def cmd_zalo_oa_authorize(args, settings: Settings) -> int:
    url = _oa_tokens(settings).permission_url(_oa_redirect(settings))
    print("Open this address as an admin of the Official Account and allow the app (valid 10 minutes):")
    print(url)
    print("Then run: hoctap zalo-oa callback 'THE-ADDRESS-THE-BROWSER-WAS-SENT-TO'")
    return 0


@command("zalo-oa callback")
def cmd_zalo_oa_callback(args, settings: Settings) -> int:
    from bot.channels.zalo_oa import OAError

    try:
        expires = _oa_tokens(settings).complete(args.url)
    except (ValueError, OAError) as exc:
        raise UsageError(str(exc)) from None
    print(f"Zalo OA authorised; the access token is renewed automatically (this one until "
          f"{fmt_datetime(expires, settings.tz)})")
    return 0


@command("zalo-oa status")
def cmd_zalo_oa_status(args, settings: Settings) -> int:
    print(_oa_tokens(settings).status())
    return 0


@command("members revoke-links")
def cmd_members_revoke_links(args, settings: Settings) -> int:
    """A lost phone or a forwarded link: every study link the member holds stops working."""
    from sqlalchemy import select

    from bot.services.web_links import revoke
    from bot.storage.models import Member

    db = open_db(settings)
    with db.session() as s:
        member = s.scalar(select(Member).where(Member.code == args.member_code))
        if member is None:
            raise UsageError(f"no member {args.member_code}; see 'hoctap members list'")
        count = revoke(s, member.id, utcnow())
    print(f"{count} study link(s) of {args.member_code} revoked; /hoc in the chat gives the member a new one")
    return 0


# -- zalo bots ----------------------------------------------------------------------------------
def _registry(settings: Settings):
    from bot.channels.zalo.registry import Registry

    return Registry(open_db(settings), api_base_url=settings.zalo.api_base_url, public_url=settings.web_server.public_url,
                    default_token=settings.zalo.token)


def _read_token() -> str:
    """The token from standard input (never an argument: arguments show in ps and shell history)."""
    if sys.stdin.isatty():
        import getpass

        token = getpass.getpass("bot token (from Bot Creator; not shown): ")
    else:
        token = sys.stdin.readline()
    if not token.strip():
        raise UsageError("no token on standard input: pipe it in, e.g. hoctap zalo bots add --unit CB01 < token.txt")
    return token.strip()


def _registry_call(work) -> tuple:
    import asyncio

    from bot.channels.zalo.registry import RegistryError

    try:
        return asyncio.run(work)
    except RegistryError as exc:
        raise UsageError(str(exc)) from None


@command("zalo bots add")
def cmd_zalo_bots_add(args, settings: Settings) -> int:
    from bot.channels.zalo.registry import MEMBER_CAP, webhook_url

    registry = _registry(settings)
    mode = "polling" if args.polling else "webhook"
    bot, warning = _registry_call(registry.add(args.unit, _read_token(), utcnow(), mode=mode, share_link=args.link))
    where = (f"receives updates at {webhook_url(settings.web_server.public_url, bot.zalo_id)}" if mode == "webhook"
             else "is polled by hoctap run")
    print(f"{args.unit}: bot {bot.name} (id {bot.zalo_id}) registered; it {where}; it serves at most {MEMBER_CAP} "
          f"members: write their codes with hoctap members invite --channel zalo --unit {args.unit}")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    _warn_unencrypted()
    return 0


def _warn_unencrypted() -> None:
    from bot.storage.token_key import has_key

    if not has_key():
        print("warning: the token is stored unencrypted: set HOCTAP_TOKEN_KEY (or HOCTAP_WEB_SECRET) to encrypt "
              "the bots' tokens in the database", file=sys.stderr)


@command("zalo bots rotate")
def cmd_zalo_bots_rotate(args, settings: Settings) -> int:
    bot, warning = _registry_call(_registry(settings).rotate(args.unit, _read_token(), utcnow()))
    print(f"{args.unit}: bot {bot.name} uses its new token and a new webhook secret; the old token is forgotten")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    _warn_unencrypted()
    return 0


@command("zalo bots remove")
def cmd_zalo_bots_remove(args, settings: Settings) -> int:
    name, unlinked = _registry_call(_registry(settings).remove(args.unit))
    print(f"{args.unit}: bot {name} removed; {unlinked} member(s) linked through it need a new Zalo code")
    return 0


@command("zalo bots list")
def cmd_zalo_bots_list(args, settings: Settings) -> int:
    from bot.channels.zalo.registry import MEMBER_CAP, overview

    quota = settings.zalo.monthly_quota or 0
    month = utcnow().astimezone(settings.tz).strftime("%Y-%m")
    with open_db(settings).session() as s:
        rows = overview(s, month)
    print("unit\tbot\tmode\tmembers\tmessages " + month)
    for code, name, mode, linked, sent in rows:
        print(f"{code}\t{name}\t{mode}\t{linked}/{MEMBER_CAP}\t{sent}/{quota or '-'}")
    print(f"{len(rows)} bot(s)", file=sys.stderr)
    return 0


# -- rounds --------------------------------------------------------------------------------------
def _local(text: str, settings: Settings, option: str, *, end_of_day: bool = False):
    try:
        return parse_local(text, settings.tz, end_of_day=end_of_day)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


@command("rounds open")
def cmd_rounds_open(args, settings: Settings) -> int:
    from bot.services.rounds import RoundError, open_round

    opens = _local(args.opens, settings, "--opens")
    closes = _local(args.closes, settings, "--closes", end_of_day=True)
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


# -- admin ---------------------------------------------------------------------------------------
@command("admin link")
def cmd_admin_link(args, settings: Settings) -> int:
    from sqlalchemy import select

    from bot.domain.permissions import PermissionDenied
    from bot.services.console_access import LINK_TTL, issue_login, login_url
    from bot.storage.models import Member

    if not settings.web_server.public_url:
        raise UsageError("web.public_url is needed: the address of the console (see README: Web console)")
    db = open_db(settings)
    with db.session() as s:
        member = s.scalar(select(Member).where(Member.code == args.code))
        if member is None:
            raise UsageError(f"no member {args.code}; see 'hoctap members list'")
        try:
            token = issue_login(s, member, utcnow())
        except PermissionDenied:
            raise UsageError(f"{args.code} is a {member.role}{'' if member.active else ' (inactive)'}: the console is "
                             "for active secretaries, cadres and admins") from None
    print(login_url(settings.web_server.public_url, token))
    print(f"single use, valid {int(LINK_TTL.total_seconds() // 60)} minutes, for {member.code} {member.full_name}",
          file=sys.stderr)
    return 0


# -- parser --------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Bad arguments print one line (``error: ...``) and exit 2, like every other refusal here."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def id_arg(text: str) -> int:
    """An id typed on the command line: ASCII digits within the database's range (``parse_id``)."""
    from bot.domain.ids import parse_id

    value = parse_id(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a number such as 12, got {text[:40]!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="settings file (default: ./config.yaml)")
    parser = _Parser(
        prog="hoctap", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="hoctap-bot: study rounds and quizzes for Party members on Telegram and Zalo.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def group(name: str, help_text: str):
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        return p.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing: list[tuple[str, str]] = []

    def leaf(parent, name: str, help_text: str, key: str):
        p = parent.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(handler=key)
        listing.append((key, help_text))
        return p

    leaf(sub, "run", "run the bot on every messenger whose token is set (Telegram, Zalo), else the local playground", "run")
    p = leaf(sub, "playground", "chat with the bot in this terminal as a member of the roster", "playground")
    p.add_argument("--member", metavar="CODE", help="member code to play (default: the first ordinary member)")
    p.add_argument("--script", metavar="FILE", help="read the inputs from FILE, one per line, and print the transcript")
    p.add_argument("--channel", choices=("telegram", "zalo", "zalo-oa"), default="telegram",
                   help="the messenger to play (default: telegram; zalo: no buttons, everything is typed; "
                        "zalo-oa: numbered buttons, no edits)")
    p.add_argument("--at", metavar='"YYYY-MM-DD HH:MM"',
                   help="show what a member, a secretary and a cadre receive from the scheduler at that local time")
    p.add_argument("--web", action="store_true",
                   help="also serve the study pages and the web console on 127.0.0.1: the member's study link is the first http:// line, then a console login link for the sample cadre")
    p.set_defaults(handler="playground")

    p = leaf(sub, "scheduler", "run the scheduler and outbox sender alone (announcements, reminders, digests)",
             "scheduler")
    sched = p.add_subparsers(dest="action", metavar="ACTION")
    p = leaf(sched, "run-due", "enqueue exactly the scheduled work due at a moment (catch-up, tests)",
             "scheduler run-due")
    p.add_argument("--at", metavar='"YYYY-MM-DD HH:MM"', help="local time (default: now)")

    p = leaf(sub, "report", "print a round's figures per unit and write the XLSX report and PNG chart", "report")
    p.add_argument("round_id", type=id_arg, metavar="ROUND_ID")
    p.add_argument("--unit", metavar="CODE", help="the unit to report on (default: the round's units)")
    p.add_argument("--xlsx", metavar="FILE", help="write the Excel workbook here")
    p.add_argument("--png", metavar="FILE", help="write the chart here")

    db = group("db", "database schema")
    leaf(db, "upgrade", "create or upgrade the database schema", "db upgrade")

    content = group("content", "document files in quizzes/")
    p = leaf(content, "check", "check document files and list every problem as FILE:LINE: FIELD", "content check")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: the content folder)")
    p.add_argument("--strict", action="store_true",
                   help="treat quiz-quality warnings (guessable answers, repeated questions) as errors")
    p = leaf(content, "load", "check document files and load them into the database", "content load")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: the content folder)")
    p = leaf(content, "import", "write quizzes/ID.yaml from an Excel question sheet, Aiken or GIFT text",
             "content import")
    p.add_argument("file", metavar="FILE", help=".xlsx (sheet 'Câu hỏi'), Aiken .txt or GIFT .gift/.txt")
    p.add_argument("--id", required=True, metavar="ID", help="the document's id, e.g. kh-64-tu-binh-phuoc")
    p.add_argument("--format", choices=("xlsx", "aiken", "gift"), help="default: from the file")
    p.add_argument("--summary", metavar="FILE", help="the summary members read, .txt or .docx")
    p.add_argument("--code", metavar="CODE", help='the document\'s number, e.g. "64-KH/TU"')
    p.add_argument("--title", metavar="TITLE")
    p.add_argument("--kind", metavar="KIND", help="ke-hoach, nghi-quyet, ... or 'Kế hoạch', 'Nghị quyết', ...")
    p.add_argument("--issued-by", metavar="BODY")
    p.add_argument("--issued-on", metavar="YYYY-MM-DD")
    p.add_argument("--note", metavar="TEXT", help="shown to members under the title")
    p.add_argument("--force", action="store_true", help="replace an existing quizzes/ID.yaml")
    p = leaf(content, "template", "write the Excel template for questions (sheets 'Câu hỏi' and 'Văn bản')",
             "content template")
    p.add_argument("out", nargs="?", default="mau-cau-hoi.xlsx", metavar="FILE",
                   help="default: mau-cau-hoi.xlsx")
    p = leaf(content, "export", "write a document's questions and metadata as the Excel sheet, to edit and re-import",
             "content export")
    p.add_argument("document_id", metavar="ID")
    p.add_argument("--xlsx", required=True, metavar="FILE")

    units = group("units", "the organisation tree")
    p = leaf(units, "import", "import units from CSV or XLSX (all-or-nothing)", "units import")
    p.add_argument("file", metavar="FILE")
    leaf(units, "list", "show the unit tree with member counts", "units list")

    members = group("members", "the member roster")
    p = leaf(members, "import", "import members from CSV or XLSX (all-or-nothing)", "members import")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--full", action="store_true", help="the file is the whole roster: deactivate members not in it")
    p = leaf(members, "list", "list members, optionally of one unit and below", "members list")
    p.add_argument("--unit", metavar="CODE", help="only this unit and the units below it")
    p.add_argument("--all", action="store_true", help="include deactivated members")
    p = leaf(members, "invite", "write per-member single-use Telegram links or Zalo codes (CSV or XLSX) for secretaries",
             "members invite")
    p.add_argument("--unit", metavar="CODE", help="only this unit and the units below it")
    p.add_argument("--out", metavar="FILE", help="output file, .csv or .xlsx (default: invites-UNIT.csv)")
    p.add_argument("--bot", metavar="USERNAME", help="the bot's username (default: telegram.bot_username)")
    p.add_argument("--channel", choices=("telegram", "zalo"), default="telegram",
                   help="telegram: deep links; zalo: short codes to type, beside the bot's share link")
    p.add_argument("--link", metavar="URL", help="the Zalo bot's share link (default: zalo.share_link)")
    p.add_argument("--show", type=int, default=20, metavar="N", help="Zalo: print the first N codes (default 20)")

    admin = group("admin", "the web console")
    p = leaf(admin, "link", "print a one-time console login link for a secretary, cadre or admin", "admin link")
    p.add_argument("code", metavar="CODE", help="the member's code, e.g. CB002")

    oa = group("zalo-oa", "the Zalo Official Account's authorisation")
    leaf(oa, "authorize", "print the address where an OA admin allows the app (PKCE)", "zalo-oa authorize")
    p = leaf(oa, "callback", "store the tokens from the address Zalo sent the admin's browser to", "zalo-oa callback")
    p.add_argument("url", metavar="URL")
    leaf(oa, "status", "is the OA authorised, and for how long", "zalo-oa status")
    p = leaf(members, "revoke-links", "make every study page link of a member stop working", "members revoke-links")
    p.add_argument("member_code", metavar="MEMBER_CODE")
    zalo = group("zalo", "the branches' own Zalo bots")
    bots = zalo.add_parser("bots", help="one Zalo bot per unit (50 members, 3,000 messages a month each)",
                           parents=[common]).add_subparsers(dest="bots_action", metavar="ACTION", required=True)
    p = leaf(bots, "add", "register a unit's Zalo bot; the token is read from standard input", "zalo bots add")
    p.add_argument("--unit", required=True, metavar="CODE")
    p.add_argument("--polling", action="store_true", help="poll instead of a webhook (a handful of bots at most)")
    p.add_argument("--link", metavar="URL", help="the bot's share link (Bot Creator), printed on invitation sheets")
    p = leaf(bots, "rotate", "give a unit's bot its new token (after reset token in Bot Creator), from standard input",
             "zalo bots rotate")
    p.add_argument("--unit", required=True, metavar="CODE")
    p = leaf(bots, "remove", "forget a unit's Zalo bot (its members need new codes)", "zalo bots remove")
    p.add_argument("--unit", required=True, metavar="CODE")
    leaf(bots, "list", "unit, bot, members linked / 50, messages this month / quota", "zalo bots list")

    rounds = group("rounds", "study rounds")
    p = leaf(rounds, "open", "open a study round of a document for units and everything below them", "rounds open")
    p.add_argument("document_id", metavar="DOCUMENT_ID")
    p.add_argument("--units", required=True, metavar="CODE[,CODE...]", help="audience units")
    p.add_argument("--opens", required=True, metavar='"YYYY-MM-DD HH:MM"', help="local opening time")
    p.add_argument("--closes", required=True, metavar='"YYYY-MM-DD HH:MM"', help="local closing time")
    p.add_argument("--target", type=float, default=98.0, help="target participation rate in percent (default 98)")
    leaf(rounds, "list", "list study rounds with status and audience size", "rounds list")
    p = leaf(rounds, "close", "close a study round now", "rounds close")
    p.add_argument("round_id", type=id_arg, metavar="ROUND_ID")
    width = max(len(k) for k, _ in listing) + 2
    parser.epilog = "commands:\n" + "\n".join(f"  hoctap {k:<{width}}{h}" for k, h in listing)
    return parser


def token_key(settings: Settings) -> str | None:
    """What the branch bots' tokens are encrypted with: ``HOCTAP_TOKEN_KEY``, else the web secret."""
    return os.environ.get("HOCTAP_TOKEN_KEY") or settings.web_server.secret


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    use_token_key(token_key(settings))
    handler = COMMANDS.get(args.handler)
    try:
        return handler(args, settings)
    except (UsageError, TokenKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else "cannot use the database"
        print(f"error: database: {first}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
