"""The conversation on the OA: ``OAChannel`` turns webhook events into ChatService calls and sends the
rendered replies as consultation messages, one user in order and users in parallel.

- ``user_send_text``: a button's payload (an action such as ``a:12:3:1``) or typed text;
- other ``user_send_*`` (image, sticker, file…): "text only", then what to do next;
- ``follow``: how to link (or a greeting for a linked member); ``unfollow``: recorded, nothing is sent.
Each event is handled once: its ``msg_id`` (follow/unfollow: user and timestamp) is recorded in the
same transaction as the work (``processed_updates``), so Zalo's retries and restarts change nothing.
Every event from a user renews their window (``zalo_oa_contacts``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timedelta
from typing import Any, Callable

from bot.channels.ordering import InOrderPerKey
from bot.metrics import FAILURES, handling
from bot.channels.zalo.channel import platform_time
from bot.channels.zalo_oa.client import OAClient
from bot.channels.zalo_oa.ladder import record_interaction
from bot.channels.zalo_oa.rendering import ACTION, OAMessage, render
from bot.channels.zalo_oa.tokens import OAError
from bot.domain.replies import Outcome, Reply
from bot.services.chat import ChatService
from bot.services.inbox import Inbox
from bot.timeutil import utcnow

log = logging.getLogger(__package__)
NOT_TEXT_HINT = "Official Account chỉ đọc được tin nhắn chữ và các nút bấm."
IGNORED = ("user_received_message", "user_seen_message", "oa_send_")
USER_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # Zalo's ids are digits (the emulator's "oa-1"); they fit String(64)


class OAChannel:
    def __init__(self, service: ChatService, client: OAClient, *, oa_id: str | None = None,
                 clock: Callable[[], datetime] = utcnow, inbox: Inbox | None = None):
        """``inbox``: where each event is kept until handled (``take``)."""
        self.service, self.client, self.oa_id, self.clock, self.inbox = service, client, oa_id, clock, inbox
        self.handled = self.done = 0
        self._order = InOrderPerKey()
        self._replays: set[asyncio.Task] = set()

    @staticmethod
    def key_of(event: dict[str, Any]) -> str:
        """What the event is recorded under: its ``msg_id``; a follow or an unfollow, its user and time."""
        message = event.get("message") if isinstance(event.get("message"), dict) else {}
        name, user = str(event.get("event_name") or ""), OAChannel.user_of(event)
        return str(message.get("msg_id") or f"{name}:{user}:{event.get('timestamp')}")[:64]

    async def take(self, event: dict[str, Any]) -> None:
        """Keep the event, then handle it: the webhook is answered at once, and Zalo does not deliver an answered
        event again, so a process killed while handling it would lose it. A database that cannot keep it
        raises (the webhook answers 500, for Zalo to try again)."""
        if self.inbox is not None and self.user_of(event):
            await asyncio.to_thread(self.inbox.keep, [(self.key_of(event), event)], self.clock())
        self.dispatch(event)

    async def take_up_kept(self) -> int:
        """Handle the events a process killed before handling them kept, and a moment later answer again those it
        recorded and never answered; how many were handled now."""
        if self.inbox is None:
            return 0
        started = self.clock()
        replay = asyncio.create_task(self.inbox.replay_unanswered(started, lambda e: self.dispatch(e, taken_up=True)))
        self._replays.add(replay)
        replay.add_done_callback(self._replays.discard)
        return await self.inbox.hand_on_unhandled(started, self.dispatch)

    @staticmethod
    def user_of(event: dict[str, Any]) -> str:
        """The user's id, or "" (the event is then ignored, answered 200, nothing stored) when it is not a short
        string of letters and digits as Zalo's are: a list or a 500-character id must never become a user."""
        who = event.get("follower") if event.get("event_name") in ("follow", "unfollow") else event.get("sender")
        found = who.get("id") if isinstance(who, dict) else None
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found)
        return found if isinstance(found, str) and USER_ID.fullmatch(found) else ""

    def dispatch(self, event: dict[str, Any], *, taken_up: bool = False) -> asyncio.Task:
        """Returns at once (the webhook has acknowledged); one user's events run in order. ``taken_up``: an event
        a killed process recorded and never answered (``Inbox.replay_unanswered``)."""
        return self._order.submit(self.user_of(event), lambda: self._handle_logged(event, taken_up))

    async def drain(self, timeout: float = 10.0) -> None:
        for replay in list(self._replays):
            replay.cancel()
        await self._order.drain(timeout)
        if self.inbox is not None:
            await self.inbox.close()

    async def _handle_logged(self, event: dict[str, Any], taken_up: bool = False) -> None:
        try:
            with handling("zalo_oa"):
                owed = await self.handle(event, taken_up) is False and not taken_up  # a take-up is the last try
        except Exception:  # noqa: BLE001 - one bad event must not stop the channel
            log.exception("Zalo OA: event %s failed", event.get("event_name"))
            FAILURES.labels("zalo_oa").inc()
        else:
            if self.inbox is not None and self.user_of(event) and not owed:
                self.inbox.answered(self.key_of(event))
        finally:
            self.done += 1

    async def handle(self, event: dict[str, Any], taken_up: bool = False) -> bool | None:
        """False: a delivery again of an event recorded before, answered with nothing (see ``ZaloChannel.handle``)."""
        name = str(event.get("event_name") or "")
        user = self.user_of(event)
        message = event.get("message") if isinstance(event.get("message"), dict) else {}
        if not user or name.startswith(IGNORED) or (self.oa_id and user == self.oa_id):
            if not user and not name.startswith(IGNORED):
                log.info("Zalo OA: a %r event without a well-formed user id; ignored", name[:64])
            return
        key = self.key_of(event)
        now = self.clock()
        self.handled += 1
        # the window runs from the member's action, not from when it reached us: a retried (or replayed,
        # signed) event carries its first time, and renews nothing
        sent_at = platform_time(_number(event.get("timestamp")))
        at = min(sent_at or now, now)
        if name == "unfollow":
            if await asyncio.to_thread(self.service.first_time, key, now):
                await asyncio.to_thread(record_interaction, self.service.db, user, at, False)
                log.info("Zalo OA: %s unfollowed; the OA sends them nothing more", user)
            return
        # Zalo's answer to a send carries no time: a question's delivery is stamped on Zalo's clock as this
        # event's time plus what our clock counted since, so that a typed answer's time (Zalo's) compares
        # with it whatever the skew between the two clocks
        lag = now - sent_at if sent_at is not None else timedelta(0)
        if name != "follow" and not name.startswith("user_send_"):  # a reaction, a form: no window of the spec's
            log.info("Zalo OA: event %r ignored", name)
            return
        follows = await asyncio.to_thread(record_interaction, self.service.db, user, at,
                                          True if name == "follow" else None)
        if name == "follow":
            if not follows:  # a late retry of a follow the member has since undone
                log.info("Zalo OA: a follow by %s older than their unfollow; ignored", user)
                return
            outcome = await asyncio.to_thread(self.service.on_text, user, "/start", now, key)
        elif name == "user_send_text":
            text = str(message.get("text") or "")
            if ACTION.match(text.strip()):
                outcome = await asyncio.to_thread(self.service.on_action, user, text.strip(), now, key, taken_up)
            else:  # a typed answer counts only for the question delivered before it was typed (Zalo's time)
                outcome = await asyncio.to_thread(self.service.on_text, user, text, now, key, sent_at, taken_up)
        elif name.startswith("user_send_"):
            outcome = await asyncio.to_thread(self.service.on_text, user, "", now, key)
            if outcome.replies:
                first = outcome.replies[0]
                outcome.replies[0] = Reply(f"{NOT_TEXT_HINT} {first.text}", first.choices, files=first.files)
        if outcome.redelivered and not outcome.replies:
            return False
        await self.send_outcome(user, outcome, lag)
        return None

    async def send_outcome(self, user: str, outcome: Outcome, lag: timedelta = timedelta(0)) -> int:
        """Send the replies; when they show a quiz question, tell the conversation when it was delivered:
        as soon as Zalo took it, on our clock less ``lag`` (ours ahead of Zalo's, as the event measured it)."""
        sent, last = 0, False
        for message in render(outcome):
            last = await self._send(user, message)
            sent += last
        if outcome.question and last:
            await asyncio.to_thread(self.service.question_delivered, user, outcome.question, self.clock() - lag)
        elif outcome.question:
            await asyncio.to_thread(self.service.question_lost, user, outcome.question)
        return sent

    async def _send(self, user: str, message: OAMessage, tries: int = 4) -> bool:
        for attempt in range(tries):
            try:
                await self.client.send_cs(user, message.text, message.buttons)
                return True
            except OAError as exc:
                if exc.maybe_delivered:  # it left: sent again, the member would read it twice (and we pay twice)
                    log.warning("Zalo OA: a reply to %s got no answer in time; not sent again (%s)", user, exc)
                    return True
                if not exc.transient or attempt == tries - 1:
                    log.warning("Zalo OA: a reply to %s failed: %s", user, exc)
                    return False
                from bot.channels.zalo.client import backoff

                await asyncio.sleep(backoff(attempt, base=0.2, cap=5.0))
        return False


def _number(value: Any) -> int | None:
    """Zalo's times are epoch milliseconds, as a number or a string of digits."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
