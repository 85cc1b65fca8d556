"""The conversation adapter: ``ZaloChannel`` turns incoming Zalo updates (from the poller or the webhook)
into ChatService calls and sends the rendered replies, one chat in order and chats in parallel. It exists so
that the dialogue logic of the Zalo side (private chats, groups, non-text messages, retries, counting what was
sent against the quota) lives in one place, apart from how updates arrive and how the outbox delivers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from bot.channels.zalo.client import ZaloClient, ZaloError, backoff
from bot.channels.zalo.quota import ZaloQuota
from bot.channels.zalo.mentions import strip_mention
from bot.channels.zalo.rendering import Outgoing, render
from bot.channels.zalo.updates import in_group
from bot.domain.replies import Outcome, Reply
from bot.channels.ordering import InOrderPerKey
from bot.metrics import FAILURES, handling
from bot.services.chat import ChatService
from bot.services.inbox import Inbox
from bot.services.linking import code_said
from bot.timeutil import utcnow

log = logging.getLogger(__package__)  # "bot.channels.zalo", the one logger name the channel had before the split

EVENT_TEXT = "message.text.received"
SEND_TRIES = 5
NOT_TEXT_HINT = "Bot chỉ đọc được tin nhắn chữ."
STRAY_HINTS = 3  # hints a linked member's stray messages ("ok", stickers) get per STRAY_PERIOD
STRAY_PERIOD = timedelta(minutes=15)
CHART_FAILED = ("📎 Chưa gửi được biểu đồ qua Zalo lúc này. Đồng chí nhận qua Telegram (gõ /baocao) hoặc đề nghị "
                "quản trị viên xuất bằng lệnh «hoctap report».")


class ZaloChannel:
    """Turns Zalo updates into ChatService calls and sends the rendered replies.

    ``dispatch`` returns at once: updates of one chat are handled in order, chats in parallel.
    """

    def __init__(self, service: ChatService, client: ZaloClient, *, bot_names: Sequence[str] = (),
                 share_link: str | None = None, shelf=None, quota: ZaloQuota | None = None,
                 clock: Callable[[], datetime] = utcnow, inbox: Inbox | None = None):
        """``bot_names``: every name a group mention of the bot may use (see ``mentions.bot_names``);
        ``inbox``: where each update is kept until handled (``take``)."""
        self.service, self.client, self.inbox = service, client, inbox
        self.bot_names, self.share_link = list(bot_names), share_link
        self.shelf, self.quota, self.clock = shelf, quota, clock
        self.handled = 0  # updates taken up, redeliveries included
        self.done = 0  # updates finished (answered, skipped or failed)
        self._order = InOrderPerKey()
        self._replays: set[asyncio.Task] = set()

    async def take(self, update: dict[str, Any], *, polled: bool = False) -> None:
        """Keep the update, then handle it. Zalo counts it delivered once the webhook is answered or the
        poll returned it, and never hands it out again: a process killed while handling it would lose it.
        A database that cannot keep it raises (the webhook answers 500, for Zalo to try again); a polled
        update is handled all the same (Zalo will not hand it out again)."""
        key = (update.get("message") or {}).get("message_id") if isinstance(update, dict) else None
        if self.inbox is not None and key:
            try:
                await asyncio.to_thread(self.inbox.keep, [(str(key), update)], self.clock())
            except Exception:
                if not polled:
                    raise
                log.exception("Zalo: update %s could not be kept; handled without a copy", key)
        self.dispatch(update)

    async def take_up_kept(self) -> int:
        """Handle the updates a process killed before handling them kept, and a moment later answer again those
        it recorded and never answered (private chats: a group mention is not worth a late answer); how many
        were handled now."""
        if self.inbox is None:
            return 0
        started = self.clock()
        replay = asyncio.create_task(self.inbox.replay_unanswered(
            started, lambda u: self.dispatch(u, taken_up=True), _private))
        self._replays.add(replay)
        replay.add_done_callback(self._replays.discard)
        return await self.inbox.hand_on_unhandled(started, self.dispatch, _private)

    def dispatch(self, update: dict[str, Any], *, taken_up: bool = False) -> asyncio.Task:
        """``taken_up``: an update a killed process recorded and never answered (``Inbox.replay_unanswered``)."""
        message = update.get("message") if isinstance(update, dict) else None
        chat = message.get("chat") if isinstance(message, dict) else None
        key = str(chat.get("id", "")) if isinstance(chat, dict) else ""
        return self._order.submit(key, lambda: self._handle_logged(update, taken_up))

    @property
    def busy(self) -> bool:
        """Updates are being handled (a cached bot is not dropped then)."""
        return bool(self._order.tasks)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for the updates being handled (at shutdown); answers still to come again are the next process's."""
        for replay in list(self._replays):
            replay.cancel()
        await self._order.drain(timeout)
        if self.inbox is not None:
            await self.inbox.close()

    async def _handle_logged(self, update: dict[str, Any], taken_up: bool = False) -> None:
        mid = ((update.get("message") or {}) if isinstance(update, dict) else {}).get("message_id")
        try:
            with handling("zalo"):
                owed = await self.handle(update, taken_up) is False and not taken_up  # a take-up is the last try
        except Exception:  # noqa: BLE001 - one bad update must not stop the bot
            log.exception("Zalo: update %s failed", mid)
            FAILURES.labels("zalo").inc()
        else:
            if self.inbox is not None and mid and not owed:
                self.inbox.answered(str(mid))
        finally:
            self.done += 1

    async def handle(self, update: dict[str, Any], taken_up: bool = False) -> bool | None:
        """False: a delivery again of an update recorded before, answered with nothing (its reply is owed by
        whoever recorded it, or by the take-up after a restart: the update is not marked answered)."""
        event = str(update.get("event_name") or "")
        message = update.get("message") if isinstance(update.get("message"), dict) else {}
        chat = message.get("chat") or {}
        sender = message.get("from") or {}
        chat_id = str(chat.get("id") or sender.get("id") or "")
        message_id = message.get("message_id")
        if not chat_id or not message_id:
            log.info("Zalo: %s update without a chat or message id; ignored", event or "unnamed")
            return
        key, now = str(message_id), self.clock()
        self.handled += 1
        if in_group(update):
            await self._group(chat_id, sender, message, event, key, now)
            return
        user_id = str(sender.get("id") or chat_id)
        if event == EVENT_TEXT:
            outcome = await asyncio.to_thread(self.service.on_text, user_id, str(message.get("text") or ""), now, key,
                                              platform_time(message.get("date")) or now, taken_up)
        elif event.startswith("message."):  # image, sticker, voice, unsupported, or a new kind
            outcome = await asyncio.to_thread(self.service.on_text, user_id, "", now, key)
            if outcome.replies:
                first = outcome.replies[0]
                outcome.replies[0] = Reply(f"{NOT_TEXT_HINT} {first.text}", first.choices, files=first.files)
        else:
            log.info("Zalo: unknown event %r; ignored", event)
            return None
        if outcome.redelivered and not outcome.replies:
            return False
        # rationed: stray text outside a quiz, and stickers or images at any time (never an answer); text during a quiz
        # is always told it was not taken as an answer
        rationed = outcome.stray or (event != EVENT_TEXT and outcome.keeps_offer)
        if rationed and not await self._may_hint(chat_id, now):
            log.info("Zalo: chat %s had its %d hints this quarter hour; a stray message left unanswered", chat_id,
                     STRAY_HINTS)
            return None
        await self.send_outcome(chat_id, outcome, user_id)
        return None

    async def _may_hint(self, chat_id: str, now: datetime) -> bool:
        """Every reply costs one of the bot's monthly messages: a linked member's stray messages (no command, answer
        or choice; outside a quiz, or not text) get the hint ``STRAY_HINTS`` times per quarter hour of the clock,
        then nothing until the next.
        Counted in the database (``processed_updates``), so that every process serving the bot agrees."""
        chat = hashlib.sha256(f"{self.share_link}:{chat_id}".encode()).hexdigest()[:24]  # each bot's own
        slot = int(now.timestamp() // STRAY_PERIOD.total_seconds())
        for n in range(STRAY_HINTS):
            if await asyncio.to_thread(self.service.first_time, f"stray:{chat}:{slot}:{n}", now):
                return True
        return False

    async def _group(self, chat_id: str, sender: dict, message: dict, event: str, key: str, now: datetime) -> None:
        """In a group: never anyone's results; point to a private chat. Zalo gives the bot only the group
        messages that mention it or reply to one of its own (a reply carries no mention, and the update does not
        say what it replies to): a mention is answered, and a link code in any of them voided; a plain reply
        ("cảm ơn") gets the pointer once an hour per group, since each answer costs a message of the quota."""
        text = str(message.get("text") or "")
        if event != EVENT_TEXT:
            return
        if not await asyncio.to_thread(self.service.first_time, key, now):
            return
        name = str(sender.get("display_name") or sender.get("name") or "")
        said = strip_mention(text, self.bot_names)
        if "@" not in text and code_said(said) is None:  # any "@": a mention by a name we may not know
            group = hashlib.sha256(f"{self.share_link}:{chat_id}".encode()).hexdigest()[:24]  # each bot's own
            if not await asyncio.to_thread(self.service.first_time, f"group-hint:{group}:{now:%Y%m%d%H}", now):
                return
        reply = await asyncio.to_thread(self.service.group_reply, name, said, self.share_link)
        await self._send_all(chat_id, [Outgoing(text=reply.text)])

    async def send_outcome(self, chat_id: str, outcome: Outcome, user_id: str | None = None) -> int:
        """Send the replies; when they show a quiz question, tell the conversation when it was delivered
        (a typed answer counts only for a question the member had before typing)."""
        put = self.shelf.put if self.shelf is not None else None
        photo_url = (lambda f: put(f.data, f.filename)) if put else None
        delivered = await self._send_all(chat_id, render(outcome, photo_url))
        if outcome.question and delivered and delivered[-1] is not None:
            await asyncio.to_thread(self.service.question_delivered, user_id or chat_id, outcome.question, delivered[-1])
        elif outcome.question and delivered:
            await asyncio.to_thread(self.service.question_lost, user_id or chat_id, outcome.question)
        return sum(1 for at in delivered if at is not None)

    async def _send_all(self, chat_id: str, messages: list[Outgoing]) -> list[datetime | None]:
        """Send in order; for each message, when Zalo delivered it (None: it could not be sent)."""
        delivered: list[datetime | None] = []
        for out in messages:
            at = await self._send(chat_id, out)
            if at is None and out.photo:
                at = await self._send(chat_id, Outgoing(text=CHART_FAILED))
            delivered.append(at)
        sent = sum(1 for at in delivered if at is not None)
        if sent and self.quota is not None:
            await asyncio.to_thread(self.quota.add, sent, self.clock())
        return delivered

    async def _send(self, chat_id: str, out: Outgoing) -> datetime | None:
        """Send one message; when Zalo delivered it (its clock, else ours), or None on failure."""
        method = "sendPhoto" if out.photo else "sendMessage"
        for attempt in range(SEND_TRIES):
            started = self.clock()
            try:
                if out.photo:
                    result = await self.client.send_photo(chat_id, out.photo)
                else:
                    result = await self.client.send_message(chat_id, out.text or "")
                return platform_time((result or {}).get("date") if isinstance(result, dict) else None) or self.clock()
            except ZaloError as exc:
                if exc.maybe_delivered:  # the request left and no answer came: most likely it went; never twice
                    log.warning("Zalo: %s to %s: %s; taken as delivered, not sent again", method, chat_id, exc)
                    return started  # (counted against the quota; not delivered before the request left)
                used_up = exc.status == 429 and self.quota is not None and \
                    self.quota.exhausted == self.quota.month(self.clock())
                # 403 is documented as "internal error": once more (the member just wrote, so no block)
                again = exc.transient or (exc.status == 403 and attempt == 0)
                if not again or used_up or attempt == SEND_TRIES - 1:
                    log.warning("Zalo: %s to %s failed: %s%s", method, chat_id, exc,
                                " (the monthly quota is used up)" if used_up else "")
                    return None
                wait = backoff(attempt)
                log.warning("Zalo: %s to %s: %s; retrying in %.1fs", method, chat_id, exc, wait)
                await asyncio.sleep(wait)
        return None


def platform_time(ms: Any) -> datetime | None:
    """A Zalo time (epoch milliseconds) as an aware UTC datetime; None when absent or not plausible."""
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 < ms < 10**14:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _private(update: dict) -> bool:
    return not in_group(update)
