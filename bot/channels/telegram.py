"""Telegram channel: python-telegram-bot for transport and dispatch, nothing else.

Handlers turn updates into ChatService calls (run in a worker thread: the database is synchronous)
and render the neutral replies: choices become inline buttons, ``edit`` edits the pressed message.
No conversation state lives here; PTB's persistence and ConversationHandler are not used.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import threading
import warnings
import weakref
from datetime import datetime
from typing import Awaitable, Callable

os.environ.setdefault("PTB_TIMEDELTA", "1")  # RetryAfter.retry_after as a timedelta, without warnings

import aiohttp

from telegram import (
    Bot, BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, KeyboardButton, Message, ReplyKeyboardMarkup,
    ReplyKeyboardRemove, Update, WebAppInfo,
)
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import (
    Application, ApplicationBuilder, BaseUpdateProcessor, CallbackQueryHandler, ContextTypes, MessageHandler, filters,
)
from telegram.warnings import PTBUserWarning

from bot.channels.telegram_request import AiohttpRequest, KeptUpdatesRequest
from bot.domain.replies import Outcome, Reply, split_text
from bot.metrics import FAILURES, RATE_LIMITED, handling
from bot.services.chat import ChannelTraits, ChatService, parse_command
from bot.services.inbox import Inbox
from bot.storage.db import TRANSIENT_ERRORS
from bot.timeutil import utcnow

log = logging.getLogger(__name__)
# Set by whoever awaits an update's handling (the webhook endpoint) to learn that it failed: PTB hands
# a handler's exception to the error handler, not to the caller of ``process_update``.
HANDLING_FAILURES: contextvars.ContextVar[list | None] = contextvars.ContextVar("handling_failures", default=None)
# The edits and the toasts use the raw do_api_request on purpose: PTB would build a Message (or parse a
# bool) per call, a large part of the CPU of a button press. Only these are quiet.
warnings.filterwarnings("ignore", message=r"Please use 'Bot\.(sendMessage|editMessageText|answerCallbackQuery)'",
                        category=PTBUserWarning)

TOAST_WAIT = 1.0  # seconds a press's handling waits for its toast before the chat's next update may go
TRAITS = ChannelTraits(name="telegram", text_limit=4096, has_buttons=True, replies_to_redelivered_text=True)
MENU = [
    BotCommand("hoc", "Đọc tài liệu đợt học tập"),
    BotCommand("lambai", "Làm bài kiểm tra"),
    BotCommand("ketqua", "Xem kết quả của tôi"),
    BotCommand("trogiup", "Hướng dẫn sử dụng"),
]
CONTACT_BUTTON = "📱 Chia sẻ số điện thoại"
MAX_TRIES = 6


class _SentByAUser(filters.MessageFilter):
    """A message with ``from``: the member is found by it (Telegram may leave it out, e.g. for a channel's post)."""

    def filter(self, message: Message) -> bool:
        return message.from_user is not None


SENT_BY_A_USER = _SentByAUser(name="SENT_BY_A_USER")


class StillFlooded(Exception):
    """Telegram answered 429 to every try: the call was not made; ``retry_after`` seconds to wait."""

    def __init__(self, what: str, retry_after: float):
        super().__init__(f"{what}: flood control for {retry_after:.0f}s more")
        self.retry_after = retry_after


async def with_retries(call: Callable[[], Awaitable], what: str):
    """Run a Bot API call: wait ``retry_after`` on 429, back off on network errors and 5xx.

    Returns None when Telegram refuses for good (blocked by the user, chat gone); raises
    StillFlooded (logged here) when flood control lasts longer than MAX_TRIES waits.
    """
    delay = 0.5
    for attempt in range(1, MAX_TRIES + 1):
        try:
            return await call()
        except RetryAfter as exc:
            RATE_LIMITED.labels("telegram", "api").inc()
            with warnings.catch_warnings():  # PTB 22 warns that the type will become timedelta
                warnings.simplefilter("ignore")
                raw = exc.retry_after
            wait = raw.total_seconds() if hasattr(raw, "total_seconds") else float(raw)
            if attempt == MAX_TRIES:
                log.warning("%s: still under flood control after %d tries; giving up for now "
                            "(Telegram asks to wait %.1fs more)", what, MAX_TRIES, wait)
                raise StillFlooded(what, wait) from None
            log.warning("%s: flood control, waiting %.1fs", what, wait)
            await asyncio.sleep(wait)
        except Forbidden as exc:
            log.info("%s: refused by Telegram (%s)", what, exc.message)
            return None
        except (TimedOut, NetworkError) as exc:
            if isinstance(exc, BadRequest) or attempt == MAX_TRIES:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, exc.message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
    return None


def markup(reply: Reply, *, clear_keyboard: bool):
    if reply.ask_contact:
        return ReplyKeyboardMarkup([[KeyboardButton(CONTACT_BUTTON, request_contact=True)]],
                                   resize_keyboard=True, one_time_keyboard=True)
    rows = [[InlineKeyboardButton(c.label, callback_data=c.action) for c in row] for row in reply.choices]
    rows += link_rows(reply)
    if rows:
        return InlineKeyboardMarkup(rows)
    return ReplyKeyboardRemove() if clear_keyboard else None


def link_rows(reply: Reply) -> list[list[InlineKeyboardButton]]:
    """The study page: a Mini App button (Telegram opens only https ones) and the plain link."""
    link = reply.link
    if link is None:
        return []
    rows = []
    if link.mini_app_url and link.mini_app_url.startswith("https://"):
        rows.append([InlineKeyboardButton(link.label, web_app=WebAppInfo(link.mini_app_url))])
    rows.append([InlineKeyboardButton("🌐 Mở bằng trình duyệt" if rows else link.label, url=link.url)])
    return rows


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Handles updates of different chats concurrently, and one chat's updates in arrival order.

    A member's double tap must be seen in order (the second finds the first recorded), while one
    slow database write should not hold up every other member.
    """

    def __init__(self, max_concurrent_updates: int = 16, on_shutdown: Callable[[], Awaitable] | None = None):
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}  # chat -> (lock, updates holding or waiting)
        self._on_shutdown = on_shutdown  # run by Application.shutdown(), however the application is run

    async def process_update(self, update: object, coroutine: Awaitable) -> None:
        """The chat's turn first, then one of the ``max_concurrent_updates`` slots (PTB takes the slot
        first): updates queued behind their own chat hold no slot, so a member sending thirty messages
        at once does not stall everyone else."""
        chat = getattr(update, "effective_chat", None)
        key = chat.id if chat else 0
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                async with self._semaphore:  # PTB's own slots, so that its counts stay right
                    await self.do_process_update(update, coroutine)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def do_process_update(self, update: object, coroutine: Awaitable) -> None:
        with handling("telegram"):
            await coroutine

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        if self._on_shutdown is not None:
            await self._on_shutdown()


class TelegramChannel:
    """Wires a ChatService into a PTB Application."""

    def __init__(self, service: ChatService, clock: Callable[[], datetime] = utcnow):
        self.service = service
        self.clock = clock
        self._toasts: set[asyncio.Task] = set()  # toasts still on their way after their update was handled
        self.inbox = Inbox(service.db, "telegram", TRAITS.name)  # what polling fetched, until answered
        self._polling = False

    def build(self, token: str, base_url: str, base_file_url: str | None = None, *,
              on_start: Callable[[Application], Awaitable] | None = None,
              on_stop: Callable[[Application], Awaitable] | None = None, webhook: bool = False) -> Application:
        """The Application; ``on_start``/``on_stop`` run in its event loop (scheduler, sender).
        ``webhook``: without an updater (updates come from ``bot/channels/telegram_webhook.py``)."""

        async def post_init(app: Application) -> None:
            await self._post_init(app)
            if on_start is not None:
                await on_start(app)

        # polling: each batch is kept in the database before Telegram is told it arrived (``_take_up_kept``)
        updates = AiohttpRequest(connections=1) if webhook else KeptUpdatesRequest(self._keep, connections=1)
        requests = (AiohttpRequest(), updates)
        builder = (ApplicationBuilder().token(token).base_url(base_url).post_init(post_init)
                   .request(requests[0]).get_updates_request(requests[1])
                   .concurrent_updates(PerChatUpdateProcessor(on_shutdown=self.inbox.close)))
        if on_stop is not None:
            builder = builder.post_shutdown(on_stop)
        if webhook:
            builder = builder.updater(None)
        if base_file_url:
            builder = builder.base_file_url(base_file_url)
        app = builder.build()
        # new messages only: an edit is not a new command, and a business chat's message is not the member's own
        # chat (neither comes under our allowed_updates); a private message must name its sender
        private = filters.UpdateType.MESSAGE & filters.ChatType.PRIVATE & SENT_BY_A_USER
        app.add_handler(MessageHandler(private & filters.CONTACT, self.on_contact))
        app.add_handler(MessageHandler(private & filters.TEXT, self.on_text))
        app.add_handler(MessageHandler(private & ~filters.TEXT & ~filters.CONTACT & ~filters.StatusUpdate.ALL, self.on_other))
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.ChatType.GROUPS & filters.COMMAND,
                                       self.on_group_command))
        app.add_handler(CallbackQueryHandler(self.on_button))
        app.add_error_handler(self.on_error)
        _REQUESTS[app] = requests
        return app

    async def _post_init(self, app: Application) -> None:
        try:
            await with_retries(lambda: app.bot.set_my_commands(MENU), "setMyCommands")
        except StillFlooded:
            pass  # logged; the menu is only a convenience and is set again at the next start
        if app.updater is not None:
            await self._take_up_kept(app)

    def _keep(self, batch: list[tuple[str, dict]]) -> None:
        self.inbox.keep(batch, self.clock())

    def _answered(self, update: Update) -> None:
        """The update's reply went out: a restart need not take it up (polling only: nothing is kept otherwise)."""
        if self._polling:
            self.inbox.answered(str(update.update_id))

    async def _take_up_kept(self, app: Application) -> None:
        """Updates a process polling before this one kept and never answered (it was killed): Telegram counts them
        delivered, so they are handled first, before polling: those never recorded as new, the others by the
        conversation's redelivery path (what they show now, nothing recorded twice). Telegram is first told that
        every kept update arrived, lest one it still holds come twice: if it cannot be told, they are left to
        it."""
        self._polling = True
        keys = await asyncio.to_thread(self.inbox.keys)
        if not keys:
            return
        kept = [update for _, update in await asyncio.to_thread(self.inbox.unanswered, self.clock())]
        try:
            await with_retries(lambda: app.bot.get_updates(offset=max(int(k) for k in keys) + 1, limit=1, timeout=0),
                               "getUpdates")
        except (TelegramError, StillFlooded) as exc:
            log.warning("getUpdates to confirm the kept updates failed (%s): Telegram hands them out again", exc)
            return
        # group commands are not recorded as handled: only what a member sent the bot itself is taken up again
        taken = [u for u in kept if u.get("callback_query") or
                 ((u.get("message") or {}).get("chat") or {}).get("type") == "private"]
        for raw in taken:
            try:
                update = Update.de_json(raw, app.bot)
            except Exception as exc:  # noqa: BLE001 - kept before it was checked (``readable_or_bare``): skipped
                log.warning("kept update %s: python-telegram-bot cannot read it (%s); skipped",
                            raw.get("update_id"), exc.__class__.__name__)
                continue
            await app.update_queue.put(update)
        if taken:
            log.warning("%d update(s) received before the last stop and never answered: handling them now", len(taken))

    # -- handlers -----------------------------------------------------------------------------
    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        outcome = await asyncio.to_thread(
            self.service.on_text, str(update.effective_user.id), message.text or "", self.clock(),
            str(update.update_id))
        await self.render(context, message.chat_id, outcome, clear_keyboard=(message.text or "").startswith("/start"),
                          update=update)
        self._answered(update)

    async def on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        outcome = await asyncio.to_thread(
            self.service.on_text, str(update.effective_user.id), "", self.clock(), str(update.update_id))
        await self.render(context, message.chat_id, outcome, update=update)
        self._answered(update)

    async def on_contact(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        contact = message.contact
        own = contact.user_id is not None and contact.user_id == update.effective_user.id
        outcome = await asyncio.to_thread(
            self.service.on_contact, str(update.effective_user.id), contact.phone_number, own, self.clock(),
            str(update.update_id))
        await self.render(context, message.chat_id, outcome, clear_keyboard=True, update=update)
        self._answered(update)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        outcome = await asyncio.to_thread(
            self.service.on_action, str(query.from_user.id), query.data or "", self.clock(), str(update.update_id))
        if outcome.redelivered:  # recorded when it first came: nothing is done twice
            log.info("update %s: a redelivered button press; already handled", update.update_id)
            # its answer may have been lost too, and the button would spin on: answered again (Telegram refusing an
            # answered or too old query is logged at info by ``_answer_query``)
            await self._answer_query(context.bot, query, None)
            if outcome.replies and outcome.replies[0].edit and query.message is not None:
                # its reply may have been lost: the pressed message shows again where the member is (the same
                # text again changes nothing), and a result's further parts follow
                await self.render(context, query.message.chat.id, outcome, pressed=query.message, update=update)
            self._answered(update)
            return
        # the toast and the next question travel at once: neither waits for the other's round trip
        toast = asyncio.create_task(self._answer_query(context.bot, query, outcome.notice))
        self._toasts.add(toast)
        toast.add_done_callback(self._toasts.discard)
        chat_id = query.message.chat.id if query.message else query.from_user.id
        await self.render(context, chat_id, outcome, pressed=query.message, update=update)
        self._answered(update)
        # a slow toast does not hold the chat's next update (it goes on alone, kept in ``_toasts``)
        await asyncio.wait({toast}, timeout=TOAST_WAIT)

    async def _answer_query(self, bot, query, notice: str | None) -> None:
        """Stop the button's spinner (with the toast), in one try: Telegram takes an answer only for about 15 s,
        and the reply shows where the member is without it. A toast lost is logged, never an update failed."""
        kwargs = {"callback_query_id": query.id} | ({"text": notice[:200]} if notice else {})
        try:
            await bot.do_api_request("answerCallbackQuery", api_kwargs=kwargs)
        except RetryAfter:
            RATE_LIMITED.labels("telegram", "api").inc()
            log.info("answerCallbackQuery: flood control; the toast is left out")
        except TelegramError as exc:
            log.info("answerCallbackQuery: %s; the toast is left out", exc.message)

    async def on_group_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A command in a group: nobody's results are shown there; a link code posted with it (``/start <code>``)
        is cancelled, since everyone in the group read it. A command addressed to another bot is not ours."""
        text = update.effective_message.text or ""
        addressed = text.split(maxsplit=1)[0].partition("@")[2] if text.strip() else ""
        if addressed and addressed.casefold() != (context.bot.username or "").casefold():
            return
        name = update.effective_user.first_name if update.effective_user else ""
        reply = await asyncio.to_thread(self.service.group_reply, name, parse_command(text)[1])
        try:
            await with_retries(lambda: update.effective_message.reply_text(reply.text), "sendMessage")
        except StillFlooded:
            pass  # logged; the group redirect is not worth a later message

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = getattr(update, "update_id", None)
        log.error("update %s failed: %r", update_id, context.error, exc_info=context.error)
        FAILURES.labels("telegram").inc()
        failures = HANDLING_FAILURES.get()
        if failures is not None and isinstance(context.error, TRANSIENT_ERRORS):
            # a webhook delivery waits to learn it, and Telegram delivers it again once the database is back;
            # any other failure would fail again each time (a refused reply comes after the work was
            # committed; a bug fails the same way), so the update is answered as taken, and the log has it
            failures.append(context.error)

    # -- rendering ----------------------------------------------------------------------------
    async def render(self, context, chat_id: int, outcome: Outcome, *, pressed: Message | None = None,
                     clear_keyboard: bool = False, update: Update | None = None) -> None:
        """Send (or edit) the replies in order. What flood control keeps from being sent now goes
        to the outbox, to be delivered as new messages once the limit has passed."""
        pieces = [(reply, f) for reply in fit(outcome.replies) for f in (None, *reply.files)]
        for i, (reply, f) in enumerate(pieces):
            try:
                await self._render_piece(context.bot, chat_id, reply, f, pressed, clear_keyboard)
            except StillFlooded as exc:
                rest = [Reply(r.text, r.choices) if file is None else Reply(f"📎 {file.filename}", files=[file])
                        for r, file in pieces[i:]]
                await self._later(update, rest, exc.retry_after)
                return

    async def _render_piece(self, bot, chat_id: int, reply: Reply, f, pressed: Message | None,
                            clear_keyboard: bool) -> None:
        """One message: a reply's text (an edit of ``pressed`` where asked and possible), or one of its files."""
        if f is not None:
            if f.kind == "photo":
                await with_retries(lambda: bot.send_photo(chat_id, photo=f.data, filename=f.filename), "sendPhoto")
            else:
                await with_retries(lambda: bot.send_document(chat_id, document=f.data, filename=f.filename),
                                   "sendDocument")
            return
        rm = markup(reply, clear_keyboard=clear_keyboard)
        if reply.edit and pressed is not None and isinstance(rm, (InlineKeyboardMarkup, type(None))):
            if await self._edit(bot, pressed, reply, rm):
                return
        await with_retries(lambda: bot.send_message(chat_id, reply.text, reply_markup=rm), "sendMessage")

    async def _later(self, update: Update | None, replies: list[Reply], wait: float) -> None:
        user = update.effective_user if update is not None else None
        if user is None:
            log.warning("%d message(s) lost to flood control (no member to queue them for)", len(replies))
            return
        queued = await asyncio.to_thread(self.service.reply_later, str(user.id), replies, str(update.update_id),
                                         self.clock(), wait)
        if queued:
            log.warning("update %s: %d message(s) queued in the outbox until flood control ends (%.0fs)",
                        update.update_id, queued, wait)
        else:
            log.warning("update %s: %d message(s) lost to flood control (chat not linked to a member)",
                        update.update_id, len(replies))

    async def _edit(self, bot, message: Message, reply: Reply, rm) -> bool:
        try:
            kwargs = {"chat_id": message.chat.id, "message_id": message.message_id, "text": reply.text}
            if rm is not None:
                kwargs["reply_markup"] = rm
            await with_retries(lambda: bot.do_api_request("editMessageText", api_kwargs=kwargs), "editMessageText")
            return True
        except BadRequest as exc:
            if "not modified" in exc.message:
                return True
            log.info("cannot edit message %s (%s); sending a new one", message.message_id, exc.message)
            return False


def fit(replies: list[Reply]) -> list[Reply]:
    """Replies longer than a Telegram message become several; the buttons stay on the last part."""
    out: list[Reply] = []
    for reply in replies:
        parts = split_text(reply.text, TRAITS.text_limit)
        if len(parts) <= 1:
            out.append(reply)
            continue
        out += [Reply(p, edit=reply.edit and i == 0) for i, p in enumerate(parts[:-1])]
        out.append(Reply(parts[-1], reply.choices, ask_contact=reply.ask_contact, files=reply.files, link=reply.link))
    return out


class BackgroundBot:
    """Runs an Application's long polling in a thread of its own (tests, playground, benchmarks)."""

    def __init__(self, app: Application, poll_timeout: int = 1):
        self.app = app
        self.poll_timeout = poll_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="telegram-bot", daemon=True)

    def start(self) -> BackgroundBot:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        await initialize(self.app)
        if self.app.post_init:
            await self.app.post_init(self.app)
        await self.app.updater.start_polling(poll_interval=0.0, timeout=self.poll_timeout)
        await self.app.start()

    def stop(self) -> None:
        async def _stop():
            if self.app.updater.running:
                await self.app.updater.stop()
            if self.app.running:
                await self.app.stop()
            await self.app.shutdown()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundBot:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


SEND_CONNECTIONS = 8  # enough for ~30 msg/s at 250 ms per request
_REQUESTS: weakref.WeakKeyDictionary[Application, tuple[AiohttpRequest, ...]] = weakref.WeakKeyDictionary()


async def initialize(app: Application) -> None:
    """``app.initialize()``; when it fails (the token refused, Telegram out of reach) the HTTP sessions it
    opened are closed too: PTB leaves them open, and aiohttp would print a warning as the process ends."""
    try:
        await app.initialize()
    except BaseException:
        for request in _REQUESTS.get(app, ()):
            await request.shutdown()
        raise


def sending_bot(token: str, base_url: str) -> Bot:
    """A Bot for the outbox (its files; text goes over the transport's own session): a pool of
    connections to match the sends it keeps in flight (PTB's default for a bare Bot is one)."""
    return Bot(token, base_url=base_url, request=AiohttpRequest(connections=SEND_CONNECTIONS))


def api_error(status: int, answer: dict | None):
    """The sender's ``SendError`` for a Bot API answer that is not ``ok``, with the kinds PTB's
    exceptions gave (https://core.telegram.org/bots/api#making-requests): ``parameters.retry_after``
    (429) waits, 403 and 400 are permanent refusals, anything else (401/404 token, 409, 5xx, an answer
    that is not JSON) is tried again later."""
    from bot.outbox.sender import SendError

    answer = answer if isinstance(answer, dict) else {}
    description = str(answer.get("description") or f"HTTP {status}")
    parameters = answer.get("parameters") if isinstance(answer.get("parameters"), dict) else {}
    if parameters.get("retry_after"):
        return SendError("retry_after", "flood control", float(parameters["retry_after"]))
    message = description.removeprefix("Error: ").removeprefix("[Error]: ").removeprefix("Bad Request: ")
    if message != description:
        message = message.capitalize()  # as PTB words it (these reasons are stored and shown)
    if status in (403, 400):
        return SendError("permanent", message)
    if status in (401, 404):
        return SendError("transient", f"InvalidToken: {message}")
    if status == 409:
        return SendError("transient", f"Conflict: {message}")
    if parameters.get("migrate_to_chat_id"):
        return SendError("transient", f"ChatMigrated: {message}")
    return SendError("transient", message if status == 502 else f"{message} ({status})")


class TelegramTransport:
    """Outbox delivery over the Bot API: a plain ``sendMessage`` POST of pre-encoded JSON on one
    shared aiohttp session (no PTB request or ``Message`` object per send; aiohttp's pool costs
    about a fifth of httpx's CPU per request, which is most of a broadcast's cost); answers become
    the sender's SendError kinds (``api_error``). Attachments (rare: reports) go through PTB's
    multipart upload."""

    channel = "telegram"

    def __init__(self, bot: Bot, timeout: float = 5.0):
        self.bot, self.timeout = bot, timeout  # PTB's connect and read timeouts
        self._url = f"{bot.base_url}/sendMessage"
        self._token = bot.token
        self._http: aiohttp.ClientSession | None = None
        self._bodies: dict[int, tuple[Reply, list[bytes]]] = {}  # id(reply) -> (reply, its messages' JSON)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:  # made in the event loop that sends
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=SEND_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(sock_connect=self.timeout, sock_read=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(), headers=JSON_HEADERS)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> TelegramTransport:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _encoded(self, reply: Reply) -> list[bytes]:
        """``{"text": ..., "reply_markup": ...}`` as bytes for each message of the reply (more than one
        when longer than Telegram's 4,096 characters, the buttons on the last), once per Reply (a
        broadcast shares one)."""
        cached = self._bodies.get(id(reply))
        if cached is not None and cached[0] is reply:
            return cached[1]
        encoded = []
        for part in fit([reply]):
            fields: dict = {"text": part.text}
            if (rm := markup(part, clear_keyboard=False)) is not None:
                fields["reply_markup"] = rm.to_dict()
            encoded.append(json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode())
        if len(self._bodies) >= 256:
            self._bodies.clear()
        self._bodies[id(reply)] = (reply, encoded)
        return encoded

    async def deliver(self, external_id: str, reply: Reply, attachment: tuple[str, bytes] | None) -> None:
        from bot.outbox.sender import SKIP_PARTS, SendError, after_parts, unanswered

        parts, skip = self._encoded(reply), SKIP_PARTS.get()  # skip: parts an earlier try delivered
        for done, encoded in enumerate(parts[skip:], start=skip):
            body = b'{"chat_id":%d,%s' % (int(external_id), encoded[1:])
            try:
                async with self._session().post(self._url, data=body) as response:
                    answer = await response.read()  # read to the end: the connection is then reused
                    status = response.status
            except aiohttp.ConnectionTimeoutError:  # nothing left: safe to try again
                raise after_parts(SendError("transient", "Could not connect in time"), done) from None
            except asyncio.TimeoutError:  # sent, no answer: Telegram may have delivered it; never twice
                raise unanswered("no answer in time", done, len(parts)) from None
            except aiohttp.ClientError as exc:
                reason = f"{type(exc).__name__}: {exc}".replace(self._token, "<token>")
                raise after_parts(SendError("transient", reason), done) from None
            if status != 200:
                try:
                    parsed = json.loads(answer)
                except ValueError:
                    parsed = None
                raise after_parts(api_error(status, parsed), done)
        if attachment is not None:
            try:
                await self._send_document(int(external_id), attachment)
            except SendError as exc:
                raise after_parts(exc, len(parts)) from None  # the text went: only the file again

    async def _send_document(self, chat_id: int, attachment: tuple[str, bytes]) -> None:
        from bot.outbox.sender import SendError

        name, data = attachment
        try:
            await self.bot.send_document(chat_id, document=data, filename=name)
        except RetryAfter as exc:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = exc.retry_after
            raise SendError("retry_after", "flood control", raw.total_seconds() if hasattr(raw, "total_seconds") else float(raw)) from None
        except (Forbidden, BadRequest) as exc:
            raise SendError("permanent", exc.message) from None
        except (TimedOut, NetworkError) as exc:
            raise SendError("transient", exc.message) from None
        except TelegramError as exc:  # InvalidToken, Conflict...: an operator problem, try later
            raise SendError("transient", f"{type(exc).__name__}: {exc.message}") from None


JSON_HEADERS = {"content-type": "application/json"}
