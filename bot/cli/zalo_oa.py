"""The Zalo Official Account's authorisation: the admin allows the app once, tokens renew by themselves."""

from __future__ import annotations

from bot.cli.base import CommandTree, UsageError, command, open_db
from bot.config import Settings
from bot.timeutil import fmt_datetime


def _oa_tokens(settings: Settings):
    from bot.channels.zalo_oa import token_store

    oa = settings.zalo_oa
    if not oa.app_id or not oa.app_secret:
        raise UsageError("zalo_oa.app_id and ZALO_OA_APP_SECRET are needed (see README: Zalo Official Account)")
    return token_store(oa, open_db(settings))


def _oa_redirect(settings: Settings) -> str:
    from bot.channels.zalo_oa.runtime import callback_url

    url = callback_url(settings.zalo_oa, settings.web_server.public_url)
    if not url:
        raise UsageError("web.public_url is needed: the callback address registered for the app")
    return url


@command("zalo-oa authorize")
def cmd_zalo_oa_authorize(args, settings: Settings) -> int:
    url = _oa_tokens(settings).permission_url(_oa_redirect(settings))
    print("Open this address as an admin of the Official Account and allow the app (valid 10 minutes):")
    print(url)
    print("While 'hoctap run' serves that address, the page it opens completes the authorisation. Otherwise run:")
    print("hoctap zalo-oa callback 'THE-ADDRESS-THE-BROWSER-WAS-SENT-TO'")
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


def register(tree: CommandTree) -> None:
    oa = tree.group("zalo-oa", "the Zalo Official Account's authorisation")
    tree.leaf(oa, "authorize", "print the address where an OA admin allows the app (PKCE)", "zalo-oa authorize")
    p = tree.leaf(oa, "callback", "store the tokens from the address Zalo sent the admin's browser to", "zalo-oa callback")
    p.add_argument("url", metavar="URL")
    tree.leaf(oa, "status", "is the OA authorised, and for how long", "zalo-oa status")
