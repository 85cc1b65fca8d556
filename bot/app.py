"""Start the product: the Telegram bot when a token is set, else the local playground."""

from __future__ import annotations

import sys

from bot.config import Settings


def run(settings: Settings) -> int:
    if not settings.telegram.token:
        return run_playground(settings)
    print("Telegram channel is not available yet", file=sys.stderr)
    return 1


def run_playground(settings: Settings, as_member: str | None = None) -> int:
    print("The playground is not available yet; see 'hoctap --help'", file=sys.stderr)
    return 1
