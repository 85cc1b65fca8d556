"""Zalo channel: a small Bot API client on httpx, long polling or a webhook, and text-only rendering.

Zalo has no buttons, no edits, no files and 2,000-character messages, so the neutral replies are
rendered as text: choices become a "gõ …" line (ChatService remembers what each typed word means),
an ``edit`` is a new message, a notice (a toast on Telegram) becomes text, charts are photos that
Zalo fetches from our own web server (``bot/web.py``) when a public address is configured.

Updates carry no ``update_id`` and the platform has no acknowledgement, so an update can come back:
``message_id`` is the ``update_key`` that ChatService records in the same transaction as the work
(durable de-duplication). The token sits in the URL path: it is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Iterable
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.domain.replies import Attachment, Outcome, Reply, split_text
from bot.services.chat import ChannelTraits, ChatService, fold
from bot.services.linking import looks_like_code
from bot.storage.db import Database
from bot.storage.models import ChannelUsage, ChatAccount, OutboxMessage
from bot.timeutil import utcnow

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry the token in URLs

DEFAULT_ZALO_API = "https://bot-api.zaloplatforms.com"
TEXT_LIMIT = 2000
TRAITS = ChannelTraits(name="zalo", text_limit=TEXT_LIMIT, has_buttons=False)
SECRET_HEADER = "X-Bot-Api-Secret-Token"
WEBHOOK_PATH = "/zalo/webhook"
EVENT_TEXT = "message.text.received"
SEND_TRIES = 5
NOT_TEXT_HINT = "Bot chỉ đọc được tin nhắn chữ."
CHART_FAILED = ("📎 Chưa gửi được biểu đồ qua Zalo lúc này. Đồng chí nhận qua Telegram (gõ /baocao) hoặc đề nghị "
                "quản trị viên xuất bằng lệnh «hoctap report».")


# -- client ------------------------------------------------------------------------------------
class ZaloError(Exception):
    """A refused or failed call: ``status`` is Zalo's error code (or the HTTP status); None when
    the request itself failed (network, timeout)."""

    def __init__(self, status: int | None, description: str):
        super().__init__(f"{status or 'network'}: {description}")
        self.status, self.description = status, description

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in (408, 429) or self.status >= 500


class ZaloClient:
    """``POST {base_url}/bot{token}/{method}`` with a JSON body; answers ``{ok, result}``."""

    def __init__(self, token: str, base_url: str = DEFAULT_ZALO_API, *, timeout: float = 15.0):
        self._token = token
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    def __repr__(self) -> str:
        return f"ZaloClient({self._base!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        url = f"{self._base}/bot{self._token}/{method}"
        try:
            r = await self._http.post(url, json=params or {}, timeout=timeout or self._timeout)
        except httpx.TimeoutException:
            raise ZaloError(None, f"{method}: no answer in time") from None
        except httpx.HTTPError as exc:
            raise ZaloError(None, f"{method}: {self._redact(str(exc)) or type(exc).__name__}") from None
        try:
            body = r.json()
        except ValueError:
            raise ZaloError(r.status_code, f"{method}: HTTP {r.status_code} without JSON") from None
        if isinstance(body, dict) and body.get("ok") is True:
            return body.get("result")
        body = body if isinstance(body, dict) else {}
        code = body.get("error_code", body.get("errorCode", r.status_code))
        try:
            code = int(code)
        except (TypeError, ValueError):
            code = r.status_code
        raise ZaloError(code, self._redact(str(body.get("description") or body.get("message") or "refused")))

    async def get_me(self) -> dict[str, Any]:
        return await self.call("getMe")

    async def get_updates(self, timeout: int) -> Any:
        """One update, or ZaloError 408 when there was nothing new within ``timeout`` seconds."""
        return await self.call("getUpdates", {"timeout": str(timeout)}, timeout=timeout + 10)

    async def delete_webhook(self) -> Any:
        return await self.call("deleteWebhook")

    async def set_webhook(self, url: str, secret_token: str) -> dict[str, Any]:
        return await self.call("setWebhook", {"url": url, "secret_token": secret_token})

    async def get_webhook_info(self) -> dict[str, Any] | None:
        """The webhook set, or None (Zalo answers 404 when there is none)."""
        try:
            return await self.call("getWebhookInfo")
        except ZaloError as exc:
            if exc.status == 404:
                return None
            raise

    async def send_message(self, chat_id: str, text: str) -> dict[str, Any]:
        return await self.call("sendMessage", {"chat_id": chat_id, "text": text})

    async def send_photo(self, chat_id: str, photo_url: str, caption: str | None = None) -> dict[str, Any]:
        params = {"chat_id": chat_id, "photo": photo_url}
        if caption:
            params["caption"] = caption
        return await self.call("sendPhoto", params)

    async def send_chat_action(self, chat_id: str, action: str = "typing") -> None:
        await self.call("sendChatAction", {"chat_id": chat_id, "action": action})

    async def aclose(self) -> None:
        await self._http.aclose()


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with jitter (Zalo's 429 has no retry_after)."""
    return min(base * 2 ** attempt, cap) * random.uniform(0.5, 1.5)


# -- rendering ---------------------------------------------------------------------------------
@dataclass
class Outgoing:
    """One Zalo message: text, or a photo by URL."""

    text: str | None = None
    photo: str | None = None


_WORDS = {
    "tiep": "Gõ TIẾP để xem tiếp.",
    "truoc": "Gõ TRƯỚC để xem trang trước.",
    "lambai": "Gõ LÀM BÀI để làm bài kiểm tra.",
    "hoc": "Gõ HỌC để đọc tóm tắt tài liệu.",
}


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} hoặc {items[-1]}"


def _label(choice) -> str:
    head, sep, rest = choice.label.partition(". ")
    return rest if sep and head == choice.typed else choice.label


def choice_lines(reply: Reply) -> list[str]:
    """What to type, since there are no buttons: letters and numbers, then words."""
    typed = [c for c in reply.all_choices() if c.typed]
    letters = [c.typed.upper() for c in typed if len(c.typed) == 1 and c.typed.isalpha()]
    numbered = [c for c in typed if c.typed.isdigit() and c.typed != "0"]
    lines = []
    if letters:
        lines.append(f"👉 Trả lời: gõ {_either(letters)}.")
    if numbered:
        if len(numbered) <= 3:
            lines += [f"👉 Gõ {c.typed}: {_label(c)}" for c in numbered]
        else:
            lines.append(f"👉 Gõ số thứ tự (1–{numbered[-1].typed}) để chọn.")
    for c in typed:
        if c.typed == "0":
            lines.append(f"👉 Gõ 0: {c.label}")
        elif not c.typed.isdigit() and not (len(c.typed) == 1 and c.typed.isalpha()):
            lines.append("👉 " + _WORDS.get(fold(c.typed), f"Gõ «{c.typed.upper()}»: {c.label}"))
    return lines


def reply_text(reply: Reply) -> str:
    lines = choice_lines(reply)
    return f"{reply.text}\n\n" + "\n".join(lines) if lines else reply.text


def files_note(files: Iterable[Attachment | tuple[str, bytes]]) -> str:
    """Where to get what Zalo cannot carry (documents; photos without a public address)."""
    what = []
    for f in files:
        name = f.filename if isinstance(f, Attachment) else f[0]
        kind = f.kind if isinstance(f, Attachment) else "document"
        item = "biểu đồ" if kind == "photo" else ("tệp Excel" if name.endswith(".xlsx") else f"tệp {name}")
        if item not in what:
            what.append(item)
    return (f"📎 Zalo không gửi được {' và '.join(what)} của báo cáo. Đồng chí nhận qua Telegram "
            "(gõ /baocao) hoặc đề nghị quản trị viên xuất bằng lệnh «hoctap report».")


def render(outcome: Outcome, photo_url: Callable[[Attachment], str | None] | None = None,
           limit: int = TEXT_LIMIT) -> list[Outgoing]:
    """The messages an outcome becomes on Zalo, each within ``limit``.

    A notice is a toast on Telegram; here it leads the first reply, or is its own message. When
    the first reply stands for an edit of the message the member acted on (a recorded answer), it
    already carries the receipt and the toast is left out: one message per answer.
    """
    notice = outcome.notice
    if notice and outcome.replies and outcome.replies[0].edit:
        notice = None
    out: list[Outgoing] = []
    if notice and not outcome.replies:
        out += [Outgoing(text=p) for p in split_text(notice, limit)]
    for i, reply in enumerate(outcome.replies):
        text = reply_text(reply)
        if i == 0 and notice:
            text = f"{notice}\n\n{text}"
        photos, missing = [], []
        for f in reply.files:
            url = photo_url(f) if f.kind == "photo" and photo_url is not None else None
            if url:
                photos.append(url)
            else:
                missing.append(f)
        if missing:
            text = f"{text}\n\n{files_note(missing)}"
        out += [Outgoing(text=p) for p in split_text(text, limit)]
        out += [Outgoing(photo=u) for u in photos]
    return out


def strip_mention(text: str, bot_name: str | None) -> str:
    if not bot_name:
        return text.strip()
    mention = f"@{bot_name}"
    low, at = text.casefold(), mention.casefold()
    while at in low:
        i = low.index(at)
        text = text[:i] + text[i + len(mention):]
        low = text.casefold()
    return " ".join(text.split())


def group_reply(display_name: str, text: str, share_link: str | None) -> str:
    where = f" tại {share_link}" if share_link else ""
    if looks_like_code(text):
        return ("⚠️ Mã liên kết là của riêng đồng chí, đừng gửi trong nhóm. "
                f"Đồng chí vui lòng nhắn riêng cho bot{where} và gõ mã ở đó.")
    name = f" {display_name}" if display_name else ""
    return (f"Chào đồng chí{name}! Để bảo mật, bot không trả lời trong nhóm và không hiển thị kết quả "
            f"học tập ở đây. Đồng chí vui lòng nhắn riêng cho bot{where} (gõ /trogiup để xem hướng dẫn).")


# -- the conversation --------------------------------------------------------------------------
class ZaloChannel:
    """Turns Zalo updates into ChatService calls and sends the rendered replies.

    ``dispatch`` returns at once: updates of one chat are handled in order, chats in parallel.
    """

    def __init__(self, service: ChatService, client: ZaloClient, *, bot_name: str | None = None,
                 share_link: str | None = None, shelf=None, quota: ZaloQuota | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.service, self.client = service, client
        self.bot_name, self.share_link = bot_name, share_link
        self.shelf, self.quota, self.clock = shelf, quota, clock
        self.handled = 0  # updates taken up, redeliveries included
        self.done = 0  # updates finished (answered, skipped or failed)
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()

    def dispatch(self, update: dict[str, Any]) -> asyncio.Task:
        message = update.get("message") if isinstance(update, dict) else None
        chat = message.get("chat") if isinstance(message, dict) else None
        key = str(chat.get("id", "")) if isinstance(chat, dict) else ""
        task = asyncio.create_task(self._serial(key, update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for the updates being handled (at shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def _serial(self, key: str, update: dict[str, Any]) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                try:
                    await self.handle(update)
                except Exception:  # noqa: BLE001 - one bad update must not stop the bot
                    mid = ((update.get("message") or {}) if isinstance(update, dict) else {}).get("message_id")
                    log.exception("Zalo: update %s failed", mid)
                finally:
                    self.done += 1
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
                self._locks.pop(key, None)

    async def handle(self, update: dict[str, Any]) -> None:
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
        if str(chat.get("chat_type", "PRIVATE")).upper() == "GROUP":
            await self._group(chat_id, sender, message, event, key, now)
            return
        user_id = str(sender.get("id") or chat_id)
        if event == EVENT_TEXT:
            outcome = await asyncio.to_thread(self.service.on_text, user_id, str(message.get("text") or ""), now, key)
        elif event.startswith("message."):  # image, sticker, voice, unsupported, or a new kind
            outcome = await asyncio.to_thread(self.service.on_text, user_id, "", now, key)
            if outcome.replies:
                first = outcome.replies[0]
                outcome.replies[0] = Reply(f"{NOT_TEXT_HINT} {first.text}", first.choices, files=first.files)
        else:
            log.info("Zalo: unknown event %r; ignored", event)
            return
        await self.send_outcome(chat_id, outcome)

    async def _group(self, chat_id: str, sender: dict, message: dict, event: str, key: str, now: datetime) -> None:
        """In a group: answer only a mention, never with anyone's results; point to a private chat."""
        text = str(message.get("text") or "")
        if event != EVENT_TEXT or (self.bot_name and f"@{self.bot_name}".casefold() not in text.casefold()):
            return
        if not await asyncio.to_thread(self.service.first_time, key, now):
            return
        name = str(sender.get("display_name") or sender.get("name") or "")
        reply = group_reply(name, strip_mention(text, self.bot_name), self.share_link)
        await self._send_all(chat_id, [Outgoing(text=reply)])

    async def send_outcome(self, chat_id: str, outcome: Outcome) -> int:
        put = self.shelf.put if self.shelf is not None else None
        photo_url = (lambda f: put(f.data, f.filename)) if put else None
        return await self._send_all(chat_id, render(outcome, photo_url))

    async def _send_all(self, chat_id: str, messages: list[Outgoing]) -> int:
        sent = 0
        for out in messages:
            if await self._send(chat_id, out):
                sent += 1
            elif out.photo and await self._send(chat_id, Outgoing(text=CHART_FAILED)):
                sent += 1
        if sent and self.quota is not None:
            await asyncio.to_thread(self.quota.add, sent, self.clock())
        return sent

    async def _send(self, chat_id: str, out: Outgoing) -> bool:
        method = "sendPhoto" if out.photo else "sendMessage"
        for attempt in range(SEND_TRIES):
            try:
                if out.photo:
                    await self.client.send_photo(chat_id, out.photo)
                else:
                    await self.client.send_message(chat_id, out.text or "")
                return True
            except ZaloError as exc:
                used_up = exc.status == 429 and self.quota is not None and \
                    self.quota.exhausted == self.quota.month(self.clock())
                if not exc.transient or used_up or attempt == SEND_TRIES - 1:
                    log.warning("Zalo: %s to %s failed: %s%s", method, chat_id, exc,
                                " (the monthly quota is used up)" if used_up else "")
                    return False
                wait = backoff(attempt)
                log.warning("Zalo: %s to %s: %s; retrying in %.1fs", method, chat_id, exc, wait)
                await asyncio.sleep(wait)
        return False


# -- long polling ------------------------------------------------------------------------------
class ZaloPoller:
    """``deleteWebhook`` first; then one update per ``getUpdates``; 408 means nothing new. While
    updates flow, at most one call per ``min_interval`` seconds (the platform asks for about 1 s)."""

    def __init__(self, client: ZaloClient, dispatch: Callable[[dict], Any], *, timeout: int = 30,
                 min_interval: float = 1.0):
        self.client, self.dispatch = client, dispatch
        self.timeout, self.min_interval = timeout, min_interval
        self.calls = self.received = 0

    async def run(self) -> None:
        failures = 0
        await self._delete_webhook()
        while True:
            started = time.monotonic()
            self.calls += 1
            try:
                update = await self.client.get_updates(self.timeout)
                failures = 0
            except ZaloError as exc:
                if exc.status == 408:
                    failures = 0
                    continue  # the normal "nothing new"
                if exc.status == 400 and "webhook" in exc.description.lower():
                    log.warning("Zalo: a webhook is set; deleting it to poll (%s)", exc.description)
                    await self._delete_webhook()
                    continue
                wait = backoff(failures, base=1.0, cap=60.0)
                failures += 1
                level = logging.ERROR if exc.status == 401 else logging.WARNING
                log.log(level, "Zalo: getUpdates failed (%s); again in %.1fs", exc, wait)
                await asyncio.sleep(wait)
                continue
            for item in update if isinstance(update, list) else [update]:
                if isinstance(item, dict) and item:
                    self.received += 1
                    self.dispatch(item)
            elapsed = time.monotonic() - started
            if elapsed < self.min_interval:
                await asyncio.sleep(self.min_interval - elapsed)

    async def _delete_webhook(self) -> None:
        for attempt in range(10):
            try:
                await self.client.delete_webhook()
                return
            except ZaloError as exc:
                wait = backoff(attempt, base=1.0, cap=30.0)
                log.warning("Zalo: deleteWebhook failed (%s); again in %.1fs", exc, wait)
                await asyncio.sleep(wait)


# -- the monthly quota -------------------------------------------------------------------------
@dataclass(frozen=True)
class QuotaRefusal:
    """A broadcast that does not fit in what is left of the month's quota."""

    needed: int
    left: int
    used: int
    pending: int
    quota: int
    month: str  # YYYY-MM

    def __str__(self) -> str:
        return (f"Zalo monthly quota: it needs {self.needed} message(s) but only {self.left} of {self.quota} "
                f"are left for {self.month} ({self.used} sent, {self.pending} waiting in the outbox); "
                "nothing of it was sent")

    @property
    def text(self) -> str:
        year, month = self.month.split("-")
        return (f"chưa gửi: cần {self.needed} tin nhắn Zalo nhưng hạn mức tháng {month}/{year} của gói Zalo "
                f"chỉ còn {self.left} tin (đã dùng {self.used}/{self.quota}). Chưa tin nào được gửi; đề nghị "
                "quản trị viên nâng gói Zalo, hoặc đồng chí nhắc trực tiếp.")


class ZaloQuota:
    """Counts what Zalo sent this month (local calendar month) in the database, warns the operator
    at 80%, and refuses a broadcast that cannot be sent in full (``refusal``: the budget that
    ChatService and the scheduler ask before they enqueue one)."""

    channel = "zalo"

    def __init__(self, db: Database, monthly: int | None, tz: ZoneInfo, *,
                 channels: Iterable[str] = ("telegram", "zalo"), warn_at: float = 0.8):
        self.db, self.monthly, self.tz = db, monthly or None, tz
        self.channels, self.warn_at = tuple(channels), warn_at
        self._logged: tuple | None = None
        self._logged_at = 0.0
        self.exhausted: str | None = None  # the month whose quota this process saw used up

    def month(self, now: datetime) -> str:
        return now.astimezone(self.tz).strftime("%Y-%m")

    def used(self, now: datetime | None = None) -> int:
        with self.db.session() as s:
            return self._used(s, now or utcnow())

    def _used(self, s: Session, now: datetime) -> int:
        row = s.get(ChannelUsage, (self.channel, self.month(now)))
        return row.sent if row is not None else 0

    def add(self, count: int, now: datetime | None = None) -> int:
        """Record ``count`` messages sent; returns this month's total."""
        now = now or utcnow()
        month = self.month(now)
        table = ChannelUsage.__table__
        with self.db.session() as s:
            insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            s.execute(insert(table).values(channel=self.channel, month=month, sent=count, updated_at=now)
                      .on_conflict_do_update(index_elements=["channel", "month"],
                                             set_={"sent": table.c.sent + count, "updated_at": now}))
            total = s.scalar(select(table.c.sent).where(table.c.channel == self.channel, table.c.month == month))
        if self.monthly:
            before = total - count
            if total >= self.monthly:
                self.exhausted = month
            if before < self.monthly <= total:
                log.error("Zalo: the monthly quota is used up: %d of %d messages in %s; Zalo refuses more "
                          "until next month or a larger plan", total, self.monthly, month)
            elif before < self.warn_at * self.monthly <= total:
                log.warning("Zalo: %d of %d messages of the monthly quota used in %s (%d%%)", total,
                            self.monthly, month, 100 * total // self.monthly)
        return total

    def describe(self, now: datetime | None = None) -> str:
        now = now or utcnow()
        used = self.used(now)
        if not self.monthly:
            return f"Zalo: {used} message(s) sent in {self.month(now)} (no monthly quota set)"
        return f"Zalo: {used} of {self.monthly} messages of the monthly quota used in {self.month(now)}"

    def prefer_zalo(self, s: Session, member_ids: Iterable[int]) -> set[int]:
        """Members whose outbound messages go to Zalo: it is their most recently used messenger."""
        ids = list(dict.fromkeys(member_ids))
        first: dict[int, str] = {}
        for i in range(0, len(ids), 1000):
            rows = s.execute(
                select(ChatAccount.member_id, ChatAccount.channel)
                .where(ChatAccount.member_id.in_(ids[i:i + 1000]), ChatAccount.channel.in_(self.channels))
                .order_by(ChatAccount.member_id, ChatAccount.last_seen_at.desc().nullslast(), ChatAccount.id))
            for mid, channel in rows:
                first.setdefault(mid, channel)
        return {mid for mid, channel in first.items() if channel == self.channel}

    def refusal(self, s: Session, member_ids: Iterable[int], now: datetime) -> QuotaRefusal | None:
        """None when one message to each of these members fits in what is left this month."""
        if not self.monthly:
            return None
        needed = len(self.prefer_zalo(s, member_ids))
        if not needed:
            return None
        counts = dict(s.execute(
            select(OutboxMessage.member_id, func.count()).where(
                OutboxMessage.status.in_(("pending", "claimed", "sending"))).group_by(OutboxMessage.member_id)).all())
        pending = sum(counts[mid] for mid in self.prefer_zalo(s, counts))
        used = self._used(s, now)
        left = self.monthly - used - pending
        if needed <= left:
            return None
        refusal = QuotaRefusal(needed, max(left, 0), used, pending, self.monthly, self.month(now))
        key = (refusal.needed, refusal.left, refusal.month)
        if key != self._logged or time.monotonic() - self._logged_at > 3600:
            self._logged, self._logged_at = key, time.monotonic()
            log.error("%s", refusal)
        return refusal


# -- outbox ------------------------------------------------------------------------------------
class ZaloTransport:
    """Outbox delivery over Zalo, paced on its own (``rate`` messages per second for the whole bot)
    and counted against the monthly quota. A 429 pauses Zalo sends with jittered backoff."""

    channel = "zalo"

    def __init__(self, client: ZaloClient, *, rate: float = 2.0, quota: ZaloQuota | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.client, self.rate, self.quota, self.clock = client, rate, quota, clock
        self._lock = asyncio.Lock()
        self._next = 0.0
        self._paused_until = 0.0
        self._strikes = 0

    async def _pace(self) -> None:
        async with self._lock:
            wait = max(self._next, self._paused_until) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = time.monotonic() + 1.0 / self.rate

    async def deliver(self, external_id: str, reply: Reply, attachment: tuple[str, bytes] | None) -> None:
        from bot.outbox.sender import SendError

        text = reply_text(reply)
        if attachment is not None:
            text = f"{text}\n\n{files_note([attachment])}"
        for part in split_text(text, TEXT_LIMIT):
            await self._pace()
            try:
                await self.client.send_message(external_id, part)
            except ZaloError as exc:
                if exc.status == 429:
                    wait = backoff(self._strikes, base=1.0, cap=120.0)
                    self._strikes += 1
                    self._paused_until = max(self._paused_until, time.monotonic() + wait)
                    log.warning("Zalo: quota exceeded (429); pausing Zalo sends for %.1fs", wait)
                    raise SendError("transient", "Zalo: quota exceeded (429)") from None
                if exc.transient or exc.status == 401:
                    raise SendError("transient", f"Zalo: {exc}") from None
                raise SendError("permanent", f"Zalo: {exc.description}") from None
            self._strikes = 0
            if self.quota is not None:
                await asyncio.to_thread(self.quota.add, 1, self.clock())


# -- one process's Zalo side -------------------------------------------------------------------
@dataclass
class ZaloOptions:
    """What ZaloRuntime needs (from ``settings.zalo``, or built by tests)."""

    token: str
    api_base_url: str = DEFAULT_ZALO_API
    mode: str = "polling"  # polling | webhook
    webhook_secret: str | None = field(default=None, repr=False)
    public_url: str | None = None
    listen: str = "127.0.0.1:8080"
    rate: float = 2.0
    bot_name: str | None = None
    share_link: str | None = None
    poll_timeout: int = 30
    poll_interval: float = 1.0

    @classmethod
    def from_settings(cls, zs) -> ZaloOptions:
        return cls(token=zs.token, api_base_url=zs.api_base_url, mode=zs.mode, webhook_secret=zs.webhook_secret,
                   public_url=zs.public_url, listen=zs.listen, rate=zs.rate, bot_name=zs.bot_name,
                   share_link=zs.share_link)


class ZaloRuntime:
    """The Zalo bot in this process: client, conversation, polling or webhook, the web server for
    the webhook and for charts, and the outbox transport. ``start``/``stop`` run in one event loop."""

    def __init__(self, options: ZaloOptions, service: ChatService, *, quota: ZaloQuota | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.options, self.service, self.quota, self.clock = options, service, quota, clock
        self.client: ZaloClient | None = None
        self.channel: ZaloChannel | None = None
        self.transport: ZaloTransport | None = None
        self.poller: ZaloPoller | None = None
        self.web = None
        self.me: dict[str, Any] = {}
        self._poll_task: asyncio.Task | None = None

    async def start(self) -> None:
        from bot.web import FileShelf, WebServer, create_app

        o = self.options
        if o.mode == "webhook" and not (o.public_url and o.webhook_secret):
            raise ValueError("zalo webhook mode needs zalo.public_url and ZALO_WEBHOOK_SECRET")
        self.client = ZaloClient(o.token, o.api_base_url)
        try:
            self.me = await self.client.get_me() or {}
        except ZaloError:
            await self.client.aclose()
            raise
        name = o.bot_name or self.me.get("account_name") or self.me.get("display_name") or self.me.get("name")
        shelf = FileShelf(o.public_url) if o.public_url else None
        self.channel = ZaloChannel(self.service, self.client, bot_name=name, share_link=o.share_link,
                                   shelf=shelf, quota=self.quota, clock=self.clock)
        self.transport = ZaloTransport(self.client, rate=o.rate, quota=self.quota, clock=self.clock)
        if o.public_url:
            hook = self.channel if o.mode == "webhook" else None
            self.web = WebServer(create_app(zalo=hook, webhook_secret=o.webhook_secret, shelf=shelf), o.listen)
            await self.web.start()
        if o.mode == "webhook":
            url = o.public_url.rstrip("/") + WEBHOOK_PATH
            result = await self.client.set_webhook(url, o.webhook_secret) or {}
            verification = result.get("verification") or {}
            if verification and not verification.get("ok"):
                log.warning("Zalo: webhook %s saved but its verification failed: %s", url,
                            verification.get("hint") or verification.get("outcome"))
            log.info("Zalo: bot %s receives updates at %s", name, url)
        else:
            self.poller = ZaloPoller(self.client, self.channel.dispatch, timeout=o.poll_timeout,
                                     min_interval=o.poll_interval)
            self._poll_task = asyncio.create_task(self.poller.run())
            log.info("Zalo: bot %s polls for updates", name)
        if self.quota is not None:
            log.info("%s", await asyncio.to_thread(self.quota.describe, self.clock()))

    async def stop(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            await asyncio.gather(self._poll_task, return_exceptions=True)
            self._poll_task = None
        if self.channel is not None:
            await self.channel.drain()
        if self.web is not None:
            await self.web.stop()
            self.web = None
        if self.client is not None:
            await self.client.aclose()
            self.client = None


class BackgroundZalo:
    """Runs a ZaloRuntime in a thread with its own event loop (tests, playground, benchmarks)."""

    def __init__(self, runtime: ZaloRuntime):
        self.runtime = runtime
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zalo-bot", daemon=True)

    def start(self) -> BackgroundZalo:
        self._thread.start()
        try:
            self.run(self.runtime.start())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            raise
        return self

    def run(self, coro: Awaitable, timeout: float = 30):
        """Run a coroutine in the bot's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def stop(self) -> None:
        try:
            self.run(self.runtime.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundZalo:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
