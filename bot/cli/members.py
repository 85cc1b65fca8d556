"""The roster: units and members, imports, listings, invitations and revoking study links."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from bot.cli.base import CommandTree, UsageError, command, open_db
from bot.config import Settings
from bot.timeutil import utcnow


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


@command("members relink")
def cmd_members_relink(args, settings: Settings) -> int:
    """A lost phone or a new account: one code that moves the member's link to the chat that uses it."""
    from sqlalchemy import select

    from bot.services.linking import format_code, relink_code
    from bot.storage.models import Member

    bot_name = (args.bot or settings.telegram.bot_username or "").lstrip("@")
    if args.channel == "telegram" and not bot_name:
        raise UsageError("the bot's username is needed for the link; pass --bot NAME or set telegram.bot_username")
    db = open_db(settings)
    with db.session() as s:
        member = s.scalar(select(Member).where(Member.code == args.member_code, Member.active))
        if member is None:
            raise UsageError(f"no active member {args.member_code}; see 'hoctap members list'")
        code = relink_code(s, member, utcnow(), args.channel)
    shown = f"https://t.me/{bot_name}?start={code}" if args.channel == "telegram" else format_code(code)
    print(shown)
    print(f"{args.member_code} opens this on the new {args.channel.capitalize()} account; once used, the old one "
          "stops receiving their messages and their study links stop working. Earlier unused "
          f"{args.channel.capitalize()} codes of the member no longer work", file=sys.stderr)
    return 0


def register(tree: CommandTree) -> None:
    units = tree.group("units", "the organisation tree")
    p = tree.leaf(units, "import", "import units from CSV or XLSX (all-or-nothing)", "units import")
    p.add_argument("file", metavar="FILE")
    tree.leaf(units, "list", "show the unit tree with member counts", "units list")

    members = tree.group("members", "the member roster")
    p = tree.leaf(members, "import", "import members from CSV or XLSX (all-or-nothing)", "members import")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--full", action="store_true", help="the file is the whole roster: deactivate members not in it")
    p = tree.leaf(members, "list", "list members, optionally of one unit and below", "members list")
    p.add_argument("--unit", metavar="CODE", help="only this unit and the units below it")
    p.add_argument("--all", action="store_true", help="include deactivated members")
    p = tree.leaf(members, "invite", "write per-member single-use Telegram links or Zalo codes (CSV or XLSX) for secretaries",
                  "members invite")
    p.add_argument("--unit", metavar="CODE", help="only this unit and the units below it")
    p.add_argument("--out", metavar="FILE", help="output file, .csv or .xlsx (default: invites-UNIT.csv)")
    p.add_argument("--bot", metavar="USERNAME", help="the bot's username (default: telegram.bot_username)")
    p.add_argument("--channel", choices=("telegram", "zalo"), default="telegram",
                   help="telegram: deep links; zalo: short codes to type, beside the bot's share link")
    p.add_argument("--link", metavar="URL", help="the Zalo bot's share link (default: zalo.share_link)")
    p.add_argument("--show", type=int, default=20, metavar="N", help="Zalo: print the first N codes (default 20)")
    p = tree.leaf(members, "relink", "one code that moves a linked member to a new phone or account", "members relink")
    p.add_argument("member_code", metavar="MEMBER_CODE")
    p.add_argument("--channel", choices=("telegram", "zalo"), default="telegram")
    p.add_argument("--bot", metavar="USERNAME", help="the bot's username (default: telegram.bot_username)")
    p = tree.leaf(members, "revoke-links", "make every study page link of a member stop working", "members revoke-links")
    p.add_argument("member_code", metavar="MEMBER_CODE")
