"""Enqueue, claim and mark outbox rows; the same SQL on SQLite and PostgreSQL.

Enqueueing is ``INSERT ... ON CONFLICT (dedupe_key) DO NOTHING`` in the caller's transaction; a
broadcast's shared text is one ``outbox_bodies`` row its rows point at. Claims are taken one at a
time across every sender of every process (SQLite's write lock, an advisory lock on PostgreSQL), so
two senders never take the same row, nor two messages to one member at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Select, String, bindparam, cast, delete, exists, literal, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.domain.oversight_messages import CALL_LIST
from bot.domain.replies import Reply
from bot.storage.models import Attempt, ChatAccount, Lease, Member, OutboxBody, OutboxMessage, Round

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuietHours:
    """Nothing scheduled is sent between ``start`` and ``end`` local time (default 21:00–07:00)."""

    start: time = time(21, 0)
    end: time = time(7, 0)
    tz: ZoneInfo = ZoneInfo("Asia/Ho_Chi_Minh")

    def next_allowed(self, at: datetime) -> datetime:
        """``at`` itself when outside quiet hours, else the end of the quiet period."""
        local = at.astimezone(self.tz)
        t = local.timetz().replace(tzinfo=None)
        quiet = (t >= self.start or t < self.end) if self.start > self.end else (self.start <= t < self.end)
        if not quiet:
            return at
        day = local.date() if t < self.end else local.date() + timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=self.tz).astimezone(at.tzinfo)


REPLY = "reply"  # a reply to a member's own action that flood control held back: not subject to quiet hours


def reply_payload(reply: Reply) -> dict:
    payload = {"text": reply.text,
               "choices": [[{"label": c.label, "action": c.action, "typed": c.typed} for c in row]
                           for row in reply.choices]}
    if reply.link is not None:
        payload["link"] = {"url": reply.link.url, "mini_app_url": reply.link.mini_app_url}
    return payload


def store_body(session: Session, payload: dict, now: datetime) -> int:
    """The id of the ``outbox_bodies`` row holding ``payload``, written once whatever the number of
    broadcasts that use it."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    table = OutboxBody.__table__
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.connection().execute(insert(table).values(digest=digest, payload=payload, created_at=now)
                                 .on_conflict_do_nothing(index_elements=["digest"]))
    return session.connection().execute(select(table.c.id).where(table.c.digest == digest)).scalar_one()


def full_payload(own: dict, body: dict | None) -> dict:
    """A row's whole message: its own part (e.g. a study link) laid over the shared body."""
    return {**body, **own} if body is not None else own


def payloads(session: Session, ids) -> dict[int, dict]:
    """Whole messages of these outbox rows (id -> payload), bodies included."""
    rows = session.execute(select(OutboxMessage.id, OutboxMessage.payload, OutboxBody.payload)
                           .outerjoin(OutboxBody, OutboxBody.id == OutboxMessage.body_id)
                           .where(OutboxMessage.id.in_(list(ids)))).all()
    return {oid: full_payload(own, body) for oid, own, body in rows}


def payload_reply(payload: dict) -> Reply:
    from bot.domain.replies import Choice, StudyLink

    link = payload.get("link")
    return Reply(payload["text"], [[Choice(**c) for c in row] for row in payload.get("choices", [])],
                 link=StudyLink(**link) if link else None)


def enqueue(session: Session, *, dedupe_key: str, purpose: str, member_id: int, reply: Reply, now: datetime,
            not_before: datetime | None = None, expires_at: datetime | None = None, round_id: int | None = None,
            attachment: tuple[str, bytes] | None = None) -> bool:
    """Add one message unless its key is already there; True when it was added."""
    values = dict(
        dedupe_key=dedupe_key, purpose=purpose, member_id=member_id, round_id=round_id,
        payload=reply_payload(reply), status="pending", not_before=not_before or now, expires_at=expires_at,
        attempts=0, created_at=now,
        attachment_name=attachment[0] if attachment else None, attachment=attachment[1] if attachment else None,
    )
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (insert(OutboxMessage.__table__).values(**values)
            .on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(OutboxMessage.__table__.c.id))
    return session.connection().execute(stmt).first() is not None


BULK_ROWS = 400  # rows per INSERT: well under SQLite's limit of bound variables


def enqueue_many(session: Session, *, purpose: str, keyed_members: list[tuple[str, int]], reply: Reply,
                 now: datetime, not_before: datetime | None = None, expires_at: datetime | None = None,
                 round_id: int | None = None, links: dict | None = None) -> int:
    """The same message to many members (a broadcast), in multi-row INSERTs; keys already
    present are skipped. Returns how many were added. ``links``: each member's own study link
    (member id -> StudyLink), the only part stored in that member's row: the rest is one shared body."""
    if not keyed_members:
        return 0
    body_id = store_body(session, reply_payload(reply), now)

    def payload_of(mid: int) -> dict:
        if not links or mid not in links:
            return {}
        link = links[mid]
        return {"link": {"url": link.url, "mini_app_url": link.mini_app_url}}

    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = OutboxMessage.__table__
    added = 0
    for start in range(0, len(keyed_members), BULK_ROWS):
        rows = [dict(dedupe_key=key, purpose=purpose, member_id=mid, round_id=round_id, payload=payload_of(mid),
                     body_id=body_id, status="pending", not_before=not_before or now, expires_at=expires_at, attempts=0,
                     created_at=now, attachment_name=None, attachment=None)
                for key, mid in keyed_members[start:start + BULK_ROWS]]
        stmt = insert(table).values(rows).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(table.c.id)
        added += len(session.connection().execute(stmt).fetchall())
    return added


def enqueue_select(session: Session, *, purpose: str, key: str, member_ids: Select, reply: Reply, now: datetime,
                   not_before: datetime | None = None, expires_at: datetime | None = None,
                   round_id: int | None = None) -> int:
    """The same message to every member ``member_ids`` (a select of one id column) yields, keyed
    ``<key>:<member id>``, in one ``INSERT ... SELECT`` (no row is built in Python) of rows pointing
    at one shared body; keys already present are skipped. Returns how many were added."""
    body_id = store_body(session, reply_payload(reply), now)
    table = OutboxMessage.__table__
    ids = member_ids.subquery()
    member_id = ids.c[0]
    col = table.c
    rows = select(
        literal(f"{key}:", String) + cast(member_id, String), literal(purpose, String), member_id,
        literal(round_id, col.round_id.type), literal({}, col.payload.type), literal(body_id, col.body_id.type),
        literal("pending", String),
        literal(not_before or now, col.not_before.type), literal(expires_at, col.expires_at.type),
        literal(0, col.attempts.type), literal(now, col.created_at.type),
    ).order_by(member_id)
    names = ["dedupe_key", "purpose", "member_id", "round_id", "payload", "body_id", "status", "not_before",
             "expires_at", "attempts", "created_at"]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = (insert(table).from_select(names, rows).on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(table.c.id))  # psycopg reports no row count for INSERT ... SELECT
    return sum(1 for _ in session.connection().execute(stmt))


# A member told about a round (announced, reminded, nudged by their secretary) within this long is not reminded
# again: a reminder caught up after downtime and the day's own, a secretary's /nhacnho and the scheduler's, or an
# announcement and a reminder slot that passed before the round was opened never reach a member together.
REMINDED_RECENTLY = timedelta(hours=20)
ROUND_NEWS = ("announce", "remind", "nudge")


TOLD = ("pending", "claimed", "sending", "sent", "uncertain")  # not failed, dropped or expired: those told nobody


def told_recently(round_id: int, now: datetime, member_id):
    """Whether the member ``member_id`` (a column, or a value) had an announcement, reminder or nudge of this
    round queued within ``REMINDED_RECENTLY`` before ``now``, sent or still waiting (e.g. for the morning): an
    EXISTS per member, which the outbox's (member, round) index answers without reading the whole outbox."""
    return exists().where(
        OutboxMessage.member_id == member_id, OutboxMessage.round_id == round_id,
        OutboxMessage.purpose.in_(ROUND_NEWS), OutboxMessage.status.in_(TOLD),
        OutboxMessage.created_at > now - REMINDED_RECENTLY)


def reachable(session: Session, member_ids: list[int]) -> set[int]:
    """Members with at least one linked chat account (the others cannot be written to)."""
    if not member_ids:
        return set()
    return set(session.scalars(select(ChatAccount.member_id).where(ChatAccount.member_id.in_(member_ids))))


CLAIMED_COLUMNS = ("id", "purpose", "member_id", "round_id", "payload", "body_id", "attachment_name", "attachment",
                   "expires_at", "attempts", "not_before", "channel", "parts_sent")
CLAIM_LOCK = "outbox-claim"


def claim(session: Session, worker: str, now: datetime, limit: int,
          purposes: tuple[str, ...] | None = None, per_chat_interval: float = 0.0,
          stamp: datetime | None = None) -> list:
    """Take up to ``limit`` due rows for this worker (only of ``purposes``, when given), oldest first,
    at most one per member, and none of a member who has a message claimed or in flight anywhere, or
    who another sender wrote to less than ``per_chat_interval`` seconds ago (that sender's own
    pacing covers its next message): a member's messages go one at a time, in order, paced, however
    many senders share the queue.

    Claims are serialised across processes (SQLite's write lock; a transaction-scoped advisory lock
    on PostgreSQL) so that each sees the others' claims; the ``status`` test in the ``UPDATE`` keeps
    two senders from ever taking one row. Rows come back as plain rows (attribute access), not ORM
    objects: the sender only reads them.

    ``stamp`` (default ``now``) is written as ``claimed_at``: with the worker it names this claim, and every
    later status change of a row is made only while the row still holds it (``held``). A sender gives each
    of its claims a stamp of its own, so that a row put back in the queue and claimed again by the same
    sender is not also sent, or settled, by the job of the earlier claim.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    conn = session.connection()
    if postgres:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": CLAIM_LOCK})
    key = (postgres, per_chat_interval > 0, purposes is not None)
    due = _CLAIM_DUE.get(key)
    if due is None:
        due = _CLAIM_DUE[key] = _due_statement(*key)
    params = {"now": now, "limit": limit, "worker": worker, "purposes": list(purposes or ()),
              "recent": now - timedelta(seconds=per_chat_interval)}
    first_of_member: dict[int, int] = {}
    for oid, member_id in conn.execute(due, params):
        first_of_member.setdefault(member_id, oid)  # a member's later rows wait for the next claim
    if not first_of_member:
        return []
    rows = conn.execute(_CLAIM, {"ids": list(first_of_member.values()), "claim_worker": worker,
                                 "claim_at": stamp or now}).all()
    return sorted(rows, key=lambda r: (r.not_before, r.id))


def _due_statement(postgres: bool, paced: bool, by_purpose: bool) -> Select:
    """``claim``'s choice of due rows (values bound at execution), built once per shape."""
    table = OutboxMessage.__table__
    other = table.alias("other")
    busy = exists().where(other.c.member_id == table.c.member_id, other.c.status.in_(("claimed", "sending")))
    due = (select(table.c.id, table.c.member_id)
           .where(table.c.status == "pending", table.c.not_before <= bindparam("now"), ~busy))
    if paced:
        due = due.where(~exists().where(  # only sent rows have sent_at; no status test, so that the
            # database looks the member's rows up by member, not every sent row by status
            other.c.member_id == table.c.member_id, other.c.claimed_by != bindparam("worker"),
            other.c.sent_at > bindparam("recent")))
    if by_purpose:
        due = due.where(table.c.purpose.in_(bindparam("purposes", expanding=True)))
    due = due.order_by(table.c.not_before, table.c.id).limit(bindparam("limit"))
    return due.with_for_update(of=table, skip_locked=True) if postgres else due


_CLAIM_DUE: dict[tuple[bool, bool, bool], Select] = {}


def by_key_only(status):
    """``status`` in a test beside a list of ids, written so that no index on it can serve the test
    (``status || ''``): SQLite, without statistics, otherwise prefers the status index to ten or more
    primary keys and walks every row of that status (a claim of 250 rows walked all 100,000 pending)."""
    return status.concat("")


_CLAIM = (update(OutboxMessage.__table__)
          .where(OutboxMessage.__table__.c.id.in_(bindparam("ids", expanding=True)),
                 by_key_only(OutboxMessage.__table__.c.status) == "pending")
          .values(status="claimed", claimed_by=bindparam("claim_worker"), claimed_at=bindparam("claim_at"))
          .returning(*(OutboxMessage.__table__.c[name] for name in CLAIMED_COLUMNS)))


def any_due(session: Session, now: datetime, purposes: tuple[str, ...] | None = None) -> bool:
    """Whether a pending row (of ``purposes``) is due: one that a claim left for pacing or for a member's
    message still in flight elsewhere is taken a moment later."""
    due = select(OutboxMessage.id).where(OutboxMessage.status == "pending", OutboxMessage.not_before <= now)
    if purposes is not None:
        due = due.where(OutboxMessage.purpose.in_(purposes))
    return session.execute(due.limit(1)).first() is not None


def bodies(session: Session, ids) -> dict[int, dict]:
    """Shared bodies by id."""
    return dict(session.execute(select(OutboxBody.id, OutboxBody.payload).where(OutboxBody.id.in_(list(ids)))).all())


SENDER_LEASE = "sender:"  # + the worker's name: one lease row per running sender


def beat(session: Session, worker: str, now: datetime, ttl: timedelta) -> set[str]:
    """Renew this sender's lease (``sender:<worker>``, alive until ``now + ttl``) and return the
    workers of every sender alive now, this one included."""
    name = SENDER_LEASE + worker
    if not _run(session, update(Lease).where(Lease.name == name).values(holder=worker, expires_at=now + ttl)).rowcount:
        session.add(Lease(name=name, holder=worker, expires_at=now + ttl))
        session.flush()
    return set(session.scalars(select(Lease.holder).where(Lease.name.startswith(SENDER_LEASE, autoescape=True),
                                                         Lease.expires_at >= now)))


def leave(session: Session, worker: str) -> None:
    """A sender stopping: it no longer takes a share of the rate."""
    _run(session, delete(Lease).where(Lease.name == SENDER_LEASE + worker))


def release(session: Session, worker: str, items: list[tuple[int, datetime]]) -> int:
    """Put back rows this worker claimed but did not start (a sender stopping with a batch in hand), each
    (id, claim stamp) only while it is still that claim (not one made since, of the row put back meanwhile)."""
    by_stamp: dict[datetime, list[int]] = {}
    for oid, claimed_at in items:
        by_stamp.setdefault(claimed_at, []).append(oid)
    return sum(_run(session, update(OutboxMessage).where(
        OutboxMessage.id.in_(ids), OutboxMessage.claimed_by == worker, OutboxMessage.claimed_at == claimed_at,
        by_key_only(OutboxMessage.status) == "claimed")
        .values(status="pending", claimed_by=None, claimed_at=None)).rowcount for claimed_at, ids in by_stamp.items())


def _run(session: Session, stmt):
    """Core-speed UPDATE: these rows are never loaded in the session, so nothing needs syncing."""
    return session.execute(stmt.execution_options(synchronize_session=False))


def held(oid: int, claimed_at: datetime | None):
    """Row ``oid`` while it is still the claim stamped ``claimed_at`` (any claim when None)."""
    row = OutboxMessage.id == oid
    return row if claimed_at is None else row & (OutboxMessage.claimed_at == claimed_at)


def mark_sending(session: Session, oid: int, channel: str, worker: str, claimed_at: datetime | None = None) -> bool:
    """Written just before the request leaves: from here on a crash leaves the outcome unknown.

    False when the row is no longer this worker's claim ``claimed_at``: a sender that took over the lease,
    or a round's deadline that moved, put it back in the queue, and it may since have been claimed again,
    by this very sender, with new words. The caller must not send it.
    """
    result = _run(session, update(OutboxMessage)
        .where(held(oid, claimed_at), OutboxMessage.claimed_by == worker,
               OutboxMessage.status.in_(("claimed", "sending")))
        .values(status="sending", channel=channel))
    return result.rowcount == 1


_OUTBOX = OutboxMessage.__table__
# the two statements of every group of sends, built once (building them cost more than running them)
_MARK_SENDING = (update(_OUTBOX)
                 .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)), _OUTBOX.c.claimed_by == bindparam("worker"),
                        _OUTBOX.c.claimed_at == bindparam("claim_stamp"),
                        by_key_only(_OUTBOX.c.status).in_(("claimed", "sending")))
                 .values(status="sending", channel=bindparam("channel")).returning(_OUTBOX.c.id))
_MARK_SENT = (update(_OUTBOX).where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)),
                                    _OUTBOX.c.claimed_at == bindparam("claim_stamp"))
              .values(status="sent", sent_at=bindparam("at"), channel=bindparam("channel"), error=None,
                      attachment=None))


def mark_sending_many(session: Session, items: list[tuple[int, str, datetime]], worker: str
                      ) -> set[tuple[int, datetime]]:
    """``mark_sending`` for many (id, channel, claimed_at), one statement per channel and claim: the
    (id, claimed_at) still this worker's."""
    mine: set[tuple[int, datetime]] = set()
    for (channel, claimed_at), ids in _by_claim(items).items():
        mine.update((oid, claimed_at) for oid in session.connection().execute(
            _MARK_SENDING, {"ids": ids, "worker": worker, "channel": channel, "claim_stamp": claimed_at}).scalars())
    return mine


def mark_sent_many(session: Session, items: list[tuple[int, str, datetime, datetime]]) -> None:
    """``mark_sent`` for many (id, channel, sent at, claimed_at), one statement per channel and claim;
    ``sent_at`` is the latest send's time of the batch (sends of one batch are at most ``MARK_DELAY``
    apart; per-chat pacing across senders reads it, and a later time only makes it wait a little longer)."""
    for (channel, claimed_at), ids in _by_claim(items).items():
        at = max(item[2] for item in items if item[1] == channel)
        session.connection().execute(_MARK_SENT, {"ids": ids, "channel": channel, "at": at, "claim_stamp": claimed_at})


def _by_claim(items) -> dict[tuple[str, datetime], list[int]]:
    by_claim: dict[tuple[str, datetime], list[int]] = {}
    for oid, channel, *_rest, claimed_at in items:
        by_claim.setdefault((channel, claimed_at), []).append(oid)
    return by_claim


def mark_sent(session: Session, oid: int, channel: str, now: datetime, claimed_at: datetime | None = None) -> None:
    _run(session, update(OutboxMessage).where(held(oid, claimed_at))
                    .values(status="sent", sent_at=now, channel=channel, error=None,
                                attachment=None))  # a delivered report is not kept twice


def mark_failed(session: Session, oid: int, channel: str | None, reason: str,
                claimed_at: datetime | None = None) -> None:
    """A permanent refusal (blocked, chat gone, not linked): never retried, shown to secretaries."""
    _run(session, update(OutboxMessage).where(held(oid, claimed_at))
                    .values(status="failed", channel=channel, error=reason[:500]))


def deadline_moved(session: Session, round_id: int, before: datetime, after: datetime, old: str, new: str,
                   now: datetime) -> None:
    """A round's deadline moved from ``before`` to ``after``: the announcements, reminders and nudges still
    waiting stay true (the member has not finished; the round runs on) and go out naming the new deadline:
    ``old``, its old wording in their text, becomes ``new``. Each shared body is stored again with the new
    words and only the waiting rows point at it; rows already sent keep what they said. Rows a sender holds
    (``claimed``, their text already read) go back to the queue, so that they too go out reworded; a reminder
    whose text does not have the old wording (a message changed since) is dropped rather than sent wrong."""
    waiting = ((OutboxMessage.round_id == round_id) & OutboxMessage.purpose.in_(MEMBER_PURPOSES)
               & OutboxMessage.status.in_(("pending", "claimed")))
    _run(session, update(OutboxMessage).where(waiting, OutboxMessage.status == "claimed")
         .values(status="pending", claimed_by=None, claimed_at=None))  # the holder's mark_sending now fails
    _run(session, update(OutboxMessage).where(waiting, OutboxMessage.expires_at == before).values(expires_at=after))
    bodies = session.execute(select(OutboxBody.id, OutboxBody.payload).where(
        OutboxBody.id.in_(select(OutboxMessage.body_id).where(waiting).distinct().scalar_subquery()))).all()
    for body_id, payload in bodies:
        if old in payload.get("text", ""):
            reworded = store_body(session, {**payload, "text": payload["text"].replace(old, new)}, now)
            _run(session, update(OutboxMessage).where(waiting, OutboxMessage.body_id == body_id)
                 .values(body_id=reworded))
            continue
        dropped = _run(session, update(OutboxMessage).where(
            waiting, OutboxMessage.body_id == body_id, OutboxMessage.purpose.in_(DEADLINE_PURPOSES)).values(
            status="dropped", error=f"the round's deadline moved ({now:%Y-%m-%d %H:%M} UTC) and the text does "
                                    "not say the old one where expected"))
        if dropped.rowcount:
            log.warning("outbox: %d reminder(s) of round %d do not name its old deadline %r; dropped, not sent "
                        "wrong", dropped.rowcount, round_id, old)


def mark_uncertain(session: Session, oid: int, channel: str, reason: str,
                   claimed_at: datetime | None = None) -> None:
    """The request left and no answer came: perhaps delivered. Never sent again; shown to secretaries."""
    _run(session, update(OutboxMessage).where(held(oid, claimed_at))
                    .values(status="uncertain", channel=channel, error=reason[:500]))


def mark_dropped(session: Session, oid: int, reason: str, claimed_at: datetime | None = None) -> None:
    _run(session, update(OutboxMessage).where(held(oid, claimed_at)).values(status="dropped", error=reason))


def retry_later(session: Session, oid: int, at: datetime, reason: str, parts_sent: int | None = None,
                claimed_at: datetime | None = None, failed_try: bool = True) -> None:
    """Back to the queue for ``at``; ``parts_sent``: the parts of a long message delivered on the row's
    ``channel`` before the failure (the retry sends the rest); ``failed_try``: counts toward giving up
    (not for a message that only has to wait for its channel's hours)."""
    _run(session, update(OutboxMessage).where(held(oid, claimed_at)).values(
        status="pending", not_before=at, attempts=OutboxMessage.attempts + int(failed_try), error=reason[:500],
        claimed_by=None, claimed_at=None, parts_sent=parts_sent or None))


def reconcile(session: Session, now: datetime, alive: set[str]) -> tuple[int, int]:
    """Settle rows left behind by senders that died (those not in ``alive``, see ``beat``);
    returns (requeued, uncertain).

    ``claimed`` rows were never handed to the platform: they go back to ``pending`` (nothing lost).
    ``sending`` rows were in flight: the platform may or may not have delivered them, and sending
    again could deliver twice, so they become ``uncertain``: never sent again, and shown to
    secretaries (``delivery_flags``) so that they check with the member. The window is one
    request: the sender writes ``sending`` right before each request and ``sent`` right after.
    """
    dead = OutboxMessage.claimed_by.not_in(alive) if alive else OutboxMessage.claimed_by.is_not(None)
    requeued = _run(session, update(OutboxMessage).where(OutboxMessage.status == "claimed", dead)
        .values(status="pending", claimed_by=None, claimed_at=None)
    ).rowcount
    uncertain = _run(session, update(OutboxMessage).where(OutboxMessage.status == "sending", dead)
        .values(status="uncertain", error=f"the sender stopped during the request (found {now:%Y-%m-%d %H:%M} UTC)")
    ).rowcount
    return requeued, uncertain


def _no_longer_true_statements():
    """What ``no_longer_true`` asks of a claim's members and rounds, built once (a claim of 250 rows spent a
    third of its time building them)."""
    m, r, a = Member.__table__.c, Round.__table__.c, Attempt.__table__.c
    members, rounds = bindparam("members", expanding=True), bindparam("rounds", expanding=True)
    return (select(m.id, m.active).where(m.id.in_(members), ~m.active | m.exempt),
            select(r.id, r.closed_at.is_not(None), r.closes_at).where(r.id.in_(rounds)),
            select(a.round_id, a.member_id).where(a.round_id.in_(rounds), a.member_id.in_(members),
                                                  a.submitted_at.is_not(None)))


_INACTIVE, _ROUNDS, _FINISHED = _no_longer_true_statements()
DEADLINE_PURPOSES = ("remind", "nudge")  # their text says the deadline, and their time depends on it


def no_longer_true(session: Session, rows: list[OutboxMessage], now: datetime) -> dict[int, str]:
    """Rows whose message has become wrong while it waited (e.g. for the morning): a reminder to a
    member who has finished since or naming a deadline that has moved, anything about a round closed
    early, anything to a member who was deactivated, a round's news to one exempted since. Three statements for the whole batch (and two for held-back quiz replies)."""
    if not rows:
        return {}
    member_ids = list({r.member_id for r in rows})
    round_ids = list({r.round_id for r in rows if r.round_id is not None})
    conn = session.connection()
    left = dict(conn.execute(_INACTIVE, {"members": member_ids}).all())  # member -> still active (then exempt)
    inactive = {mid for mid, active in left.items() if not active}
    rounds = {rid: (closed, closes) for rid, closed, closes in conn.execute(_ROUNDS, {"rounds": round_ids})} \
        if round_ids else {}
    closed = {rid for rid, (is_closed, _closes) in rounds.items() if is_closed}
    finished = set(map(tuple, conn.execute(_FINISHED, {"rounds": round_ids, "members": member_ids}))) \
        if round_ids else set()
    stale = _questions_moved_on(session, rows)
    for r in rows:
        if r.id in stale:
            continue
        if r.member_id in inactive:
            stale[r.id] = "the member was deactivated"
        elif r.member_id in left and r.purpose in ROUND_NEWS:
            stale[r.id] = "the member was exempted (miễn sinh hoạt) since"
        elif r.round_id in closed and r.purpose != "closing":
            stale[r.id] = "the round was closed"
        elif r.purpose in ("remind", "nudge") and (r.round_id, r.member_id) in finished:
            stale[r.id] = "the member has finished since"
        elif r.purpose in DEADLINE_PURPOSES and r.expires_at is not None and r.round_id in rounds \
                and r.expires_at != rounds[r.round_id][1]:
            stale[r.id] = "the round's deadline moved since (the next reminder says the new one)"
    return stale


def _questions_moved_on(session: Session, rows: list[OutboxMessage]) -> dict[int, str]:
    """Held-back replies showing a quiz question that was answered since, or can no longer be."""
    from bot.domain.messages import question_of
    from bot.storage.models import Answer

    shows = {r.id: q for r in rows if r.purpose == REPLY and (q := question_of(payload_reply(r.payload).choices))}
    if not shows:
        return {}
    attempt_ids = {a for a, _ in shows.values()}
    answered = set(session.execute(select(Answer.attempt_id, Answer.position).where(Answer.attempt_id.in_(attempt_ids))))
    over = set(session.scalars(
        select(Attempt.id).join(Round, Round.id == Attempt.round_id)
        .where(Attempt.id.in_(attempt_ids), Attempt.submitted_at.is_not(None) | Round.closed_at.is_not(None))))
    return {oid: "the question was answered since" for oid, (aid, pos) in shows.items()
            if (aid, pos) in answered or aid in over}


MEMBER_PURPOSES = ("announce", "remind", "nudge")  # what a member is told about a round


def delivery_flags(session: Session, round_id: int, member_ids: list[int]) -> dict[int, list[str]]:
    """What went wrong delivering a round's messages to each of these members, as flags:

    - ``refused``: a message was refused for good (blocked, chat gone, not linked);
    - ``unreachable``: no rung of the Zalo OA's ladder could reach the member (the call list);
      either is cleared by a later reminder or announcement that reached them (they unblocked, followed again);
    - ``uncertain``: the latest reminder or announcement that settled was in flight when its
      sender stopped, so the member may not have it (a later one that surely arrived clears it).
    Members with nothing wrong are absent. One statement.
    """
    if not member_ids:
        return {}
    rows = session.execute(
        select(OutboxMessage.member_id, OutboxMessage.status, OutboxMessage.purpose, OutboxMessage.error)
        .where(OutboxMessage.round_id == round_id, OutboxMessage.member_id.in_(member_ids),
               OutboxMessage.status.in_(("failed", "sent", "uncertain")))
        .order_by(OutboxMessage.id)
    ).all()
    refused: dict[int, str] = {}
    latest: dict[int, str] = {}
    for mid, status, purpose, error in rows:
        if status == "failed":
            refused[mid] = "unreachable" if CALL_LIST in (error or "") else "refused"
        elif purpose in MEMBER_PURPOSES:
            latest[mid] = status
            if status == "sent":
                refused.pop(mid, None)
    flags: dict[int, list[str]] = {}
    for mid in member_ids:
        found = ([refused[mid]] if mid in refused else []) + (["uncertain"] if latest.get(mid) == "uncertain" else [])
        if found:
            flags[mid] = found
    return flags
