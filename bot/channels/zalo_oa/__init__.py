"""Zalo Official Account channel: a province's (or commune's) OA serves all its members, with buttons,
within Zalo's windows and prices (``shared/specs/zalo-oa-api/README.md``).

One module per job: ``tokens`` (OAuth v4 with PKCE, refresh under a database lock), ``client`` (the
OA API over httpx), ``rendering`` (replies as text plus ``oa.query.hide`` buttons), ``channel`` (the
conversation), ``webhook`` (signed events), ``ladder`` (windows, rungs, the monthly budget),
``transport`` (outbox delivery by the ladder) and ``runtime`` (one process's wiring).
"""

from bot.channels.zalo_oa.channel import OAChannel
from bot.channels.zalo_oa.client import OAClient
from bot.channels.zalo_oa.ladder import CALL_LIST, Budgets, OABudget, Prices, record_interaction
from bot.channels.zalo_oa.rendering import TRAITS, OAMessage, render
from bot.channels.zalo_oa.runtime import BackgroundOA, OARuntime, prices_from, token_store
from bot.channels.zalo_oa.tokens import AuthorisationLost, OAError, TokenStore
from bot.channels.zalo_oa.transport import OATransport
from bot.channels.zalo_oa.webhook import PATH as WEBHOOK_PATH

__all__ = [
    "CALL_LIST", "TRAITS", "WEBHOOK_PATH",
    "AuthorisationLost", "BackgroundOA", "Budgets", "OABudget", "OAChannel", "OAClient", "OAError", "OAMessage",
    "OARuntime", "OATransport", "Prices", "TokenStore",
    "prices_from", "record_interaction", "render", "token_store",
]
