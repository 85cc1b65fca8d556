"""The ``hoctap`` command: operators' and cadres' tools on the server.

Each subcommand is a thin shell over a service call, in the module of its group (content, members,
rounds, ...); problems print as one line each and exit 1 (bad input) or 2 (bad configuration or
database), never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from sqlalchemy.exc import OperationalError

from bot.cli import admin, content, members, playground, rounds, run, zalo, zalo_oa
from bot.cli.base import COMMANDS, CommandTree, UsageError
from bot.config import ConfigError, Settings, load_settings
from bot.storage.token_key import TokenKeyError, use_key as use_token_key

GROUPS = (run, playground, content, members, admin, zalo_oa, zalo, rounds)


class _Parser(argparse.ArgumentParser):
    """Bad arguments print one line (``error: ...``) and exit 2, like every other refusal here."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="settings file (default: ./config.yaml)")
    parser = _Parser(
        prog="hoctap", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="hoctap-bot: study rounds and quizzes for Party members on Telegram and Zalo.",
    )
    tree = CommandTree(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), common)
    for group in GROUPS:
        group.register(tree)
    width = max(len(k) for k, _ in tree.listing) + 2
    parser.epilog = "commands:\n" + "\n".join(f"  hoctap {k:<{width}}{h}" for k, h in tree.listing)
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
    except BrokenPipeError:  # `hoctap report 1 | head`: the reader took what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 0

