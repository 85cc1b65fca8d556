"""``hoctap playground``: chat with the bot in this terminal, no messenger needed."""

from __future__ import annotations

from pathlib import Path

from bot.cli.base import CommandTree, UsageError, command, local_time
from bot.config import Settings


@command("playground")
def cmd_playground(args, settings: Settings) -> int:
    from bot.app import run_playground

    if args.script and not Path(args.script).exists():
        raise UsageError(f"--script: {args.script} not found")
    at = local_time(args.at, settings, "--at") if args.at else None
    return run_playground(settings, as_member=args.member, script=args.script, channel=args.channel, at=at,
                          web=args.web)


def register(tree: CommandTree) -> None:
    p = tree.leaf(tree.sub, "playground", "chat with the bot in this terminal as a member of the roster", "playground")
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
