"""The conversation: what a member's text, contact or choice does, as one transaction each.

Channels call ``on_text``/``on_contact``/``on_action`` with the platform's ids and get platform-neutral
replies back. An ``update_key`` makes a redelivered update a no-op (durable de-duplication).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.domain import messages as msg
from bot.domain.ids import parse_id
from bot.domain.replies import Outcome, Reply
from bot.domain.permissions import PermissionDenied
from bot.outbox import queue
from bot.outbox.queue import QuietHours
from bot.services import linking, oversight, quiz, reading_language
from bot.storage.db import Database, insert_if_new, lock_chat
from bot.storage.models import Attempt, ChatAccount, ChatState, Member, ProcessedUpdate, Round

COMMANDS = {
    "start": "start", "batdau": "start",
    "hoc": "hoc", "doc": "hoc",
    "lambai": "lambai", "kiemtra": "lambai",
    "ketqua": "ketqua",
    "trogiup": "help", "help": "help", "huongdan": "help",
    "tiep": "tiep", "xemtiep": "tiep", "tieptheo": "tiep", "doctiep": "tiep",
    "lambaikiemtra": "lambai",
    "thongke": "thongke", "chualam": "chualam", "nhacnho": "nhacnho", "baocao": "baocao",
    "ngonngu": "ngonngu", "language": "ngonngu",
    "quantri": "quantri",
}
REPLAY_WINDOW = timedelta(hours=1)  # a redelivered answer this soon after a hand-in is the one that handed it in
DOUBLE_TAP = timedelta(seconds=15)  # a tap on a quiz handed in this recently is the same impatient member
# Commands whose reply can be worked out again and thrown away (``_replay_text``): they show where the member is
# and hand out nothing that lives in the database (a login link, a study link, a link code's outcome, a page;
# a redelivered /start only says the chat is linked, see ``_redelivered_text``)
REPLAYABLE = frozenset({"lambai", "ketqua", "help"})
REDONE = frozenset({"hoc"})  # redelivered commands worked out again for real: their only work is a fresh study link
# An answer as members type it: "B", "b.", "2", "(c)", "đáp án: D", "câu A", "chọn 3" (on text without diacritics)
# ("câu" only before a letter: "câu 3" may mean the third question)
_ANSWER = re.compile(r"^\s*(?:(?:dap an|phuong an|cau tra loi|tra loi|chon)\s*:?\s*|cau\s*:?\s*(?=[(\[]?\s*[a-f]))?"
                     r"[(\[]?\s*([a-f1-6])\s*[)\]]?\s*[.,!)]*\s*$")


T = TypeVar("T")


def _rolled_back(s: Session, work: Callable[[], T]) -> T:
    """What ``work`` replies, with whatever it wrote undone (a savepoint rolled back)."""
    savepoint = s.begin_nested()
    try:
        return work()
    finally:
        savepoint.rollback()


def fold(text: str) -> str:
    """Lower-case, no diacritics, no spaces, full-width letters as plain ones: ``Làm bài`` → ``lambai``."""
    text = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold()).replace("đ", "d")
    return "".join(ch for ch in text if not unicodedata.combining(ch) and not ch.isspace()
                   and unicodedata.category(ch) != "Cf")


def plain(text: str) -> str:
    """Lower case without diacritics, spaces kept: ``Đáp án: B`` → ``dap an: b``."""
    text = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold()).replace("đ", "d")
    return "".join(ch for ch in text if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf")


def answer_token(text: str) -> str | None:
    """The letter or number an answer-like text gives (``đáp án a`` → ``A``), or None. The words around it
    may carry diacritics; the letter itself must not: "ạ" or "À!" is an interjection, not answer A."""
    written = unicodedata.normalize("NFKC", "".join(ch for ch in text if unicodedata.category(ch) != "Cf"))
    folded = plain(written)
    match = _ANSWER.match(folded)
    if not match or len(folded) != len(written) or not written[match.start(1)].isascii():
        return None
    return match.group(1).upper()


def _visible(text: str) -> str:
    """``text`` without the invisible format characters (zero-width space, joiners) a phone keyboard or a
    copy-paste leaves around a command, and with full-width forms (``／ｔｈｏｎｇｋｅ``) as plain ones."""
    return unicodedata.normalize("NFKC", "".join(ch for ch in text if unicodedata.category(ch) != "Cf")).strip()


def parse_command(text: str) -> tuple[str | None, str]:
    """``/start@bot abc`` → (``start``, ``abc``); typed words without a slash work too, and a slash command
    of two words typed with its space (``/thống kê``)."""
    stripped = _visible(text)
    if not stripped:
        return None, ""
    if stripped.startswith("/"):
        head, _, rest = stripped[1:].partition(" ")
        head = head.split("@", 1)[0]
        if fold(head) not in COMMANDS:
            second, _, after = rest.strip().partition(" ")
            if second and fold(head + second) in COMMANDS:
                return COMMANDS[fold(head + second)], after.strip()
        return COMMANDS.get(fold(head)), rest.strip()
    folded = fold(stripped)
    if folded in COMMANDS:
        return COMMANDS[folded], ""
    head, _, rest = stripped.partition(" ")
    if fold(head) == "start":
        return "start", rest.strip()
    return None, stripped


RESULT_MESSAGES = 2


def _parse_action(action: str) -> tuple[str, list[int], str]:
    """A button's data ``kind:n:n…`` as (kind, numbers, the text after the kind); forged numbers give
    no numbers (the action is then refused as stale, never an error)."""
    kind, _, rest = action.partition(":")
    numbers = [parse_id(p) for p in rest.split(":")]
    return kind, ([] if None in numbers else numbers), rest


# The statements of every update, built once (building one costs about what running it does)
DEACTIVATED = 0  # ``_member_id`` of a chat whose member is no longer active (no member has id 0)
_CHAT_MEMBER_ID = (select(Member.id, Member.active, ChatAccount.last_seen_at)
                   .join(ChatAccount, ChatAccount.member_id == Member.id)
                   .where(ChatAccount.channel == bindparam("channel"),
                          ChatAccount.external_id == bindparam("external_id")))
_ACCOUNTS = ChatAccount.__table__
_SEEN = (update(_ACCOUNTS).where(_ACCOUNTS.c.channel == bindparam("chat_channel"),
                                 _ACCOUNTS.c.external_id == bindparam("chat_id"))
         .values(last_seen_at=bindparam("now")))
_STATE = ChatState.__table__
_THIS_CHAT = and_(_STATE.c.channel == bindparam("chat_channel"), _STATE.c.external_id == bindparam("chat_id"))
# where there are no buttons: the offer a typed word maps to, and the quiz question last sent (every update reads
# and writes them, so as plain statements, not through an ORM ChatState)
_TYPED_STATE = select(_STATE.c.choices, _STATE.c.question_attempt_id, _STATE.c.question_position,
                      _STATE.c.question_delivered_at, _STATE.c.updated_at).where(_THIS_CHAT)
_SAME_QUESTION = and_(_STATE.c.question_attempt_id == bindparam("attempt"),
                      _STATE.c.question_position == bindparam("at_position"))
_REMEMBER_CHOICES = update(_STATE).where(_THIS_CHAT).values(choices=bindparam("offer"), updated_at=bindparam("now"))
_REMEMBER_QUESTION = _REMEMBER_CHOICES.values(  # its delivery time is kept while the same question is shown again
    question_attempt_id=bindparam("attempt"), question_position=bindparam("at_position"),
    question_delivered_at=case((_SAME_QUESTION, _STATE.c.question_delivered_at), else_=None))
_QUESTION_DELIVERED = (update(_STATE).where(_THIS_CHAT, _SAME_QUESTION, _STATE.c.question_delivered_at.is_(None))
                       .values(question_delivered_at=bindparam("at")))
_QUESTION_LOST = (update(_STATE).where(_THIS_CHAT, _SAME_QUESTION, _STATE.c.question_delivered_at.is_(None))
                  .values(question_attempt_id=None, question_position=None))
# A question remembered as sent and neither delivered nor lost this long after: the process sending it died (a
# live one records either within its tries: a Zalo reply is up to 5 tries of 15 s and their waits, a long result
# two messages; another process may serve the chat meanwhile). By then it reached the member or it never will.
SEND_UNSETTLED = timedelta(minutes=3)
SEEN_RESOLUTION = timedelta(hours=1)  # how stale a chat's last_seen_at may get before it is written
REPLY_EXPIRY = timedelta(hours=12)  # a reply held back by flood control is not worth more than this


@dataclass(frozen=True)
class _BriefQuestion:
    """A question as a compact review shows it (never an ORM object: nothing is written back)."""

    text: str
    options: list
    answer_index: int
    explanation: str | None = None

    @classmethod
    def without_explanation(cls, q) -> _BriefQuestion:
        return cls(q.text, list(q.options), q.answer_index)

    @classmethod
    def shortened(cls, q, width: int = 70) -> _BriefQuestion:
        short = lambda text: text if len(text) <= width else text[:width - 1].rstrip() + "…"  # noqa: E731
        return cls(short(q.text), [short(o) for o in q.options], q.answer_index)


@dataclass(frozen=True)
class ChannelTraits:
    """What a channel can do; replies adapt to it (length limit, buttons, edits)."""

    name: str
    text_limit: int
    has_buttons: bool = True
    # the platform delivers an update again only when its handling did not finish (Telegram: no 2xx to the
    # webhook), so the reply may never have gone: a redelivered text is answered again
    replies_to_redelivered_text: bool = False


class ChatService:
    def __init__(self, db: Database, traits: ChannelTraits, tz: ZoneInfo, quiet: QuietHours | None = None,
                 budget: Any = None, study_links: Any = None, console_url: str | None = None, reports: Any = None):
        """``budget``: where a channel's plan limits messages (Zalo's monthly quota), an object whose
        ``refusal(session, member_ids, now)`` says why a broadcast cannot be sent, or None.
        ``study_links``: a ``web_links.StudyLinks`` where the study pages are served: /hoc then
        carries the member's own link. ``console_url``: the web console's public address, for
        ``/quantri`` links (None: no console). ``reports``: ``bot.reports.replies.report_replies``
        (given by the process wiring: services do not build reports), for ``/baocao`` (None: no files)."""
        self.db = db
        self.study_links = study_links
        self.traits = traits
        self.tz = tz
        self.quiet = quiet or QuietHours(tz=tz)
        self.budget = budget
        self.console_url = console_url
        self.reports = reports

    # -- entry points -----------------------------------------------------------------------
    def on_text(self, external_id: str, text: str, now: datetime, update_key: str | None = None,
                sent_at: datetime | None = None, taken_up: bool = False) -> Outcome:
        """``sent_at``: when the member sent the text, by the platform's clock; where the channel
        gives it (and reports deliveries, see ``question_delivered``), a typed answer counts only
        for a question delivered to this chat before that moment. ``taken_up``: the update comes from
        the inbox a killed process left, recorded and never answered (``Inbox.replay_unanswered``): its
        reply is worked out again even where the platform never delivers an update twice."""
        with self.db.session() as s:
            lock_chat(s, self.traits.name, external_id)  # one update of a chat at a time, in any process
            if not self._first_time(s, update_key, now):
                outcome = self._redelivered_text(s, external_id, text, now, sent_at, taken_up)
                self._remember_choices(s, external_id, outcome, now)  # what a reply sent again offers holds
                return outcome
            outcome = self._text(s, external_id, text, now, sent_at)
            self._remember_choices(s, external_id, outcome, now)
            return outcome

    def question_delivered(self, external_id: str, question: tuple[int, int], at: datetime) -> None:
        """The channel delivered the message showing ``question`` at ``at``, on the platform's clock (or the channel's
        reckoning of it), the clock its messages' ``sent_at`` are on."""
        with self.db.session() as s:
            s.connection().execute(_QUESTION_DELIVERED, {"chat_channel": self.traits.name, "chat_id": external_id,
                                                         "attempt": question[0], "at_position": question[1], "at": at})

    def question_lost(self, external_id: str, question: tuple[int, int]) -> None:
        """The channel could not deliver the message showing ``question``: a typed answer is not counted for it
        (the member has not seen it), and gets it shown again."""
        with self.db.session() as s:
            s.connection().execute(_QUESTION_LOST, {"chat_channel": self.traits.name, "chat_id": external_id,
                                                    "attempt": question[0], "at_position": question[1]})

    def reply_later(self, external_id: str, replies: list[Reply], key: str, now: datetime, wait: float) -> int:
        """Queue in the outbox replies the channel could not send now (flood control), for the member
        of this chat: new messages from ``wait`` seconds on, also after a restart; a question answered
        meanwhile is dropped (``queue.no_longer_true``). Returns how many were queued."""
        not_before = now + timedelta(seconds=wait)
        with self.db.session() as s:
            member = linking.account_member(s, self.traits.name, external_id)
            if member is None:
                return 0
            return sum(queue.enqueue(
                s, dedupe_key=f"reply:{self.traits.name}:{key}:{i}", purpose=queue.REPLY, member_id=member.id,
                reply=reply, now=now, not_before=not_before, expires_at=not_before + REPLY_EXPIRY,
                attachment=(reply.files[0].filename, reply.files[0].data) if reply.files else None)
                for i, reply in enumerate(replies))

    def group_reply(self, display_name: str, said: str, share_link: str | None = None) -> Reply:
        """What the bot answers in a group, on any messenger: nobody's results, a pointer to a private chat; a link
        code ``said`` there (bare, or quoted in a sentence) is voided, since everyone in the group read it."""
        posted = linking.code_said(said) if said else None
        with self.db.session() as s:
            voided = posted is not None and linking.void_posted_code(s, posted)
        return msg.group_redirect(display_name, share_link, posted_code=posted is not None, voided=voided)

    def first_time(self, update_key: str, now: datetime) -> bool:
        """Claim an update the channel handles without a conversation (e.g. a group mention):
        True the first time, False for a redelivery."""
        with self.db.session() as s:
            return self._first_time(s, update_key, now)

    def _text(self, s: Session, external_id: str, text: str, now: datetime, sent_at: datetime | None) -> Outcome:
        command, arg = parse_command(text)
        member_id = self._member_id(s, external_id, now)
        if member_id in (None, DEACTIVATED):
            said = linking.code_said(text) if command is None else None  # typed bare, or "Mã của tôi là K7PM-X3QD"
            if command == "start" and arg:
                reply = self._link_code(s, external_id, linking.code_said(arg) or arg, now)
            elif said:
                reply = self._link_code(s, external_id, said, now)
            else:
                reply = self._stranger(s, external_id, now, deactivated=member_id == DEACTIVATED)
            return Outcome([reply] if reply is not None else [])
        typed, state = self._typed_choice(s, external_id, text)
        if typed is not None:  # a typed answer (the busiest path without buttons) needs the member's id only
            answer = msg.answer_action(typed)
            if answer is not None:
                attempt_id, position, shown = answer
                early = self._not_seen_yet(s, state, attempt_id, position, msg.LETTERS[shown], sent_at)
                if early is not None:
                    return early
            return self._action(s, external_id, member_id, typed, now)
        member = s.get(Member, member_id)
        if command == "start":
            reply = self._link_code(s, external_id, arg, now) if arg else None
            if reply is None or reply.ask_contact:  # no code, or one that links nobody: this chat stays linked
                reply = msg.link_outcome("already", member)
            return Outcome([reply])
        if command == "help":
            return Outcome([msg.help_text(member, self.traits.has_buttons)])
        if command == "hoc":
            return Outcome(self._study_list(s, member, now))
        if command == "lambai":
            return Outcome(self._quiz_entry(s, member, now))
        if command == "ketqua":
            return Outcome(msg.history(quiz.member_history(s, member), self.tz, self.traits.text_limit, now))
        if command == "tiep":
            return Outcome(self._next_page(s, external_id, member, now))
        if command == "ngonngu":
            return Outcome([reading_language.choose(s, member, arg)])
        if command == "quantri":
            return Outcome([self._console_link(s, member, now)])
        if command in OVERSIGHT:
            return Outcome(self._oversee(s, lambda: OVERSIGHT[command](self, s, member, now)))
        return self._free_text(s, external_id, member, arg, now, sent_at, state)

    def _console_link(self, s: Session, member: Member, now: datetime) -> Reply:
        """``/quantri``: a one-time link to the web console for secretaries, cadres and admins."""
        from bot.domain import console_messages
        from bot.services import console_access

        if not self.console_url:
            return Reply(console_messages.NO_CONSOLE)
        try:
            token = console_access.issue_login(s, member, now)
        except PermissionDenied:
            return Reply(console_messages.NOT_FOR_MEMBERS)
        return Reply(console_messages.login_link(console_access.login_url(self.console_url, token)))

    def on_contact(self, external_id: str, phone: str, own: bool, now: datetime,
                   update_key: str | None = None) -> Outcome:
        with self.db.session() as s:
            lock_chat(s, self.traits.name, external_id)  # one update of a chat at a time, in any process
            if not self._first_time(s, update_key, now):
                return Outcome(redelivered=True)
            if not own:
                return Outcome([msg.link_outcome("not_own", None)])
            result = linking.link_by_phone(s, self.traits.name, external_id, phone, now)
            return Outcome([msg.link_outcome(result.status, result.member)])

    def on_action(self, external_id: str, action: str, now: datetime, update_key: str | None = None,
                  taken_up: bool = False) -> Outcome:
        """A button's action. ``taken_up``: as for ``on_text``, a tap a killed process recorded and never answered."""
        with self.db.session() as s:
            lock_chat(s, self.traits.name, external_id)  # one update of a chat at a time, in any process
            if not self._first_time(s, update_key, now):
                if self.traits.has_buttons:
                    return self._replay(s, external_id, action, now)
                if not taken_up:  # no message to edit: the first delivery's reply is (or was) sent anew already
                    return Outcome(redelivered=True)
                outcome = self._replay_unanswered_tap(s, external_id, action, now)
                self._remember_choices(s, external_id, outcome, now)
                return outcome
            member_id = self._member_id(s, external_id, now)
            if member_id == DEACTIVATED:
                return Outcome([msg.no_longer_listed()], notice=self._toast("Đồng chí không còn trong danh sách "
                                                                            "sinh hoạt."))
            if member_id is None:  # where members type, they link by typing a code: say so
                reply = msg.not_linked() if self.traits.has_buttons else msg.typed_not_linked()
                return Outcome([reply], notice=self._toast("Đồng chí chưa liên kết tài khoản."))
            outcome = self._action(s, external_id, member_id, action, now)
            if outcome.result_again:  # a second tap as the quiz is handed in: the first tap sends the rest
                outcome = replace(outcome, replies=outcome.replies[:1])
            self._remember_choices(s, external_id, outcome, now)
            return outcome

    # -- helpers ----------------------------------------------------------------------------
    def _toast(self, text: str) -> str | None:
        """A button's toast, on a messenger that shows one; elsewhere it would lead the reply, saying it twice."""
        return text if self.traits.has_buttons else None

    def _replay(self, s: Session, external_id: str, action: str, now: datetime) -> Outcome:
        """A press handled before (``redelivered``). The process may have died after recording it and before
        its reply went out: what the press shows now, worked out in a savepoint that is rolled back, so
        nothing is recorded twice. Channels only edit the pressed message with it, never send anew."""
        member_id = self._member_id(s, external_id, now)
        if member_id in (None, DEACTIVATED):
            return Outcome(redelivered=True)
        shown = _rolled_back(s, lambda: self._action(s, external_id, member_id, action, now))
        edits = [i for i, r in enumerate(shown.replies) if r.edit]
        # from the edit of the pressed message on: the next question, or a result with all its parts (a press
        # that handed the quiz in and died before replying must not lose the review's explanations)
        return Outcome(shown.replies[edits[-1]:] if edits else [], redelivered=True)

    def _replay_unanswered_tap(self, s: Session, external_id: str, action: str, now: datetime) -> Outcome:
        """A tap recorded by a process killed before its reply (``taken_up``), where replies are new messages: what
        it would have shown, worked out in a savepoint rolled back. An answer's receipt and the next question (or
        the result of the quiz it handed in), not a "already recorded" note for a reply the member never had; an
        answer that went elsewhere (a handed-in quiz's button answers the quiz under way) shows where the quiz
        is now, with no receipt, as a typed answer does: worked out again, it would answer the next question."""
        member_id = self._member_id(s, external_id, now)
        if member_id in (None, DEACTIVATED):
            return Outcome(redelivered=True)
        kind, numbers, _ = _parse_action(action)
        if kind != "a" or len(numbers) != 3:
            return replace(_rolled_back(s, lambda: self._action(s, external_id, member_id, action, now)),
                           redelivered=True)

        def receipt() -> Outcome | None:
            result = quiz.answer(s, member_id, *numbers, now)
            where = result.quiz if result.status == "duplicate" and result.shown_letter else None
            if where is None or (where.position is None and quiz.in_progress_attempt(s, member_id, now)):
                return None
            return Outcome(self._where_now(s, where, msg.recorded_prefix(numbers[1], result.shown_letter)))

        shown = _rolled_back(s, receipt)
        return replace(shown, redelivered=True) if shown is not None else self._replay_typed_answer(s, external_id, now)

    def _redelivered_text(self, s: Session, external_id: str, text: str, now: datetime,
                          sent_at: datetime | None, taken_up: bool = False) -> Outcome:
        """A text handled before. Where the channel may have lost its reply (``replies_to_redelivered_text``, or
        ``taken_up``), what the member needs to go on is sent again, recording nothing twice; anything else gets
        nothing."""
        if not (self.traits.replies_to_redelivered_text or taken_up):
            return Outcome(redelivered=True)
        command = parse_command(text)[0]
        if command in REPLAYABLE:
            return self._replay_text(s, external_id, text, now, sent_at)
        if command in REDONE:  # done again for real: the study link it hands out must live
            return replace(self._text(s, external_id, text, now, sent_at), redelivered=True)
        if command == "start":  # a link code is not tried again (it would say what it cannot do): a chat linked
            # now is told so in /start's words, without a member nothing is sent
            member = linking.account_member(s, self.traits.name, external_id)
            return Outcome([msg.link_outcome("already", member)] if member is not None else [], redelivered=True)
        if command is None and answer_token(text):
            return self._replay_typed_answer(s, external_id, now)
        return Outcome(redelivered=True)

    def _replay_text(self, s: Session, external_id: str, text: str, now: datetime,
                     sent_at: datetime | None) -> Outcome:
        """A command of ``REPLAYABLE`` handled before (``redelivered``): the process that handled it may have died
        after recording its work and before replying (a webhook delivers it again), and a member left without
        the first question of ``/lambai`` is stuck. What it shows now is worked out in a savepoint that is rolled
        back, so nothing is recorded twice, and sent: at worst a reply the member already has comes twice."""
        shown = _rolled_back(s, lambda: self._text(s, external_id, text, now, sent_at))
        return Outcome(shown.replies, redelivered=True)

    def _replay_typed_answer(self, s: Session, external_id: str, now: datetime) -> Outcome:
        """A typed answer handled before (``redelivered``), whose reply may have died with the process: the
        question the quiz is at now, or the result of a quiz it handed in (replaying the answer would answer
        the next question with it). Without a reply the member types the letter again, and it counts for a
        question they never saw."""
        member_id = self._member_id(s, external_id, now)
        if member_id in (None, DEACTIVATED):
            return Outcome(redelivered=True)
        current = quiz.in_progress_attempt(s, member_id, now)
        if current is not None:
            return Outcome(self._show_position(s, quiz.position_of(s, current)), redelivered=True)
        handed_in = s.scalar(select(Attempt).where(Attempt.member_id == member_id,
                                                   Attempt.submitted_at >= now - REPLAY_WINDOW)
                             .order_by(Attempt.submitted_at.desc()).limit(1))
        return Outcome(self._result(s, handed_in) if handed_in is not None else [], redelivered=True)

    def _link_code(self, s: Session, external_id: str, code: str, now: datetime) -> Reply | None:
        """Try a link code; after WRONG_CODES_LIMIT wrong ones in a row this chat pauses (no guessing).
        None: the chat is paused and was told so (nothing more is sent)."""
        state = s.get(ChatState, (self.traits.name, external_id))
        if _paused(state, now):
            return self._pause_notice(state)
        result = linking.link_by_code(s, self.traits.name, external_id, code, now)
        if result.status in ("linked", "already"):
            if state is not None:
                state.wrong_codes = state.codes_paused_until = state.pauses = None
            return msg.link_outcome(result.status, result.member)
        if result.status != "unknown":  # a real code that cannot link this chat: its own reply, and a try all the same
            state = self._count_try(s, external_id, now)
            if _paused(state, now):
                return msg.codes_paused(state.codes_paused_until, self.tz)
            return msg.link_outcome(result.status, result.member)
        state = self._count_try(s, external_id, now)
        if _paused(state, now):
            return msg.codes_paused(state.codes_paused_until, self.tz)
        if self.traits.has_buttons:
            return msg.link_outcome("unknown", None)
        return msg.wrong_code(linking.WRONG_CODES_LIMIT - state.wrong_codes)

    def _stranger(self, s: Session, external_id: str, now: datetime, *, deactivated: bool) -> Reply | None:
        """What an unlinked chat's other messages get, or one whose member was deactivated (told so, not
        asked for a code). Where every message costs (no buttons: Zalo), they count as tries too, so a
        stranger typing on cannot spend the bot's monthly messages."""
        if self.traits.has_buttons:
            return msg.no_longer_listed() if deactivated else msg.not_linked()
        state = s.get(ChatState, (self.traits.name, external_id))
        if _paused(state, now):
            return None if deactivated else self._pause_notice(state)
        state = self._count_try(s, external_id, now)
        if deactivated:  # told each time until the tries run out, then nothing until the pause ends
            return msg.no_longer_listed()
        return msg.codes_paused(state.codes_paused_until, self.tz) if _paused(state, now) else msg.typed_not_linked()

    def _count_try(self, s: Session, external_id: str, now: datetime) -> ChatState:
        """One more wrong try; the last allowed one pauses the chat, each pause in a row twice as long
        (15 minutes, 30, an hour... up to 16 hours), until the chat links."""
        state = self._state(s, external_id, now)
        state.wrong_codes = (state.wrong_codes or 0) + 1
        if state.wrong_codes >= linking.WRONG_CODES_LIMIT:
            state.pauses = (state.pauses or 0) + 1
            state.wrong_codes = None  # not yet told during the pause (the reply that pauses tells it)
            state.codes_paused_until = now + linking.CODE_PAUSE * 2 ** min(state.pauses - 1, 6)
        return state

    def _pause_notice(self, state: ChatState) -> Reply | None:
        """While paused, the chat is told once more when it may try again, then nothing where every message costs
        (Zalo); where replies are free (Telegram) every try is told, or the member would think the bot dead."""
        if state.wrong_codes is not None and not self.traits.has_buttons:
            return None
        state.wrong_codes = 0  # told
        return msg.codes_paused(state.codes_paused_until, self.tz)

    def _first_time(self, s: Session, update_key: str | None, now: datetime) -> bool:
        """Record the update id in the caller's transaction: one INSERT, no SAVEPOINT; a key
        already there (a redelivery) inserts nothing."""
        if update_key is None:
            return True
        stmt = insert_if_new(s.get_bind().dialect.name, ProcessedUpdate.__table__,
                             ("channel", "update_key", "processed_at"), returning="update_key")
        params = {"channel": self.traits.name, "update_key": update_key, "processed_at": now}
        return s.connection().execute(stmt, params).first() is not None

    def _member_id(self, s: Session, external_id: str, now: datetime) -> int | None:
        """The id of the active member behind this chat, read without building the ORM object (an answer needs
        nothing else; ``_seen`` writes when the chat was used); None for a stranger, and ``DEACTIVATED`` for a
        chat whose member is no longer active."""
        found = s.connection().execute(_CHAT_MEMBER_ID,
                                       {"channel": self.traits.name, "external_id": external_id}).first()
        if found is None:
            return None
        if not found[1]:
            return DEACTIVATED
        self._seen(s, external_id, found[2], now)
        return found[0]

    def _seen(self, s: Session, external_id: str, seen: datetime | None, now: datetime) -> None:
        """``last_seen_at`` is written only when older than SEEN_RESOLUTION (the sender's "messenger
        used last" is to the hour), not on every update."""
        if seen is None or now - seen >= SEEN_RESOLUTION or now < seen:
            s.connection().execute(_SEEN, {"chat_channel": self.traits.name, "chat_id": external_id, "now": now})

    def _state(self, s: Session, external_id: str, now: datetime) -> ChatState:
        state = s.get(ChatState, (self.traits.name, external_id))
        if state is None:
            try:
                with s.begin_nested():  # two updates of one chat handled by two processes at once
                    state = ChatState(channel=self.traits.name, external_id=external_id, updated_at=now)
                    s.add(state)
            except IntegrityError:
                state = s.get(ChatState, (self.traits.name, external_id))
        state.updated_at = now
        return state

    def _action(self, s: Session, external_id: str, member_id: int, action: str, now: datetime) -> Outcome:
        """A button's (or typed choice's) ``kind:n:n…``. An answer, the busiest path, needs only the
        member's id; the others load the member."""
        kind, numbers, rest = _parse_action(action)
        if kind == "a" and len(numbers) == 3:
            return self._answer(s, member_id, *numbers, now=now)
        member = s.get(Member, member_id)
        if kind == "r" and len(numbers) == 2:
            return Outcome(self._read(s, external_id, member, numbers[0], numbers[1], now))
        if kind == "q" and len(numbers) == 1:
            rnd = quiz.round_for_member(s, member, numbers[0], now)
            return Outcome(self._start_quiz(s, member, rnd, now) if rnd else [msg.round_closed()])
        if kind == "s" and len(numbers) == 2:
            return Outcome(self._oversee(s, lambda: [oversight.unit_view(s, member, *numbers, now, self.tz)]))
        if kind == "l" and rest:
            return Outcome([reading_language.choose(s, member, rest)])
        if kind == "c" and len(numbers) == 3:
            return Outcome(self._oversee(s, lambda: oversight.not_finished(s, member, now, *numbers)))
        return Outcome(notice=msg.answer_notice("stale"))

    def _remember_choices(self, s: Session, external_id: str, outcome: Outcome, now: datetime) -> None:
        """Without buttons, members type a choice's word or number: keep the last offer to map it,
        and the quiz question last sent (its delivery is reported by the channel)."""
        if not outcome.replies:
            return
        outcome.question = outcome.question or next(
            (q for r in reversed(outcome.replies) if (q := msg.question_of(r.choices))), None)
        if self.traits.has_buttons:
            return
        with_choices = [r for r in outcome.replies if r.choices]
        if outcome.keeps_offer:  # "ok" or "cảm ơn" between steps: the offer on screen still holds
            return
        for reply in with_choices[:-1]:  # "1" can mean one thing only: the last message's offer
            reply.choices = []
        offered = [c for r in with_choices[-1:] for c in r.all_choices() if c.typed]
        params = {"chat_channel": self.traits.name, "chat_id": external_id, "now": now,
                  "offer": {fold(c.typed): c.action for c in offered} or None}
        stmt = _REMEMBER_CHOICES
        if outcome.question:
            stmt = _REMEMBER_QUESTION
            params["attempt"], params["at_position"] = outcome.question
        s.flush()  # what this update changed through the ORM goes first
        if s.connection().execute(stmt, params).rowcount == 0:  # the chat's first state
            self._state(s, external_id, now)
            s.flush()
            s.connection().execute(stmt, params)

    def _typed_state(self, s: Session, external_id: str):
        """The chat's offer and last question (``_TYPED_STATE``'s row), or None."""
        return s.connection().execute(_TYPED_STATE, {"chat_channel": self.traits.name, "chat_id": external_id}).first()

    def _not_seen_yet(self, s: Session, state, attempt_id: int, position: int, letter: str,
                      sent_at: datetime | None) -> Outcome | None:
        """None when a typed answer for ``position`` may count: that question was the last one
        delivered to this chat (``state``: its ``_TYPED_STATE`` row) before the member typed. Otherwise
        the answer is ignored with a note saying which question is current (and that question, if it
        never reached this chat)."""
        if sent_at is None or self.traits.has_buttons:
            return None
        shown = state is not None and (state.question_attempt_id, state.question_position) == (attempt_id, position)
        if shown and state.question_delivered_at is not None and sent_at >= state.question_delivered_at:
            return None
        if shown and state.question_delivered_at is None and sent_at >= state.updated_at + SEND_UNSETTLED:
            return None  # sent by a process that died before it learnt the outcome: most likely it arrived
        attempt = s.get(Attempt, attempt_id)
        where = quiz.position_of(s, attempt) if attempt is not None else None
        if where is None or where.position is None:
            return None  # nothing left to answer: the usual reply says so
        note = msg.answer_not_counted(letter, where.position)
        if shown and state.question_delivered_at is not None and where.position == position:
            return Outcome(notice=note)  # it reached the member just after they typed
        return Outcome(self._show_position(s, where), notice=note)

    def _typed_choice(self, s: Session, external_id: str, text: str) -> tuple[str | None, Any]:
        """The action a typed word or number stands for in the chat's last offer (None: it is not one),
        and the chat's ``_TYPED_STATE`` row it was read from."""
        if self.traits.has_buttons:
            return None, None
        state = self._typed_state(s, external_id)
        if state is None or not state.choices:
            return None, state
        said = _visible(text).rstrip(".").strip()
        typed = state.choices.get(fold(said)) if len(said) != 1 or said.isascii() else None  # "ạ" is not "A"
        token = answer_token(text) if typed is None else None  # "đáp án a", "(B)" for the offered "A", "B"
        return (state.choices.get(fold(token)) if token else typed), state

    def _oversee(self, s: Session, work) -> list[Reply]:
        """Run a secretary/cadre request; a refusal is a polite reply, and nothing else happens."""
        try:
            with s.begin_nested():
                return work()
        except PermissionDenied as exc:
            return [Reply(exc.message)]

    def _study_list(self, s: Session, member: Member, now: datetime) -> list[Reply]:
        rounds = quiz.open_rounds_for(s, member, now)
        if not rounds:
            return [msg.no_open_rounds()]
        reply = msg.round_list(rounds, self.tz, for_quiz=False)
        if self.study_links is not None:  # valid until the last of these rounds closes
            reply.link = self.study_links.for_member(
                s, member.id, now, round_id=rounds[0].id if len(rounds) == 1 else None,
                expires_at=max(r.closes_at for r in rounds))
            reply.text = f"{reply.text}\n\n{msg.STUDY_PAGE_HINT}"
        return [reply]

    def _read(self, s: Session, external_id: str, member: Member, round_id: int, page: int, now: datetime) -> list[Reply]:
        rnd = quiz.round_for_member(s, member, round_id, now)
        if rnd is None:
            return [msg.round_closed()]
        pages = msg.summary_pages(rnd.document, self.traits.text_limit - 200, member.language)
        if page > len(pages):
            return [msg.end_of_document(rnd)]
        page = max(page, 1)
        quiz.record_view(s, rnd.id, member.id, now)
        state = self._state(s, external_id, now)
        state.reading_round_id, state.reading_page = rnd.id, page
        return msg.reading_page(rnd, page, pages, self.tz, member.language)

    def _next_page(self, s: Session, external_id: str, member: Member, now: datetime) -> list[Reply]:
        state = s.get(ChatState, (self.traits.name, external_id))
        if state is None or state.reading_round_id is None:
            return self._study_list(s, member, now)
        return self._read(s, external_id, member, state.reading_round_id, (state.reading_page or 0) + 1, now)

    def _quiz_entry(self, s: Session, member: Member, now: datetime) -> list[Reply]:
        current = quiz.in_progress_attempt(s, member.id, now)
        if current is not None:
            return self._show_position(s, quiz.position_of(s, current))
        rounds = quiz.open_rounds_for(s, member, now)
        if not rounds:
            return [msg.no_open_rounds()]
        if len(rounds) == 1:
            return self._start_quiz(s, member, rounds[0], now)
        return [msg.round_list(rounds, self.tz, for_quiz=True)]

    def _start_quiz(self, s: Session, member: Member, rnd: Round, now: datetime) -> list[Reply]:
        position = quiz.start_or_resume(s, rnd, member, now)
        if position is None:
            attempts = quiz.attempts_of(s, rnd.id, member.id)
            best = max((a for a in attempts if a.score is not None), key=lambda a: a.score, default=None)
            return [msg.no_attempts_left(rnd.document, best)]
        return self._show_position(s, position)

    def _show_position(self, s: Session, position: quiz.QuizPosition, *, prefix: str = "", edit: bool = False) -> list[Reply]:
        if position.current is None:
            return self._result(s, position.attempt)
        return [msg.question(position.attempt, position.current, prefix=prefix, edit=edit)]

    def _result(self, s: Session, attempt: Attempt, reserve: int = 0) -> list[Reply]:
        """The result in at most RESULT_MESSAGES messages (a 10-question quiz costs at most 12 where
        every question is a message of its own): a long review leaves out the explanations, then
        shortens the questions; the right answers always stay. ``reserve``: room kept in each part
        for the receipt of the last answer."""
        rnd = quiz.round_with_document(s, attempt.round_id)
        used = quiz.attempts_used(s, rnd.id, attempt.member_id)
        reviews = quiz.review(s, attempt)
        limit = self.traits.text_limit - reserve
        replies = msg.result(attempt, rnd.document, reviews, used, limit)
        for brief in (_BriefQuestion.without_explanation, _BriefQuestion.shortened):
            if len(replies) <= RESULT_MESSAGES:
                break
            compact = [replace(r, question=brief(r.question)) for r in reviews]
            replies = msg.result(attempt, rnd.document, compact, used, limit)
        return replies

    def _answer(self, s: Session, member_id: int, attempt_id: int, position: int, shown: int, *,
                now: datetime) -> Outcome:
        result = quiz.answer(s, member_id, attempt_id, position, shown, now)
        if result.status == "stale" and result.quiz is not None and result.quiz.position == position:
            # the question is current, the choice is not one of its own (a forged button): as a typed "E" is told
            reply = msg.option_out_of_range(len(result.quiz.current.option_order))
            return Outcome(notice=reply.text) if self.traits.has_buttons else Outcome([reply])
        if result.status in ("stale", "duplicate") and result.quiz and result.quiz.position is None \
                and not self.traits.has_buttons:  # a letter for a handed-in quiz: meant for one started since?
            current = quiz.in_progress_attempt(s, member_id, now)
            if current is not None and current.id != attempt_id:
                return self._answer(s, member_id, current.id, quiz.position_of(s, current).position, shown, now=now)
        if result.status in ("stale", "duplicate") and result.quiz:
            # An answered or stale question (a double tap, another device, a reply lost in a crash):
            # bring the member to where they are. With buttons the pressed message becomes the
            # current question (or the result); without, the reply says which question is current.
            notice = msg.answer_notice(result.status)
            if self.traits.has_buttons:
                prefix = msg.recorded_prefix(position, result.shown_letter) if result.shown_letter else ""
                submitted = result.quiz.attempt.submitted_at
                again = result.quiz.position is None and submitted is not None and now - submitted < DOUBLE_TAP
                return Outcome(self._where_now(s, result.quiz, prefix), notice=notice, result_again=again)
            if result.quiz.position is not None:
                notice = f"{notice} {msg.current_question_is(result.quiz.position)}"
            return Outcome(self._show_position(s, result.quiz), notice=notice)
        if result.status != "recorded":
            return Outcome(notice=msg.answer_notice(result.status))
        prefix = msg.recorded_prefix(position, result.shown_letter)
        notice = "Đã ghi nhận." if result.quiz.position is not None else "Đã nộp bài."
        return Outcome(self._where_now(s, result.quiz, prefix), notice=notice)

    def _where_now(self, s: Session, where: quiz.QuizPosition, prefix: str) -> list[Reply]:
        """The current question, or the result once submitted, replacing the message acted on
        (an edit where the channel can), with ``prefix`` (the receipt) on top when it fits: a
        10-question quiz costs at most 12 messages."""
        if where.position is not None:
            return self._show_position(s, where, prefix=prefix, edit=True)
        replies = self._result(s, where.attempt, reserve=len(prefix))
        first = replies[0]
        if len(prefix) + len(first.text) <= self.traits.text_limit:
            first.text = prefix + first.text
        first.edit = True
        return replies

    def _free_text(self, s: Session, external_id: str, member: Member, text: str, now: datetime,
                   sent_at: datetime | None = None, state: Any = None) -> Outcome:
        """Text that is no command or offered choice: "B" or "2" for the current question, else a hint.
        ``state``: the chat's ``_TYPED_STATE`` row, as ``_text`` read it."""
        current = quiz.in_progress_attempt(s, member.id, now)
        token = answer_token(text)
        if current is not None and token:
            shown = int(token) - 1 if token.isdigit() else "ABCDEF".index(token)
            position = quiz.position_of(s, current)
            early = self._not_seen_yet(s, state, current.id, position.position, token, sent_at)
            if early is not None:
                return early
            if shown >= len(position.current.option_order):
                return Outcome([msg.option_out_of_range(len(position.current.option_order))])
            outcome = self._answer(s, member.id, current.id, position.position, shown, now=now)
            if not outcome.replies and outcome.notice:
                return Outcome([Reply(outcome.notice)])
            return Outcome(outcome.replies)
        if token and current is None and not (state is not None and state.choices):  # a second "D" after the result
            return Outcome([Reply(msg.no_quiz_under_way(self.traits.has_buttons))], keeps_offer=True, stray=True)
        return Outcome([msg.unknown_input(current is not None)], keeps_offer=True, stray=current is None)


OVERSIGHT = {
    "thongke": lambda svc, s, member, now: oversight.figures(s, member, now, svc.tz),
    "chualam": lambda svc, s, member, now: oversight.not_finished(s, member, now),
    "nhacnho": lambda svc, s, member, now: oversight.remind(s, member, now, svc.tz, svc.quiet, budget=svc.budget,
                                                           links=svc.study_links),
    "baocao": lambda svc, s, member, now: (svc.reports(s, member, now, svc.tz) if svc.reports is not None
                                           else oversight.no_report_files(s, member)),
}


def _paused(state: ChatState | None, now: datetime) -> bool:
    return state is not None and state.codes_paused_until is not None and now < state.codes_paused_until
