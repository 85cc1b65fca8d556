"""Signed, expiring, revocable links into the study pages: the way in without a password.

A token is ``<link id>.<expiry>.<signature>``: the link id names a ``web_links`` row (never a member
id), the expiry is a Unix time (the link's lifetime when it was minted), and the signature is
HMAC-SHA256 over both with the server's secret (``HOCTAP_WEB_SECRET``). A token is good while its
signature checks, its row has not expired (the row decides: an extended round moves it on, a round
closed early ends it), its round (if any) was not closed early, it is not revoked, and its member is
active. The chat mints one per member when it offers the page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.domain.replies import StudyLink
from bot.storage.models import Member, Round, WebLink

DEFAULT_LIFETIME = timedelta(days=14)  # a link without a round to close with


def _mac(secret: bytes, message: str) -> str:
    digest = hmac.new(secret, message.encode("ascii"), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def sign(secret: bytes, link_id: str, expires_at: datetime) -> str:
    body = f"{link_id}.{int(expires_at.timestamp())}"
    return f"{body}.{_mac(secret, body)}"


def unsign(secret: bytes, token: str) -> tuple[str, datetime] | None:
    """(link id, expiry) when the signature is right; None for anything forged or malformed."""
    parts = token.split(".") if isinstance(token, str) and len(token) < 200 and token.isascii() else []
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_mac(secret, body), parts[2]):
        return None
    return parts[0], datetime.fromtimestamp(int(parts[1]), timezone.utc)


def form_token(secret: bytes, link_id: str) -> str:
    """The CSRF token of a session's forms (bound to its link)."""
    return _mac(secret, f"form:{link_id}")


@dataclass
class LinkCheck:
    status: str  # ok | forged | expired | revoked | inactive
    link: WebLink | None = None
    member: Member | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def mint(session: Session, secret: bytes, member_id: int, now: datetime, *, round_id: int | None = None,
         expires_at: datetime | None = None) -> str:
    """A new link for a member (opening on ``round_id`` when given); returns its token."""
    link = WebLink(id=secrets.token_urlsafe(12), member_id=member_id, round_id=round_id, created_at=now,
                   expires_at=expires_at or now + DEFAULT_LIFETIME)
    session.add(link)
    session.flush()
    return sign(secret, link.id, link.expires_at)


def mint_many(session: Session, secret: bytes, member_ids: list[int], now: datetime, *, round_id: int | None,
              expires_at: datetime) -> dict[int, str]:
    """One link per member in one INSERT (announcements to a whole audience)."""
    rows = [dict(id=secrets.token_urlsafe(12), member_id=m, round_id=round_id, created_at=now, expires_at=expires_at,
                 revoked_at=None) for m in member_ids]
    if rows:
        session.execute(WebLink.__table__.insert(), rows)
    return {r["member_id"]: sign(secret, r["id"], expires_at) for r in rows}


def check(session: Session, secret: bytes, token: str, now: datetime) -> LinkCheck:
    parsed = unsign(secret, token)
    if parsed is None:
        return LinkCheck("forged")
    link = session.get(WebLink, parsed[0])
    if link is None:
        return LinkCheck("forged")
    # the row says how long a link lives: it moves with an extended deadline (``extend_round``), the token's
    # copy of the first one does not
    if now >= link.expires_at or _round_closed_early(session, link, now):
        return LinkCheck("expired", link)
    if link.revoked_at is not None:
        return LinkCheck("revoked", link)
    member = session.get(Member, link.member_id)
    if member is None or not member.active:
        return LinkCheck("inactive", link)
    return LinkCheck("ok", link, member)


def _round_closed_early(session: Session, link: WebLink, now: datetime) -> bool:
    """Whether the link's round was closed early: ``close_round`` ends its links, but one minted meanwhile (a
    reminder, /hoc) kept the deadline it had read."""
    if link.round_id is None:
        return False
    closed_at = session.scalar(select(Round.closed_at).where(Round.id == link.round_id))
    return closed_at is not None and closed_at <= now


def revoke(session: Session, member_id: int, now: datetime) -> int:
    """Every live link of a member stops working (a lost phone, a forwarded link)."""
    return session.execute(update(WebLink).where(WebLink.member_id == member_id, WebLink.revoked_at.is_(None))
                           .values(revoked_at=now)).rowcount


def live_links(session: Session, member_id: int, now: datetime) -> list[WebLink]:
    return list(session.scalars(select(WebLink).where(
        WebLink.member_id == member_id, WebLink.revoked_at.is_(None), WebLink.expires_at > now)))


@dataclass(frozen=True)
class StudyLinks:
    """Mints members' study links where the chat offers the page (``web.public_url`` is set)."""

    public_url: str
    secret: bytes = field(repr=False)

    def url(self, token: str) -> str:
        return f"{self.public_url.rstrip('/')}/hoc/l/{token}"

    def link(self, token: str) -> StudyLink:
        url = self.url(token)
        return StudyLink(url, mini_app_url=f"{url}?tg=1")

    def for_member(self, session: Session, member_id: int, now: datetime, *, round_id: int | None = None,
                   expires_at: datetime | None = None) -> StudyLink:
        return self.link(mint(session, self.secret, member_id, now, round_id=round_id, expires_at=expires_at))

    def for_round(self, session: Session, member_ids: list[int], rnd, now: datetime) -> dict[int, StudyLink]:
        """Each member's own link to a round (announcements, reminders), valid until it closes."""
        tokens = mint_many(session, self.secret, member_ids, now, round_id=rnd.id, expires_at=rnd.closes_at)
        return {m: self.link(t) for m, t in tokens.items()}
