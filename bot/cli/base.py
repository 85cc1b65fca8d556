"""What every ``hoctap`` command shares: the handler registry, one-line errors, the database, local times."""

from __future__ import annotations

import argparse
from typing import Callable

from bot.config import Settings
from bot.storage.db import Database
from bot.timeutil import PLAUSIBLE_YEARS, parse_local

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


def local_time(text: str, settings: Settings, option: str, *, end_of_day: bool = False):
    """A local date and time typed for ``option``; a bad one is a one-line usage error."""
    try:
        when = parse_local(text, settings.tz, end_of_day=end_of_day)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if when.astimezone(settings.tz).year not in PLAUSIBLE_YEARS:  # as the console refuses: 9999 is a slip
        raise UsageError(f"{option}: {text.strip()!r}: the year must be from {PLAUSIBLE_YEARS[0]} "
                         f"to {PLAUSIBLE_YEARS[-1]}")
    return when


def id_arg(text: str) -> int:
    """An id typed on the command line: ASCII digits within the database's range (``parse_id``)."""
    from bot.domain.ids import parse_id

    value = parse_id(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a number such as 12, got {text[:40]!r}")
    return value


class CommandTree:
    """The parser being built: command groups, leaves, and the list of commands shown under ``--help``."""

    def __init__(self, sub, common: argparse.ArgumentParser):
        self.sub = sub
        self.common = common
        self.listing: list[tuple[str, str]] = []

    def group(self, name: str, help_text: str):
        p = self.sub.add_parser(name, help=help_text, description=help_text, parents=[self.common])
        return p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def leaf(self, parent, name: str, help_text: str, key: str):
        p = parent.add_parser(name, help=help_text, description=help_text, parents=[self.common])
        p.set_defaults(handler=key)
        self.listing.append((key, help_text))
        return p
