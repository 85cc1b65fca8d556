"""The web console: one-time login links for secretaries, cadres and admins."""

from __future__ import annotations

import sys

from bot.cli.base import CommandTree, UsageError, command, open_db
from bot.config import Settings
from bot.timeutil import utcnow


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


def register(tree: CommandTree) -> None:
    admin = tree.group("admin", "the web console")
    p = tree.leaf(admin, "link", "print a one-time console login link for a secretary, cadre or admin", "admin link")
    p.add_argument("code", metavar="CODE", help="the member's code, e.g. CB002")
