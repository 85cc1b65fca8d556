"""Console access: one-time login links from the chat, sessions, the audit log and login rate limits.

Tokens are random (256 bits) and only their SHA-256 is stored, so a copy of the database opens
nothing. A link works once within ``LINK_TTL``; a session ends after ``SESSION_IDLE`` without use.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.domain.permissions import DENIED_MEMBER_ONLY, PermissionDenied, sees_units
from bot.storage.models import ConsoleAudit, ConsoleLogin, ConsoleSession, Member

LINK_TTL = timedelta(minutes=5)
SESSION_IDLE = timedelta(hours=8)
TOUCH_EVERY = timedelta(minutes=5)  # a page marks its session as used at most this often (a write of its own)
REFUSALS_WINDOW = timedelta(minutes=10)
MAX_REFUSALS = 10  # refused logins from one address within the window before it must wait
LOGIN_PATH = "/quantri/vao/"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def issue_login(s: Session, member: Member | None, now: datetime) -> str:
    """A fresh login token for a secretary, cadre or admin; ``PermissionDenied`` for anyone else."""
    if not sees_units(member):
        raise PermissionDenied(DENIED_MEMBER_ONLY)
    token = secrets.token_urlsafe(32)
    s.add(ConsoleLogin(token_hash=_hash(token), member_id=member.id, created_at=now, expires_at=now + LINK_TTL))
    s.flush()
    return token


def login_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{LOGIN_PATH}{token}"


@dataclass
class OpenedSession:
    token: str  # the cookie's value
    member: Member


def redeem_login(s: Session, token: str, now: datetime, source: str = "", *,
                 record_refusal: bool = True) -> OpenedSession | None:
    """Use a login token once: a new session, or None (unknown, used, expired, or no longer allowed).
    The token is spent by one conditional UPDATE, so two simultaneous uses cannot both succeed.
    A refusal goes to the audit log unless ``record_refusal`` is False (an address already on hold)."""
    login = s.scalar(select(ConsoleLogin).where(ConsoleLogin.token_hash == _hash(token)))
    spent = login is not None and s.execute(
        update(ConsoleLogin).where(ConsoleLogin.id == login.id, ConsoleLogin.used_at.is_(None),
                                   ConsoleLogin.expires_at > now).values(used_at=now)).rowcount == 1
    member = s.get(Member, login.member_id) if spent else None
    if not spent or not sees_units(member):
        if record_refusal:
            record(s, None, "login_refused", "", now, source)
        return None
    cookie = secrets.token_urlsafe(32)
    s.add(ConsoleSession(token_hash=_hash(cookie), member_id=member.id, csrf=secrets.token_urlsafe(24),
                         created_at=now, last_seen_at=now))
    record(s, member, "login", "", now, source)
    return OpenedSession(cookie, member)


def active_session(s: Session, cookie: str | None, now: datetime) -> tuple[ConsoleSession, Member] | None:
    """The live session of a cookie (a look only: ``due_for_touch`` and ``touch_session`` mark it used); None
    when unknown, ended, idle too long, or its member may no longer see units (deactivated, demoted)."""
    if not cookie:
        return None
    row = s.scalar(select(ConsoleSession).where(ConsoleSession.token_hash == _hash(cookie)))
    if row is None or row.ended_at is not None or now - row.last_seen_at > SESSION_IDLE:
        return None
    member = s.get(Member, row.member_id)
    if not sees_units(member):
        return None
    return row, member


def due_for_touch(row: ConsoleSession, now: datetime) -> bool:
    """Whether a page should mark the session as used (and renew its cookie): not on every page, which would
    cost a write each, but often enough that 8 hours without use, give or take ``TOUCH_EVERY``, ends it."""
    return now - row.last_seen_at >= TOUCH_EVERY


def touch_session(s: Session, session_id: int, now: datetime) -> None:
    """The session was used at ``now`` (never moved back by a slower request that started earlier)."""
    s.execute(update(ConsoleSession).where(ConsoleSession.id == session_id, ConsoleSession.last_seen_at < now)
              .values(last_seen_at=now))


def end_session(s: Session, cookie: str | None, now: datetime) -> None:
    if cookie:
        s.execute(update(ConsoleSession).where(ConsoleSession.token_hash == _hash(cookie)).values(ended_at=now))


def too_many_refusals(s: Session, source: str, now: datetime) -> bool:
    """Has ``source`` had ``MAX_REFUSALS`` refused logins within the last ``REFUSALS_WINDOW``?"""
    count = s.scalar(select(func.count()).select_from(ConsoleAudit).where(
        ConsoleAudit.action == "login_refused", ConsoleAudit.source == source[:64],
        ConsoleAudit.at > now - REFUSALS_WINDOW))
    return (count or 0) >= MAX_REFUSALS


# every action the audit log records, as the Nhật ký page names it: a detail such as "đợt 2: …" follows
ACTIONS = {
    "login": "vào", "login_refused": "vào bị từ chối", "upload": "nạp văn bản", "open_round": "mở",
    "close_round": "kết thúc", "extend_round": "gia hạn", "remind": "nhắc nhở", "report": "tải báo cáo",
    "invite": "tải thư mời", "deactivate": "ngừng sinh hoạt", "reactivate": "cho sinh hoạt lại",
    "relink": "cấp mã liên kết mới", "import_units": "nạp danh sách đơn vị",
    "import_members": "nạp danh sách đảng viên", "zalo_oa_authorize": "kết nối Zalo OA",
}


def record(s: Session, member: Member | None, action: str, detail: str, now: datetime, source: str = "") -> None:
    """One line of the audit log."""
    record_by_id(s, member.id if member else None, action, detail, now, source)


def record_by_id(s: Session, member_id: int | None, action: str, detail: str, now: datetime,
                 source: str = "") -> None:
    """``record`` with the member's id: a line written after the read session that found the member."""
    if action not in ACTIONS:  # the log would show an English code word: name it in ACTIONS first
        raise ValueError(f"audit action {action!r} has no name in console_access.ACTIONS")
    s.add(ConsoleAudit(member_id=member_id, action=action, detail=detail[:2000], source=source[:64], at=now))


def audit_log(s: Session, limit: int = 200) -> list[tuple[ConsoleAudit, Member | None]]:
    rows = s.execute(select(ConsoleAudit, Member).outerjoin(Member, Member.id == ConsoleAudit.member_id)
                     .order_by(ConsoleAudit.at.desc(), ConsoleAudit.id.desc()).limit(limit)).all()
    return [(a, m) for a, m in rows]
