"""The conversation: what a member's text, contact or choice does, as one transaction each.

Channels call ``on_text``/``on_contact``/``on_action`` with the platform's ids and get platform-neutral
replies back. An ``update_key`` makes a redelivered update a no-op (durable de-duplication).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.domain import messages as msg
from bot.domain.replies import Outcome, Reply
from bot.domain.permissions import PermissionDenied
from bot.outbox.queue import QuietHours
from bot.services import linking, oversight, quiz
from bot.storage.db import Database
from bot.storage.models import Attempt, ChatAccount, ChatState, Member, ProcessedUpdate, Round

COMMANDS = {
    "start": "start", "batdau": "start",
    "hoc": "hoc", "doc": "hoc",
    "lambai": "lambai", "kiemtra": "lambai",
    "ketqua": "ketqua",
    "trogiup": "help", "help": "help", "huongdan": "help",
    "tiep": "tiep",
    "thongke": "thongke", "chualam": "chualam", "nhacnho": "nhacnho", "baocao": "baocao",
}
_ANSWER = re.compile(r"^\s*([A-Fa-f]|[1-6])\s*\.?\s*$")


def fold(text: str) -> str:
    """Lower-case, no diacritics, no spaces: ``Làm bài`` → ``lambai``."""
    text = unicodedata.normalize("NFD", text.casefold()).replace("đ", "d")
    return "".join(ch for ch in text if not unicodedata.combining(ch) and not ch.isspace())


def parse_command(text: str) -> tuple[str | None, str]:
    """``/start@bot abc`` → (``start``, ``abc``); typed words without a slash work too."""
    stripped = text.strip()
    if not stripped:
        return None, ""
    if stripped.startswith("/"):
        head, _, rest = stripped[1:].partition(" ")
        head = head.split("@", 1)[0]
        return COMMANDS.get(fold(head)), rest.strip()
    folded = fold(stripped)
    if folded in COMMANDS:
        return COMMANDS[folded], ""
    head, _, rest = stripped.partition(" ")
    if fold(head) == "start":
        return "start", rest.strip()
    return None, stripped


RESULT_MESSAGES = 2


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


class ChatService:
    def __init__(self, db: Database, traits: ChannelTraits, tz: ZoneInfo, quiet: QuietHours | None = None,
                 budget: Any = None, study_links: Any = None):
        """``budget``: where a channel's plan limits messages (Zalo's monthly quota), an object whose
        ``refusal(session, member_ids, now)`` says why a broadcast cannot be sent, or None.
        ``study_links``: a ``web_links.StudyLinks`` where the study pages are served: /hoc then
        carries the member's own link."""
        self.db = db
        self.study_links = study_links
        self.traits = traits
        self.tz = tz
        self.quiet = quiet or QuietHours(tz=tz)
        self.budget = budget

    # -- entry points -----------------------------------------------------------------------
    def on_text(self, external_id: str, text: str, now: datetime, update_key: str | None = None) -> Outcome:
        with self.db.session() as s:
            if not self._first_time(s, update_key, now):
                return Outcome()
            outcome = self._text(s, external_id, text, now)
            self._remember_choices(s, external_id, outcome, now)
            return outcome

    def first_time(self, update_key: str, now: datetime) -> bool:
        """Claim an update the channel handles without a conversation (e.g. a group mention):
        True the first time, False for a redelivery."""
        with self.db.session() as s:
            return self._first_time(s, update_key, now)

    def _text(self, s: Session, external_id: str, text: str, now: datetime) -> Outcome:
        command, arg = parse_command(text)
        member = self._member(s, external_id, now)
        if member is None:
            if command == "start" and arg:
                return Outcome([self._link_code(s, external_id, arg, now)])
            if command is None and linking.looks_like_code(text):  # typed without /start
                return Outcome([self._link_code(s, external_id, text, now)])
            return Outcome([msg.not_linked() if self.traits.has_buttons else msg.typed_not_linked()])
        typed = self._typed_choice(s, external_id, text)
        if typed is not None:
            return self._action(s, external_id, member, typed, now)
        if command == "start":
            if arg:
                return Outcome([self._link_code(s, external_id, arg, now)])
            return Outcome([msg.link_outcome("already", member)])
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
        if command in OVERSIGHT:
            return Outcome(self._oversee(s, lambda: OVERSIGHT[command](self, s, member, now)))
        return Outcome(self._free_text(s, external_id, member, arg, now))

    def on_contact(self, external_id: str, phone: str, own: bool, now: datetime,
                   update_key: str | None = None) -> Outcome:
        with self.db.session() as s:
            if not self._first_time(s, update_key, now):
                return Outcome()
            if not own:
                return Outcome([msg.link_outcome("not_own", None)])
            result = linking.link_by_phone(s, self.traits.name, external_id, phone, now)
            return Outcome([msg.link_outcome(result.status, result.member)])

    def on_action(self, external_id: str, action: str, now: datetime, update_key: str | None = None) -> Outcome:
        with self.db.session() as s:
            if not self._first_time(s, update_key, now):
                return Outcome()
            member = self._member(s, external_id, now)
            if member is None:
                return Outcome([msg.not_linked()], notice="Đồng chí chưa liên kết tài khoản.")
            outcome = self._action(s, external_id, member, action, now)
            self._remember_choices(s, external_id, outcome, now)
            return outcome

    # -- helpers ----------------------------------------------------------------------------
    def _link_code(self, s: Session, external_id: str, code: str, now: datetime) -> Reply:
        """Try a link code; after WRONG_CODES_LIMIT wrong ones in a row this chat pauses (no guessing)."""
        state = s.get(ChatState, (self.traits.name, external_id))
        if state is not None and state.codes_paused_until is not None and now < state.codes_paused_until:
            return msg.codes_paused(state.codes_paused_until, self.tz)
        result = linking.link_by_code(s, self.traits.name, external_id, code, now)
        if result.status != "unknown":
            if state is not None:
                state.wrong_codes, state.codes_paused_until = None, None
            return msg.link_outcome(result.status, result.member)
        state = self._state(s, external_id, now)
        state.wrong_codes = (state.wrong_codes or 0) + 1
        if state.wrong_codes >= linking.WRONG_CODES_LIMIT:
            state.wrong_codes, state.codes_paused_until = None, now + linking.CODE_PAUSE
            return msg.codes_paused(state.codes_paused_until, self.tz)
        if self.traits.has_buttons:
            return msg.link_outcome("unknown", None)
        return msg.wrong_code(linking.WRONG_CODES_LIMIT - state.wrong_codes)

    def _first_time(self, s: Session, update_key: str | None, now: datetime) -> bool:
        if update_key is None:
            return True
        try:
            with s.begin_nested():
                s.add(ProcessedUpdate(channel=self.traits.name, update_key=update_key, processed_at=now))
                s.flush()
        except IntegrityError:
            return False
        return True

    def _member(self, s: Session, external_id: str, now: datetime) -> Member | None:
        member = linking.account_member(s, self.traits.name, external_id)
        if member is not None:
            s.query(ChatAccount).filter_by(channel=self.traits.name, external_id=external_id).update(
                {"last_seen_at": now})
        return member

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

    def _action(self, s: Session, external_id: str, member: Member, action: str, now: datetime) -> Outcome:
        kind, _, rest = action.partition(":")
        parts = rest.split(":")
        try:
            numbers = [int(p) for p in parts if p]
        except ValueError:
            numbers = []
        if kind == "r" and len(numbers) == 2:
            return Outcome(self._read(s, external_id, member, numbers[0], numbers[1], now))
        if kind == "q" and len(numbers) == 1:
            rnd = quiz.round_for_member(s, member, numbers[0], now)
            return Outcome(self._start_quiz(s, member, rnd, now) if rnd else [msg.round_closed()])
        if kind == "a" and len(numbers) == 3:
            return self._answer(s, member, *numbers, now=now)
        if kind == "s" and len(numbers) == 2:
            return Outcome(self._oversee(s, lambda: [oversight.unit_view(s, member, *numbers, now, self.tz)]))
        if kind == "c" and len(numbers) == 3:
            return Outcome(self._oversee(s, lambda: oversight.not_finished(s, member, now, *numbers)))
        return Outcome(notice=msg.answer_notice("stale"))

    def _remember_choices(self, s: Session, external_id: str, outcome: Outcome, now: datetime) -> None:
        """Without buttons, members type a choice's word or number: keep the last offer to map it."""
        if self.traits.has_buttons or not outcome.replies:
            return
        with_choices = [r for r in outcome.replies if r.choices]
        for reply in with_choices[:-1]:  # "1" can mean one thing only: the last message's offer
            reply.choices = []
        offered = [c for r in with_choices[-1:] for c in r.all_choices() if c.typed]
        state = self._state(s, external_id, now)
        state.choices = {fold(c.typed): c.action for c in offered} or None

    def _typed_choice(self, s: Session, external_id: str, text: str) -> str | None:
        if self.traits.has_buttons:
            return None
        state = s.get(ChatState, (self.traits.name, external_id))
        if state is None or not state.choices:
            return None
        return state.choices.get(fold(text.strip().rstrip(".")))

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
        pages = msg.summary_pages(rnd.document, self.traits.text_limit - 200)
        page = min(max(page, 1), len(pages))
        quiz.record_view(s, rnd.id, member.id, now)
        state = self._state(s, external_id, now)
        state.reading_round_id, state.reading_page = rnd.id, page
        return msg.reading_page(rnd, page, pages, self.tz)

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
        rnd = s.get(Round, attempt.round_id)
        used = len(quiz.attempts_of(s, rnd.id, attempt.member_id))
        reviews = quiz.review(s, attempt)
        limit = self.traits.text_limit - reserve
        replies = msg.result(attempt, rnd.document, reviews, used, limit)
        for brief in (_BriefQuestion.without_explanation, _BriefQuestion.shortened):
            if len(replies) <= RESULT_MESSAGES:
                break
            compact = [replace(r, question=brief(r.question)) for r in reviews]
            replies = msg.result(attempt, rnd.document, compact, used, limit)
        return replies

    def _answer(self, s: Session, member: Member, attempt_id: int, position: int, shown: int, *, now: datetime) -> Outcome:
        result = quiz.answer(s, member, attempt_id, position, shown, now)
        if result.status != "recorded":
            notice = msg.answer_notice(result.status)
            replies: list[Reply] = []
            if result.status in ("stale", "duplicate") and result.quiz and result.quiz.position and not self.traits.has_buttons:
                notice = f"{notice} {msg.current_question_is(result.quiz.position)}"
                replies = self._show_position(s, result.quiz)
            return Outcome(replies, notice=notice)
        prefix = msg.recorded_prefix(position, result.shown_letter)
        if result.quiz.position is not None:
            return Outcome(self._show_position(s, result.quiz, prefix=prefix, edit=True), notice="Đã ghi nhận.")
        replies = self._result(s, result.quiz.attempt, reserve=len(prefix))
        # The question message becomes the result (an edit where the channel can), with the
        # receipt on top when it fits: a 10-question quiz costs at most 12 messages.
        first = replies[0]
        if len(prefix) + len(first.text) <= self.traits.text_limit:
            first.text = prefix + first.text
        first.edit = True
        return Outcome(replies, notice="Đã nộp bài.")

    def _free_text(self, s: Session, external_id: str, member: Member, text: str, now: datetime) -> list[Reply]:
        current = quiz.in_progress_attempt(s, member.id, now)
        match = _ANSWER.match(text)
        if current is not None and match:
            token = match.group(1).upper()
            shown = int(token) - 1 if token.isdigit() else "ABCDEF".index(token)
            position = quiz.position_of(s, current)
            if shown >= len(position.current.option_order):
                return [msg.option_out_of_range(len(position.current.option_order))]
            outcome = self._answer(s, member, current.id, position.position, shown, now=now)
            if not outcome.replies and outcome.notice:
                return [Reply(outcome.notice)]
            return outcome.replies
        return [msg.unknown_input(current is not None)]


OVERSIGHT = {
    "thongke": lambda svc, s, member, now: oversight.figures(s, member, now, svc.tz),
    "chualam": lambda svc, s, member, now: oversight.not_finished(s, member, now),
    "nhacnho": lambda svc, s, member, now: oversight.remind(s, member, now, svc.tz, svc.quiet, budget=svc.budget,
                                                           links=svc.study_links),
    "baocao": lambda svc, s, member, now: oversight.report(s, member, now, svc.tz),
}
