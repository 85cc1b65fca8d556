"""The OA's OAuth v4 tokens, kept in the database: ``TokenStore`` builds the permission URL (PKCE, the
verifier stored in the row), completes the admin's callback, hands out a valid access token and refreshes
it before it expires.

Zalo's refresh token is single-use: two processes refreshing at once would spend it twice and lose the
pair. So a refresh locks the one ``zalo_oa_auth`` row (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite
every transaction here starts with ``BEGIN IMMEDIATE``, see ``bot/storage/db.py``), re-reads it, and only
calls Zalo when no other process has refreshed meanwhile; the new pair is stored in the same transaction.
A refused refresh means the authorisation is lost: it is recorded, logged as an error and sent to the
admins through the outbox (on their other messengers), and not retried until an admin authorises again.
Tokens never reach a log line or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.domain.replies import Reply
from bot.outbox import queue
from bot.storage.db import Database
from bot.storage.models import ChatAccount, Member, ZaloOaAuth
from bot.storage.token_key import TokenKeyError
from bot.timeutil import utcnow

log = logging.getLogger(__package__)
ROW = "oa"
REFRESH_MARGIN = timedelta(hours=1)  # refresh when less than this is left of the 25 h
REFRESH_LIFETIME = timedelta(days=90)
CODE_LIFETIME = timedelta(minutes=10)
LOST_ALERT = ("⚠️ Zalo OA đã mất quyền truy cập ({reason}). Tin nhắn qua Zalo OA tạm dừng. Quản trị viên cần "
              "cấp quyền lại: vào trang quản trị, mục «Zalo OA», bấm «Kết nối với Zalo» (hoặc chạy "
              "«hoctap zalo-oa authorize»).")


RATE_LIMITED = (-32,)  # Zalo's "too many requests" error: a busy endpoint, not a refusal


class OAError(Exception):
    """A refused or failed OA call: ``code`` is Zalo's ``error`` (negative), an HTTP status, or None
    when the request itself failed; ``maybe_delivered``: it left and no answer came in time."""

    def __init__(self, code: int | None, description: str, *, maybe_delivered: bool = False):
        super().__init__(f"{code if code is not None else 'network'}: {description}")
        self.code, self.description, self.maybe_delivered = code, description, maybe_delivered

    @property
    def transient(self) -> bool:
        return self.code is None or self.code == 429 or 500 <= self.code < 600 or self.code in RATE_LIMITED


class CallbackRefused(ValueError):
    """The admin's callback cannot be completed; ``kind`` says why (``no_code``, ``not_started``, ``state``,
    ``expired``, ``refused``) for a page to say it in its own words, ``str()`` says it for the CLI."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class AuthState:
    """What an admin needs to know of the authorisation (no token in it)."""

    authorised: bool
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    lost_at: datetime | None = None
    lost_reason: str | None = None


class AuthorisationLost(OAError):
    """No usable token: never authorised, or the refresh token was refused. An admin must act."""

    def __init__(self, reason: str):
        super().__init__(-216, f"Zalo OA authorisation lost: {reason}")


def pkce_challenge(verifier: str) -> str:
    """S256: base64url(sha256(verifier)) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class TokenStore:
    def __init__(self, db: Database, app_id: str, app_secret: str, oauth_url: str = "https://oauth.zaloapp.com", *,
                 clock: Callable[[], datetime] = utcnow, margin: timedelta = REFRESH_MARGIN, timeout: float = 15.0):
        self.db, self.app_id, self._secret = db, app_id, app_secret
        self.oauth_url, self.clock, self.margin, self.timeout = oauth_url.rstrip("/"), clock, margin, timeout
        self.calls = 0  # token endpoint calls made by this process

    def __repr__(self) -> str:
        return f"TokenStore(app_id={self.app_id!r})"

    # -- authorisation ----------------------------------------------------------------------------
    def permission_url(self, redirect_uri: str, now: datetime | None = None, session: Session | None = None) -> str:
        """Where an admin allows the app to act for the OA; a fresh PKCE verifier and state are kept
        (in ``session`` when given: a console page's own transaction)."""
        now = now or self.clock()
        verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
        with self._within(session) as s:
            row = self._row(s, now)
            row.code_verifier, row.state, row.requested_at, row.updated_at = verifier, state, now, now
        query = urlencode({"app_id": self.app_id, "redirect_uri": redirect_uri,
                           "code_challenge": pkce_challenge(verifier), "state": state})
        return f"{self.oauth_url}/v4/oa/permission?{query}"

    def complete(self, callback_url: str, now: datetime | None = None) -> datetime:
        """The URL Zalo redirected the admin's browser to: exchange its code for the token pair.
        Returns when the access token expires. Raises ValueError with what is wrong."""
        now = now or self.clock()
        query = {k: v[0] for k, v in parse_qs(urlsplit(callback_url.strip()).query).items()}
        code = query.get("code")
        if not code:
            raise CallbackRefused("no_code", "the URL has no 'code': paste the whole address the browser was sent to")
        with self.db.session() as s:
            row = self._locked(s)
            if row is None or not row.code_verifier:
                raise CallbackRefused("not_started",
                                      "no authorisation was started here: run 'hoctap zalo-oa authorize' first")
            if not secrets.compare_digest(query.get("state", "").encode(), (row.state or "").encode()):
                raise CallbackRefused("state", "the URL's state does not match the last 'hoctap zalo-oa authorize'")
            if row.requested_at and now - row.requested_at > CODE_LIFETIME:
                raise CallbackRefused("expired",
                                      "the code is older than 10 minutes: run 'hoctap zalo-oa authorize' again")
            answer = self._token_call({"grant_type": "authorization_code", "code": code,
                                       "code_verifier": row.code_verifier})
            if "access_token" not in answer:
                raise CallbackRefused("refused", f"Zalo refused the code: {_why(answer)}")
            self._store(row, answer, now)
            row.code_verifier = row.state = None
            row.lost_at = row.lost_reason = None
            return row.expires_at

    # -- tokens -----------------------------------------------------------------------------------
    def current(self, now: datetime | None = None) -> str:
        """A valid access token, refreshed first when it is about to expire."""
        now = now or self.clock()
        with self.db.session() as s:
            row = self._readable(s)
            usable = row is not None and row.access_token and row.lost_at is None
            if usable and row.expires_at - self.margin > now:
                return row.access_token
            stale = row.access_token if usable else None
        return self.refresh(now, stale)

    def refresh(self, now: datetime | None = None, stale: str | None = None, refused: bool = False) -> str:
        """Refresh under the row lock, unless another process already replaced ``stale`` with a token
        that is still good. Raises AuthorisationLost when Zalo refuses the refresh token. ``refused``:
        Zalo refused ``stale`` (-216), so it is no fallback while the token endpoint is busy."""
        now = now or self.clock()
        lost = None
        with self.db.session() as s:
            row = self._locked(s)
            if row is None or row.lost_at is not None or not row.refresh_token:
                raise AuthorisationLost(row.lost_reason if row is not None and row.lost_reason else "not authorised")
            if row.access_token and row.access_token != stale and row.expires_at - self.margin > now:
                return row.access_token  # another process refreshed while we waited for the lock
            try:
                answer = self._token_call({"grant_type": "refresh_token", "refresh_token": row.refresh_token})
            except OAError as exc:  # busy or unreachable: the pair is unspent, try again later
                if not refused and row.access_token and row.expires_at > now:
                    log.warning("Zalo OA: token refresh failed for now (%s); the current token is still valid "
                                "until %s", exc, row.expires_at.isoformat())
                    return row.access_token
                raise
            if "access_token" in answer:
                self._store(row, answer, now)
                log.info("Zalo OA: access token refreshed; valid until %s", row.expires_at.isoformat())
                return row.access_token
            lost = f"Zalo refused the refresh token ({_why(answer)})"
            row.lost_at, row.lost_reason, row.updated_at = now, lost, now
            row.access_token = row.refresh_token = None
            alerted = self._alert_admins(s, lost, now)
        log.error("Zalo OA: authorisation LOST: %s. Nothing more is sent through the OA until an admin runs "
                  "'hoctap zalo-oa authorize' (%d admin(s) alerted on their other messengers)", lost, alerted)
        raise AuthorisationLost(lost)

    def state(self, session: Session | None = None) -> AuthState:
        with self._within(session) as s:
            row = self._readable(s)
            if row is None:
                return AuthState(False)
            return AuthState(bool(row.access_token) and row.lost_at is None, row.expires_at,
                             row.refresh_expires_at, row.lost_at, row.lost_reason)

    def status(self, now: datetime | None = None) -> str:
        now = now or self.clock()
        state = self.state()
        if state.lost_at is not None:
            return f"Zalo OA: authorisation LOST at {state.lost_at:%Y-%m-%d %H:%M} UTC: {state.lost_reason}"
        if not state.authorised:
            return "Zalo OA: not authorised (run 'hoctap zalo-oa authorize')"
        left = state.expires_at - now
        return (f"Zalo OA: authorised; access token valid for {max(left.total_seconds(), 0) / 3600:.1f} h, "
                f"refresh token until {state.refresh_expires_at:%Y-%m-%d}")

    # -- internals --------------------------------------------------------------------------------
    @contextmanager
    def _within(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
        else:
            with self.db.session() as s:
                yield s

    def _row(self, s: Session, now: datetime) -> ZaloOaAuth:
        row = self._locked(s)
        if row is None:
            row = ZaloOaAuth(key=ROW, updated_at=now)
            s.add(row)
        return row

    @classmethod
    def _locked(cls, s: Session) -> ZaloOaAuth | None:
        """The row, locked until commit (SQLite: the transaction already holds the write lock)."""
        return cls._readable(s, lock=True)

    @staticmethod
    def _readable(s: Session, lock: bool = False) -> ZaloOaAuth | None:
        """The row (locked with ``lock``). Tokens sealed with another key than this process's (the token key or
        the web secret changed, or was lost) cannot be read: the authorisation is then lost, recorded so, and
        an admin authorises again, as after a refused refresh token."""
        query = select(ZaloOaAuth).where(ZaloOaAuth.key == ROW).execution_options(populate_existing=True)
        query = query.with_for_update() if lock else query
        try:
            return s.scalar(query)
        except TokenKeyError as exc:
            now = utcnow()
            s.execute(update(ZaloOaAuth).where(ZaloOaAuth.key == ROW).values(
                access_token=None, refresh_token=None, lost_at=now, updated_at=now,
                lost_reason="the stored tokens cannot be read with this process's key"))
            log.error("Zalo OA: %s; nothing is sent through the OA until an admin authorises it again", exc)
            return s.scalar(query)

    def _token_call(self, fields: dict[str, str]) -> dict:
        self.calls += 1
        try:
            r = httpx.post(f"{self.oauth_url}/v4/oa/access_token", data={"app_id": self.app_id, **fields},
                           headers={"secret_key": self._secret}, timeout=self.timeout)
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:  # transient: nothing was spent, try again later
            raise OAError(None, f"token endpoint unreachable: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            body = {}
        busy = r.status_code in (408, 429) or body.get("error") in RATE_LIMITED
        if r.status_code >= 500 or busy or ("access_token" not in body and not body.get("error")):
            # throttled, failed or an answer that is neither a token nor a refusal: not a refused token
            code = 429 if busy else r.status_code if r.status_code >= 500 else None
            raise OAError(code, f"token endpoint failed ({_why(body)})")
        return body

    @staticmethod
    def _store(row: ZaloOaAuth, answer: dict, now: datetime) -> None:
        try:
            seconds = int(answer.get("expires_in") or 90000)  # a string on Zalo ("90000")
        except (TypeError, ValueError):
            seconds = 90000
        row.access_token, row.refresh_token = answer["access_token"], answer.get("refresh_token") or row.refresh_token
        row.expires_at = now + timedelta(seconds=seconds)
        row.refresh_expires_at, row.updated_at = now + REFRESH_LIFETIME, now

    @staticmethod
    def _alert_admins(s: Session, reason: str, now: datetime) -> int:
        # on a messenger other than the OA (which has just been lost): an admin linked nowhere cannot be told here
        admins = list(s.scalars(select(Member.id).where(Member.role == "admin", Member.active).where(
            select(ChatAccount.id).where(ChatAccount.member_id == Member.id, ChatAccount.channel != "zalo_oa")
            .exists())))
        reply = Reply(LOST_ALERT.format(reason=reason))
        stamp = now.strftime("%Y%m%d%H%M")
        return queue.enqueue_many(s, purpose="alert", keyed_members=[(f"oa-lost:{stamp}:{m}", m) for m in admins],
                                  reply=reply, now=now)


def _why(answer: dict) -> str:
    return str(answer.get("error_description") or answer.get("message") or answer.get("error") or "no reason given")
