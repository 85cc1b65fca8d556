"""The database schema, in SQLAlchemy 2.0 typed ORM style.

Alembic migrations build exactly this (a test compares them). Times are stored as naive UTC and
returned as aware UTC, so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from bot.storage.token_key import EncryptedText

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}



class UTCDateTime(TypeDecorator):
    """Aware datetimes in, naive UTC stored, aware UTC out."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Unit(Base):
    """A node of the organisation tree of any depth (province → commune or agency committee → … → chi bộ)."""

    __tablename__ = "units"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)

    parent: Mapped[Unit | None] = relationship(remote_side=[id])


class UnitAncestor(Base):
    """Closure table: one row per (ancestor, descendant), self included, for subtree queries."""

    __tablename__ = "unit_ancestors"
    ancestor_id: Mapped[int] = mapped_column(ForeignKey("units.id", ondelete="CASCADE"), primary_key=True)
    descendant_id: Mapped[int] = mapped_column(ForeignKey("units.id", ondelete="CASCADE"), primary_key=True)
    depth: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_unit_ancestors_descendant", "descendant_id", "ancestor_id"),)


class Member(Base):
    """A person on the roster. Deactivated, never deleted: history stays."""

    __tablename__ = "members"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(255))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # miễn sinh hoạt (age, health): stays on the roster, outside every audience, rate and reminder
    exempt: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    language: Mapped[str] = mapped_column(String(16), default="vi", server_default="vi")  # a language tag

    unit: Mapped[Unit] = relationship()

    __table_args__ = (Index("ix_members_unit_active", "unit_id", "active", "exempt"),)


class ChatAccount(Base):
    """A messenger account linked to a member: one per channel per member."""

    __tablename__ = "chat_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Zalo: the branch bot (``zalo_bots``) this account talks to; None: the default bot (ZALO_BOT_TOKEN)
    bot_id: Mapped[int | None] = mapped_column(ForeignKey("zalo_bots.id"), index=True)

    member: Mapped[Member] = relationship()

    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        UniqueConstraint("channel", "member_id"),
        # a member's accounts: who an announcement can reach, where the sender writes to them
        Index("ix_chat_accounts_member_id", "member_id"),
    )


class ZaloBot(Base):
    """A unit's own Zalo bot (a free plan serves 50 users and 3,000 messages a month per bot).

    ``zalo_id`` is the numeric id of the token (``<id>:<secret>``), also the bot's webhook path
    ``/zalo/<zalo_id>/webhook``. The token is kept here, encrypted when a key is set
    (``bot/storage/token_key.py``), and never printed or logged.
    """

    __tablename__ = "zalo_bots"
    id: Mapped[int] = mapped_column(primary_key=True)
    zalo_id: Mapped[str] = mapped_column(String(32), unique=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    token: Mapped[str] = mapped_column(EncryptedText)
    webhook_secret: Mapped[str] = mapped_column(EncryptedText)  # sealed as the token is
    mode: Mapped[str] = mapped_column(String(16), default="webhook")  # webhook | polling
    share_link: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    unit: Mapped[Unit] = relationship()


class LinkCode(Base):
    """Single-use code that links a chat account to a member (deep link or typed)."""

    __tablename__ = "link_codes"
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # the messenger the invitation was made for: a new invitation retires only that kind (a
    # Telegram deep link and a short typed Zalo code may both be out at once)
    channel: Mapped[str] = mapped_column(String(16), default="telegram")
    # made for this one member on purpose (``members relink``, the console's "Mã liên kết mới"): the only kind
    # that moves a member already linked to the chat using it; an invitation sheet's codes never take one over
    replaces_link: Mapped[bool] = mapped_column(default=False, server_default=false())


class Document(Base):
    """A resolution, directive or plan: summary and quiz settings, loaded from quizzes/*.yaml."""

    __tablename__ = "documents"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)  # shown under the title, e.g. the period it belongs to
    kind: Mapped[str] = mapped_column(String(16))
    issued_by: Mapped[str | None] = mapped_column(Text)
    issued_on: Mapped[date | None] = mapped_column(Date)
    summary: Mapped[str] = mapped_column(Text)
    key_points: Mapped[list] = mapped_column(JSON, default=list)
    # language tag -> {title, summary, key_points, reviewed_by} (bot.domain.languages)
    translations: Mapped[dict | None] = mapped_column(JSON)
    questions_per_attempt: Mapped[int | None] = mapped_column(Integer)
    pass_score: Mapped[int] = mapped_column(Integer, default=80)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    shuffle_options: Mapped[bool] = mapped_column(Boolean, default=True)
    source_file: Mapped[str | None] = mapped_column(Text)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Question(Base):
    """One version of a question. Never edited once written: an edit is a new row."""

    __tablename__ = "questions"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id"))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    options: Mapped[list] = mapped_column(JSON)
    answer_index: Mapped[int] = mapped_column(Integer)
    explanation: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_questions_document_current", "document_id", "current", "position"),)


class Round(Base):
    """A study round: one document, an audience of units (with their subtrees), a window, a target."""

    __tablename__ = "rounds"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id"), index=True)
    opens_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closes_at: Mapped[datetime] = mapped_column(UTCDateTime())
    target_rate: Mapped[float] = mapped_column(Float, default=98.0)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # set when the deadline is moved (``extend_round``): the one it was opened with, and when
    first_closes_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deadline_moved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    document: Mapped[Document] = relationship()
    units: Mapped[list[RoundUnit]] = relationship(cascade="all, delete-orphan")

    @property
    def ended_at(self) -> datetime:
        """When it ends or ended: the moment it was closed, if before its deadline (every page and report says so)."""
        return min(self.closes_at, self.closed_at) if self.closed_at else self.closes_at


class RoundUnit(Base):
    """An audience root of a round; every unit below it is in the audience too."""

    __tablename__ = "round_units"
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), primary_key=True)

    unit: Mapped[Unit] = relationship()


class StudyView(Base):
    """A member opened a round's summary (first and last time)."""

    __tablename__ = "study_views"
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    first_opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_opened_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Attempt(Base):
    """One try at a round's quiz; the drawn questions and option order live in attempt_questions."""

    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    correct_count: Mapped[int | None] = mapped_column(Integer)
    question_count: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool | None] = mapped_column(Boolean)

    questions: Mapped[list[AttemptQuestion]] = relationship(
        order_by="AttemptQuestion.position", cascade="all, delete-orphan"
    )

    __table_args__ = (
        UniqueConstraint("round_id", "member_id", "number"),
        # covers the roll-ups: per member and round, whether and how well they finished
        Index("ix_attempts_member_round", "member_id", "round_id", "submitted_at", "score", "passed"),
    )


class RoundResult(Base):
    """One member's standing in one round: their attempts summed up, one row per member and round.

    Written only by database triggers on ``attempts`` (migration 0013), never by the application, so
    no path that writes an attempt can leave it behind. The figures read one row per member here
    instead of grouping every member's attempts (half the time of a province's roll-up on SQLite)."""

    __tablename__ = "round_results"
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)  # started, submitted or not
    submitted: Mapped[int] = mapped_column(Integer)
    best_score: Mapped[float | None] = mapped_column(Float)  # best submitted score
    best_passed: Mapped[bool | None] = mapped_column(Boolean)  # an attempt with the best score passed

    # SQLite: the rows live in the primary key's b-tree, so a look-up by (round, member) reads them at once
    __table_args__ = {"sqlite_with_rowid": False}


class AttemptQuestion(Base):
    """The question shown at a position of an attempt, with the option order the member saw."""

    __tablename__ = "attempt_questions"
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"), index=True)
    option_order: Mapped[list] = mapped_column(JSON)

    question: Mapped[Question] = relationship()


class Answer(Base):
    """The member's choice for one position of an attempt; the unique key makes it count once."""

    __tablename__ = "answers"
    id: Mapped[int] = mapped_column(primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"), index=True)
    chosen_index: Mapped[int] = mapped_column(Integer)
    correct: Mapped[bool] = mapped_column(Boolean)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("attempt_id", "position"),)


class ProcessedUpdate(Base):
    """Durable de-duplication of inbound updates (at-least-once delivery from the platforms)."""

    __tablename__ = "processed_updates"
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    update_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InboxUpdate(Base):
    """An update fetched by polling (or taken from a webhook answered at once), kept until it is handled: the
    platform counts it delivered from then on, and a process killed while handling it would lose it.
    ``source``: the poller (``telegram``, ``zalo``, ``zalo:<bot id>``); handled once ``processed_updates`` has
    (``channel``, ``update_key``). Rows live minutes (``bot/services/inbox.py``)."""

    __tablename__ = "inbox_updates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # the order they came in
    source: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(16))
    update_key: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("source", "update_key"), Index("ix_inbox_updates_received", "received_at"))


class ChatState(Base):
    """Where a chat is in the conversation: the page being read, the choices a member may type,
    wrong link codes. (The quiz's place is the attempt's own rows: the next unanswered question.)

    Kept in SQL (not PTB's in-memory state) so a restart or another process continues it.
    """

    __tablename__ = "chat_states"
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reading_round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    reading_page: Mapped[int | None] = mapped_column(Integer)
    choices: Mapped[dict | None] = mapped_column(JSON)  # typed word -> action, where there are no buttons
    wrong_codes: Mapped[int | None] = mapped_column(Integer)  # wrong link codes typed in a row
    codes_paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())  # no code tries before
    pauses: Mapped[int | None] = mapped_column(Integer)  # pauses in a row: each twice as long as the last
    # The quiz question last sent to this chat, and when the platform says it was delivered (None
    # until then): a typed answer counts only for a question the member had on screen when typing.
    question_attempt_id: Mapped[int | None] = mapped_column(Integer)
    question_position: Mapped[int | None] = mapped_column(Integer)
    question_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ChannelUsage(Base):
    """Messages a channel sent in a calendar month (local time), for plans with a monthly quota (Zalo)."""

    __tablename__ = "channel_usage"
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    sent: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OutboxBody(Base):
    """What every copy of a broadcast shares (text, buttons), stored once and pointed at by its
    outbox rows: an announcement to 100,000 members does not write its text 100,000 times.
    ``digest`` (SHA-256 of the payload) makes the same body stored once, however often it is sent."""

    __tablename__ = "outbox_bodies"
    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OutboxMessage(Base):
    """A message the product sends on its own initiative, written before it is sent.

    ``dedupe_key`` (purpose, recipient, round, period) is unique, so a job that runs twice, in two
    processes, or again after downtime enqueues each message once. Status moves
    pending → claimed → sending → sent | failed | dropped; ``sending`` rows of a sender that stopped
    become ``uncertain`` (maybe delivered, never sent again; secretaries see them in ``/chualam``).
    """

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(160), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    # the message (``bot.outbox.queue.reply_payload``); with ``body_id``, only this member's own part
    # (their study link), laid over the shared body
    payload: Mapped[dict] = mapped_column(JSON)
    body_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_bodies.id"))
    attachment_name: Mapped[str | None] = mapped_column(String(128))
    attachment: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    channel: Mapped[str | None] = mapped_column(String(16))
    # parts of a long message already delivered on ``channel`` before a failure: a retry sends the rest
    parts_sent: Mapped[int | None] = mapped_column(Integer)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_outbox_status_not_before", "status", "not_before"),
        Index("ix_outbox_member_round", "member_id", "round_id"),
    )


class Lease(Base):
    """A named lease with an expiry: one process at a time runs the scheduler (``scheduler``); each
    running outbox sender renews its own (``sender:<worker>``), so that senders know how many share
    the rate and whose claimed rows were left by a sender that died."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class JobRun(Base):
    """A scheduled job done once: ``announce:<round>``, ``remind:<round>:<date>``, ``digest:<time>``…

    Makes "what is due at T?" cheap (done jobs are skipped) and catch-up after downtime run once.
    """

    __tablename__ = "job_runs"
    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(Text)


class ZaloOaAuth(Base):
    """The Zalo Official Account's OAuth state, one row (``key = "oa"``): the token pair and a pending
    PKCE authorisation. Refreshes lock this row, because Zalo's refresh token is single-use."""

    __tablename__ = "zalo_oa_auth"
    key: Mapped[str] = mapped_column(String(16), primary_key=True)
    access_token: Mapped[str | None] = mapped_column(EncryptedText)  # at rest under the token key, as bots' tokens
    refresh_token: Mapped[str | None] = mapped_column(EncryptedText)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refresh_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    code_verifier: Mapped[str | None] = mapped_column(Text)  # PKCE, until the admin's code comes back
    state: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lost_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # authorisation lost: an admin must act
    lost_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ZaloOaContact(Base):
    """A Zalo user as the OA knows them: following or not, and the last interaction that opens the
    48-hour (free) and 7-day (paid) windows for consultation messages."""

    __tablename__ = "zalo_oa_contacts"
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    following: Mapped[bool] = mapped_column(Boolean, default=False)
    last_interaction_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unfollowed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    followed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the follow or unfollow last in time wins
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ZaloOaSend(Base):
    """How an outbox message went out on the OA: the rung of the ladder (free, paid, zns, call_list)
    and what it cost in đồng; the monthly budget is the sum of ``cost`` over ``month``."""

    __tablename__ = "zalo_oa_sends"
    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int | None] = mapped_column(Integer, index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    rung: Mapped[str] = mapped_column(String(16))
    cost: Mapped[int] = mapped_column(Integer, default=0)
    month: Mapped[str] = mapped_column(String(7), index=True)  # YYYY-MM, local time
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())

class WebLink(Base):
    """A member's signed way into the study pages (``/hoc/l/<token>``): the token names this row,
    so a link can expire (by default when its round closes) and be revoked, and a URL never
    carries a member id."""

    __tablename__ = "web_links"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random, URL-safe
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))  # the page it opens on
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

class ConsoleLogin(Base):
    """A one-time console login link (``/quantri``): only its SHA-256 is kept; 5 minutes, single use."""

    __tablename__ = "console_logins"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsoleSession(Base):
    """A console session opened by a login link: cookie token hashed, CSRF token, idle expiry."""

    __tablename__ = "console_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsoleAudit(Base):
    """Who did what in the console (uploaded, opened, closed, extended, reminded) and when; refused
    logins too (``member_id`` empty, ``source`` the client address), which the rate limit counts."""

    __tablename__ = "console_audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
