"""The branches' own Zalo bots: one per unit, added, rotated, removed and listed."""

from __future__ import annotations

import sys

from bot.cli.base import CommandTree, UsageError, command, open_db
from bot.config import Settings
from bot.timeutil import utcnow


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


def register(tree: CommandTree) -> None:
    zalo = tree.group("zalo", "the branches' own Zalo bots")
    bots = zalo.add_parser("bots", help="one Zalo bot per unit (50 members, 3,000 messages a month each)",
                           parents=[tree.common]).add_subparsers(dest="bots_action", metavar="ACTION", required=True)
    p = tree.leaf(bots, "add", "register a unit's Zalo bot; the token is read from standard input", "zalo bots add")
    p.add_argument("--unit", required=True, metavar="CODE")
    p.add_argument("--polling", action="store_true", help="poll instead of a webhook (a handful of bots at most)")
    p.add_argument("--link", metavar="URL", help="the bot's share link (Bot Creator), printed on invitation sheets")
    p = tree.leaf(bots, "rotate", "give a unit's bot its new token (after reset token in Bot Creator), from standard input",
                  "zalo bots rotate")
    p.add_argument("--unit", required=True, metavar="CODE")
    p = tree.leaf(bots, "remove", "forget a unit's Zalo bot (its members need new codes)", "zalo bots remove")
    p.add_argument("--unit", required=True, metavar="CODE")
    tree.leaf(bots, "list", "unit, bot, members linked / 50, messages this month / quota", "zalo bots list")
