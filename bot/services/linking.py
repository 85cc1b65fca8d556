"""Link a chat account to a member: by single-use invite code or by the member's own phone number."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bot.domain.phones import normalize_phone
from bot.storage.models import ChatAccount, LinkCode, Member

# Deep-link payloads allow A-Z a-z 0-9 _ - up to 64 characters; 128 random bits is unguessable.
CODE_BYTES = 16


@dataclass
class LinkResult:
    status: str  # linked | already | unknown | used | member_taken | account_taken | inactive
    member: Member | None = None


def account_member(session: Session, channel: str, external_id: str) -> Member | None:
    """The active member behind a chat account, or None (unknown users see nothing)."""
    member = session.scalar(
        select(Member).join(ChatAccount, ChatAccount.member_id == Member.id)
        .where(ChatAccount.channel == channel, ChatAccount.external_id == external_id)
    )
    return member if member is not None and member.active else None


def create_invites(session: Session, members: list[Member], now: datetime) -> dict[int, str]:
    """A fresh code per member; codes handed out earlier and not used stop working."""
    ids = [m.id for m in members]
    if ids:
        session.execute(delete(LinkCode).where(LinkCode.member_id.in_(ids), LinkCode.used_at.is_(None)))
    codes = {m.id: secrets.token_urlsafe(CODE_BYTES) for m in members}
    session.add_all(LinkCode(code=c, member_id=mid, created_at=now) for mid, c in codes.items())
    session.flush()
    return codes


def link_by_code(session: Session, channel: str, external_id: str, code: str, now: datetime) -> LinkResult:
    link = session.get(LinkCode, code.strip()) if code.strip() else None
    if link is None:
        return LinkResult("unknown")
    member = session.get(Member, link.member_id)
    if link.used_at is not None:
        current = account_member(session, channel, external_id)
        return LinkResult("already" if current is not None and current.id == member.id else "used", member)
    result = _link(session, channel, external_id, member, now)
    if result.status == "linked":
        link.used_at = now
    return result


def link_by_phone(session: Session, channel: str, external_id: str, phone: str, now: datetime) -> LinkResult:
    normalized = normalize_phone(phone)
    member = session.scalar(select(Member).where(Member.phone == normalized, Member.active)) if normalized else None
    if member is None:
        return LinkResult("unknown")
    return _link(session, channel, external_id, member, now)


def _link(session: Session, channel: str, external_id: str, member: Member, now: datetime) -> LinkResult:
    if not member.active:
        return LinkResult("inactive", member)
    account = session.scalar(
        select(ChatAccount).where(ChatAccount.channel == channel, ChatAccount.external_id == external_id)
    )
    if account is not None:
        if account.member_id == member.id:
            return LinkResult("already", member)
        return LinkResult("account_taken", session.get(Member, account.member_id))
    other = session.scalar(select(ChatAccount).where(ChatAccount.channel == channel, ChatAccount.member_id == member.id))
    if other is not None:
        return LinkResult("member_taken", member)
    session.add(ChatAccount(channel=channel, external_id=external_id, member_id=member.id, linked_at=now, last_seen_at=now))
    session.flush()
    return LinkResult("linked", member)
