"""A Zalo Bot API emulator served over real HTTP, plus drivers that play users and groups.

The Zalo channel's own httpx client is pointed at ``base_url`` (it builds
``f"{base_url}/bot{token}/{method}"``), so tests, benchmarks and the playground exercise the same
HTTP path as production. Behaviour follows ``shared/specs/zalo-bot-api/README.md``:

- every answer is JSON ``{ok, result}`` or ``{ok: false, error_code, description}``, with the HTTP
  status equal to ``error_code``; a wrong token is 401, an unknown method (``editMessageText``,
  ``setMyCommands``... Zalo has none of them) is 404; method names are case-sensitive;
- all ids are strings, all times epoch **milliseconds**, message ids 20 hex characters;
- ``getUpdates`` returns **one** update ``{event_name, message}`` (no list, no ``update_id``, no
  ``offset``); idle, it holds the request ``timeout`` seconds and answers HTTP 408
  ``Request timeout``. There is no acknowledgement: ``replay``/``replay_last`` put an update
  already returned back in the queue, as Zalo has been measured to do;
- a webhook and ``getUpdates`` exclude each other; in webhook mode a worker thread POSTs each
  update to the URL with ``X-Bot-Api-Secret-Token`` and records the HTTP status it got;
- text and captions are 1-2000 characters; the bot cannot write first (a chat becomes known
  when a person writes in it); 429 says only "Quota exceeded", with no ``retry_after``;
- in groups the bot only receives messages that @mention it or reply to one of its messages;
  the app's mention picker writes the bot's display name (``display_name``, which getMe does not
  return), a hand-typed ``@account_name`` reaches the bot too.

Choices where Zalo's behaviour is unknown (made explicit so tests can name them):

- ``getUpdates`` while a webhook is set: HTTP 400 ``WEBHOOK_ACTIVE_DESCRIPTION``;
- a send to a user who blocked the bot: HTTP 403 ``BLOCKED_DESCRIPTION`` (Zalo documents 403
  only as "internal error"; the real code for this case is unknown);
- a send to a chat nobody wrote in: HTTP 400 ``UNKNOWN_CHAT_DESCRIPTION``;
- lengths are counted in UTF-16 code units (the stricter reading: never below Python ``len``);
- a second ``getUpdates`` while one is held releases the older one with 408 and counts a
  conflict (``poll_conflicts``): one poller per token;
- webhook deliveries are not retried: a failed one is recorded and the update is lost, as
  operators report; http:// webhook URLs are accepted only for loopback hosts (for tests);
- ``fetch_photos=True``: sendPhoto fetches the URL first and answers 400
  ``PHOTO_FETCH_DESCRIPTION`` unless it got a 2xx with a body.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.emulators.common import (
    BackgroundServer,
    ChatDriver,
    Fault,
    api_response,
    take_fault,
    u16len,
    wait_until,
)

log = logging.getLogger(__name__)

IMPLEMENTED_METHODS = (
    "getMe", "getUpdates", "setWebhook", "deleteWebhook", "getWebhookInfo", "sendMessage",
    "sendPhoto", "sendSticker", "sendChatAction",
)
SEND_METHODS = ("sendMessage", "sendPhoto", "sendSticker")
TEXT_LIMIT = 2000
SECRET_HEADER = "X-Bot-Api-Secret-Token"
WEBHOOK_USER_AGENT = "Java/1.8.0_292"
QUOTA_DESCRIPTION = "Quota exceeded"
TIMEOUT_DESCRIPTION = "Request timeout"
WEBHOOK_ACTIVE_DESCRIPTION = "Webhook is active: call deleteWebhook before getUpdates"
BLOCKED_DESCRIPTION = "Forbidden: the user has blocked the bot"
UNKNOWN_CHAT_DESCRIPTION = "Chat not found: the bot cannot write first"
PHOTO_FETCH_DESCRIPTION = "Bad request: photo could not be fetched"
EVENT_TEXT = "message.text.received"
EVENT_IMAGE = "message.image.received"
EVENT_STICKER = "message.sticker.received"
EVENT_VOICE = "message.voice.received"
EVENT_UNSUPPORTED = "message.unsupported.received"
_PARSE_MODES = ("markdown", "html")
_CHAT_ACTIONS = ("typing",)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_DEFAULT_DESCRIPTIONS = {400: "Bad request", 401: "Unauthorized", 403: "Internal error",
                         404: "Not found", 408: TIMEOUT_DESCRIPTION,
                         426: "Quota of testWebhook exceeded", 429: QUOTA_DESCRIPTION}


def now_ms() -> int:
    return int(time.time() * 1000)


def new_message_id() -> str:
    """A Zalo-like message id: 20 lowercase hex characters."""
    return secrets.token_hex(10)


class ZaloApiError(Exception):
    """An error answer: the HTTP status and ``error_code`` are the same number."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description

    def payload(self) -> dict[str, Any]:
        return {"ok": False, "error_code": self.status, "description": self.description}


def _bad(description: str) -> ZaloApiError:
    return ZaloApiError(400, f"Bad request: {description}")


@dataclass
class FetchedPhoto:
    """What the emulator got when it fetched a sendPhoto URL (``fetch_photos=True``)."""

    url: str
    status: int | None
    content_type: str | None
    data: bytes
    error: str | None = None


@dataclass
class WebhookDelivery:
    """One POST the emulator made to the bot's webhook, and what the bot answered."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any] | None         # None for the empty verification probe
    status: int | None                  # None when the request itself failed
    response_text: str = ""
    error: str | None = None
    message_id: str | None = None
    at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Msg:
    api: dict[str, Any]                 # the message as the bot sees (or sent) it
    from_bot: bool
    delivered: bool = True              # user messages: did the bot get an update for it
    event_name: str | None = None
    fetched: FetchedPhoto | None = None


@dataclass
class _Chat:
    """A private chat (id == user id) or a group."""

    id: str
    chat_type: str                      # "PRIVATE" | "GROUP"
    name: str = ""
    known: bool = False                 # someone wrote here: the bot may send
    blocked: bool = False
    messages: list[_Msg] = field(default_factory=list)
    seq: int = 0                        # bumps on every bot message, for wait_for
    last_send: float = float("-inf")
    actions: list[str] = field(default_factory=list)

    @property
    def api(self) -> dict[str, str]:
        return {"id": self.id, "chat_type": self.chat_type}


class ZaloEmulatorState:
    """Everything the fake Zalo knows; one re-entrant lock guards it all (thread-safe)."""

    def __init__(self, token: str, bot_name: str, *, min_interval_per_chat: float | None,
                 fetch_photos: bool, monthly_quota: int | None, webhook_bare_body: bool,
                 webhook_verification: bool, webhook_timeout: float,
                 display_name: str | None = None) -> None:
        self.token, self.bot_name = token, bot_name
        self.display_name = display_name or bot_name
        self.min_interval, self.fetch_photos = min_interval_per_chat, fetch_photos
        self.monthly_quota = monthly_quota
        self.webhook_bare_body, self.webhook_verification = webhook_bare_body, webhook_verification
        self.webhook_timeout = webhook_timeout
        self.bot_info = {"id": token.split(":")[0], "account_name": bot_name,
                         "account_type": "BASIC", "can_join_groups": True}
        self.cond = threading.Condition(threading.RLock())
        self.users: dict[str, dict[str, Any]] = {}
        self.chats: dict[str, _Chat] = {}
        self.updates: list[dict[str, Any]] = []           # queued, not yet returned
        self.returned: dict[str, dict[str, Any]] = {}     # message_id -> update, in order
        self.webhook: dict[str, Any] | None = None        # url, secret_token, updated_at
        self.deliveries: list[WebhookDelivery] = []
        self.faults: list[Fault] = []
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.log_at: list[tuple[str, float]] = []         # (method, time.monotonic()) of each call
        self.empty_answers: dict[str, int] = {}           # method -> answers of 200 without a result
        self.sent = 0
        self.poll_generation = self.poll_conflicts = 0
        self.polling = False                              # a getUpdates is being held
        self.closed = False

    # --- request entry point -------------------------------------------------------------
    def handle(self, token: str, method: str, raw: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Serve one API call; returns (HTTP status, JSON body)."""
        if token != self.token:
            return 401, ZaloApiError(401, "Unauthorized").payload()
        with self.cond:
            self.log.append((method, copy.deepcopy(raw)))
            self.log_at.append((method, time.monotonic()))
            empty = self.empty_answers.get(method, 0) > 0 and not any(f.method in (method, "*") for f in self.faults)
            if empty:
                self.empty_answers[method] -= 1
        if empty:
            return 200, {"ok": True}
        if method not in IMPLEMENTED_METHODS:
            log.warning("Zalo emulator: no method %r (Zalo has no such method)", method)
            return 404, ZaloApiError(404, "Not found").payload()
        try:
            chat_id = raw.get("chat_id")
            self._take_fault(method, chat_id if isinstance(chat_id, str) else None)
            result = getattr(self, f"_m_{method}")(raw)
            if method == "sendChatAction":
                return 200, {"ok": True}
            return 200, {"ok": True, "result": result}
        except ZaloApiError as exc:
            return exc.status, exc.payload()
        except Exception as exc:  # an emulator bug: answer like a broken server, loudly
            log.exception("Zalo emulator failed on %s", method)
            return 500, ZaloApiError(500, f"Internal error: emulator bug: {exc!r}").payload()

    def _take_fault(self, method: str, chat_id: str | None) -> None:
        with self.cond:
            fault = take_fault(self.faults, method, chat_id)
        if fault:
            raise ZaloApiError(fault.status, fault.description)

    # --- helpers -------------------------------------------------------------------------
    @staticmethod
    def _string(raw: dict[str, Any], name: str, *, required: bool = True) -> str | None:
        value = raw.get(name)
        if value is None or value == "":
            if required:
                raise _bad(f"{name} is required")
            return None
        if not isinstance(value, str):
            raise _bad(f"{name} must be a string")
        return value

    @staticmethod
    def _text(value: str | None, name: str, *, required: bool) -> str | None:
        if value is None or not value.strip():
            if required:
                raise _bad(f"{name} is empty")
            return value
        if u16len(value) > TEXT_LIMIT:
            raise _bad(f"{name} is too long (limit {TEXT_LIMIT} characters)")
        return value

    def _chat(self, chat_id: str, *, sending: bool) -> _Chat:
        chat = self.chats.get(chat_id)
        if chat is None or not chat.known:
            raise ZaloApiError(400, UNKNOWN_CHAT_DESCRIPTION)
        if chat.blocked:
            raise ZaloApiError(403, BLOCKED_DESCRIPTION)
        if sending:
            if self.monthly_quota is not None and self.sent >= self.monthly_quota:
                raise ZaloApiError(429, QUOTA_DESCRIPTION)
            if self.min_interval and time.monotonic() - chat.last_send < self.min_interval:
                raise ZaloApiError(429, QUOTA_DESCRIPTION)
        return chat

    def _bot_send(self, chat_id: str, content: dict[str, Any],
                  fetched: FetchedPhoto | None = None) -> dict[str, Any]:
        with self.cond:
            chat = self._chat(chat_id, sending=True)
            chat.last_send = time.monotonic()
            result = {"message_id": new_message_id(), "date": now_ms()}
            chat.messages.append(_Msg({**result, **content}, True, fetched=fetched))
            self.sent += 1
            chat.seq += 1
            self.cond.notify_all()
            return result

    # --- API methods (names match the Zalo Bot API) -------------------------------------
    def _m_getMe(self, raw: dict[str, Any]) -> dict[str, Any]:
        return dict(self.bot_info)

    def _m_getUpdates(self, raw: dict[str, Any]) -> dict[str, Any]:
        value = raw.get("timeout", 0)
        try:
            timeout = max(float(value), 0.0) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            timeout = None
        if timeout is None:
            raise _bad("timeout must be a number of seconds")
        deadline = time.monotonic() + timeout
        with self.cond:
            if self.webhook:
                raise ZaloApiError(400, WEBHOOK_ACTIVE_DESCRIPTION)
            if self.polling:
                self.poll_conflicts += 1  # the held one is released with 408 below
            self.poll_generation += 1
            generation = self.poll_generation
            self.polling = True
            self.cond.notify_all()
            try:
                while True:
                    if self.webhook:
                        raise ZaloApiError(400, WEBHOOK_ACTIVE_DESCRIPTION)
                    if self.poll_generation != generation or self.closed:
                        raise ZaloApiError(408, TIMEOUT_DESCRIPTION)
                    if self.updates:
                        update = self.updates.pop(0)
                        self._mark_returned(update)
                        return copy.deepcopy(update)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ZaloApiError(408, TIMEOUT_DESCRIPTION)
                    self.cond.wait(remaining)
            finally:
                if self.poll_generation == generation:
                    self.polling = False

    def _mark_returned(self, update: dict[str, Any]) -> None:
        mid = update["message"]["message_id"]
        self.returned.pop(mid, None)
        self.returned[mid] = copy.deepcopy(update)

    def _m_setWebhook(self, raw: dict[str, Any]) -> dict[str, Any]:
        url = self._string(raw, "url")
        secret = self._string(raw, "secret_token")
        assert url is not None and secret is not None
        parts = urlsplit(url)
        if not (parts.scheme == "https" and parts.hostname or
                parts.scheme == "http" and parts.hostname in _LOOPBACK):
            raise _bad("url must be a public HTTPS URL")
        if not 8 <= len(secret) <= 256:
            raise _bad("secret_token must be 8-256 characters")
        updated_at = now_ms()
        result: dict[str, Any] = {"url": url, "updated_at": updated_at}
        if self.webhook_verification:  # probe outside the lock: the bot may call us back
            probe = self._post(url, None, secret, None)
            result["verification"] = {
                "ok": probe.ok, "url": url, "outcome": "success" if probe.ok else "failed",
                "hint": "" if probe.ok else
                f"the webhook answered {probe.status or probe.error}; expected HTTP 200"}
        with self.cond:  # saved even when verification fails, as on Zalo
            self.webhook = {"url": url, "secret_token": secret, "updated_at": updated_at}
            self.cond.notify_all()
        return result

    def _m_deleteWebhook(self, raw: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            self.webhook = None
            self.cond.notify_all()
        return {"url": "", "updated_at": now_ms()}

    def _m_getWebhookInfo(self, raw: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            if not self.webhook:
                raise ZaloApiError(404, "Webhook not found")
            return {"url": self.webhook["url"], "updated_at": self.webhook["updated_at"]}

    def _send_target(self, raw: dict[str, Any]) -> str:
        chat_id = self._string(raw, "chat_id")
        assert chat_id is not None
        with self.cond:
            self._chat(chat_id, sending=False)  # unknown chat comes before content checks
        return chat_id

    def _m_sendMessage(self, raw: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._send_target(raw)
        text = self._text(self._string(raw, "text", required=False), "text", required=True)
        mode = self._string(raw, "parse_mode", required=False)
        if mode is not None and mode not in _PARSE_MODES:
            raise _bad("parse_mode must be \"markdown\" or \"html\"")
        return self._bot_send(chat_id, {"text": text, **({"parse_mode": mode} if mode else {})})

    def _m_sendPhoto(self, raw: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._send_target(raw)
        photo = self._string(raw, "photo")
        assert photo is not None
        if not re.match(r"https?://\S+$", photo):
            raise _bad("photo must be an http(s) URL")
        caption = self._text(self._string(raw, "caption", required=False), "caption",
                             required=False)
        fetched = None
        if self.fetch_photos:
            with self.cond:
                self._chat(chat_id, sending=True)  # fail before fetching
            fetched = self._fetch(photo)
            if not (fetched.status and 200 <= fetched.status < 300 and fetched.data):
                raise ZaloApiError(400, PHOTO_FETCH_DESCRIPTION)
        content = {"photo": photo, **({"caption": caption} if caption else {})}
        return self._bot_send(chat_id, content, fetched)

    def _m_sendSticker(self, raw: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._send_target(raw)
        sticker = self._string(raw, "sticker")
        return self._bot_send(chat_id, {"sticker": sticker})

    def _m_sendChatAction(self, raw: dict[str, Any]) -> None:
        chat_id = self._send_target(raw)
        action = self._string(raw, "action")
        if action not in _CHAT_ACTIONS:
            raise _bad("action must be \"typing\"")
        with self.cond:
            self._chat(chat_id, sending=False).actions.append(action)  # type: ignore[arg-type]

    @staticmethod
    def _fetch(url: str) -> FetchedPhoto:
        try:
            with httpx.Client(timeout=10.0, follow_redirects=False) as client:
                r = client.get(url)
            return FetchedPhoto(url, r.status_code, r.headers.get("content-type"), r.content)
        except httpx.HTTPError as exc:
            return FetchedPhoto(url, None, None, b"", repr(exc))

    # --- user side (called by the drivers) -----------------------------------------------
    def user_message(self, chat_id: str, user_id: str, event_name: str,
                     fields: dict[str, Any], *, deliver: bool = True) -> dict[str, Any]:
        """A person writes in a chat: store the message and, if deliver, queue its update.
        A field set to None is removed (to shape odd payloads)."""
        with self.cond:
            chat = self.chats[chat_id]
            message: dict[str, Any] = {"message_id": new_message_id(), "date": now_ms(),
                                       "chat": chat.api, "from": dict(self.users[user_id])}
            message.update(fields)
            message = {k: v for k, v in message.items() if v is not None}
            chat.messages.append(_Msg(copy.deepcopy(message), False, deliver, event_name))
            if deliver:
                chat.known = True
                if chat.chat_type == "PRIVATE":
                    chat.blocked = False  # writing to the bot again lifts a block
                self.updates.append({"event_name": event_name, "message": message})
                self.cond.notify_all()
            return copy.deepcopy(message)

    def is_bot_message(self, chat_id: str, message_id: str) -> bool:
        with self.cond:
            return any(m.from_bot and m.api["message_id"] == message_id
                       for m in self.chats[chat_id].messages)

    def replay(self, message_id: str) -> dict[str, Any]:
        with self.cond:
            update = self.returned.get(message_id)
            if update is None:
                raise LookupError(f"update {message_id!r} was never returned to the bot")
            self.updates.insert(0, copy.deepcopy(update))
            self.cond.notify_all()
            return copy.deepcopy(update)

    def replay_last(self, user_id: str | None) -> dict[str, Any]:
        with self.cond:
            for mid, update in reversed(self.returned.items()):
                if user_id is None or update["message"].get("from", {}).get("id") == user_id:
                    return self.replay(mid)
        raise LookupError(f"no update from {user_id!r} was returned to the bot yet")

    # --- webhook delivery ----------------------------------------------------------------
    def _post(self, url: str, body: dict[str, Any] | None, secret: str,
              message_id: str | None) -> WebhookDelivery:
        headers = {SECRET_HEADER: secret, "User-Agent": WEBHOOK_USER_AGENT,
                   "Content-Type": "application/json"}
        content = b"" if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        record = WebhookDelivery(url, headers, body, None, message_id=message_id,
                                 at=time.time())
        try:
            with httpx.Client(timeout=self.webhook_timeout, follow_redirects=False) as client:
                r = client.post(url, content=content, headers=headers)
            record.status, record.response_text = r.status_code, r.text
        except httpx.HTTPError as exc:
            record.error = repr(exc)
        with self.cond:
            self.deliveries.append(record)
            self.cond.notify_all()
        if not record.ok:
            log.info("Zalo emulator: webhook delivery of %s got %s", message_id,
                     record.status or record.error)
        return record

    def deliver(self, update: dict[str, Any], *, secret_token: str | None = None,
                bare: bool | None = None, url: str | None = None) -> WebhookDelivery:
        """POST one update to the webhook now (the calling thread waits for the answer)."""
        with self.cond:
            hook = dict(self.webhook or {})
            bare = self.webhook_bare_body if bare is None else bare
        url = url or hook.get("url")
        if not url:
            raise RuntimeError("no webhook is set")
        secret = hook.get("secret_token", "") if secret_token is None else secret_token
        body = copy.deepcopy(update) if bare else {"ok": True, "result": copy.deepcopy(update)}
        return self._post(url, body, secret, update.get("message", {}).get("message_id"))

    def delivery_loop(self) -> None:
        """Worker thread: while a webhook is set, POST queued updates one at a time, in order.
        A failed delivery is recorded and not retried (the update is lost)."""
        while True:
            with self.cond:
                while not self.closed and not (self.webhook and self.updates):
                    self.cond.wait()
                if self.closed:
                    return
                update = self.updates.pop(0)
                self._mark_returned(update)
            try:
                self.deliver(update)
            except Exception:  # never let the worker die
                log.exception("Zalo emulator: webhook delivery failed")

    def deliver_next(self) -> WebhookDelivery | None:
        """POST the oldest queued update to the webhook in the calling thread (for bots started
        without a delivery worker); None when nothing is queued."""
        with self.cond:
            if not (self.webhook and self.updates):
                return None
            update = self.updates.pop(0)
            self._mark_returned(update)
        return self.deliver(update)

    def close(self) -> None:
        """Release held long polls and the delivery worker so everything stops promptly."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class ZaloEmulatorServer(BackgroundServer):
    """Serves ZaloEmulatorState over HTTP with uvicorn in a daemon thread with its own loop."""

    thread_name = "zalo-emulator"
    description = "Zalo emulator"

    def __init__(self, state: ZaloEmulatorState, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.state = state
        self.states: dict[str, ZaloEmulatorState] = {state.token: state}  # every bot served here

    def _app(self) -> Starlette:
        async def api(request: Request) -> Response:
            if request.method != "POST":
                return JSONResponse(ZaloApiError(405, "Method not allowed").payload(), 405)
            body = await request.body()
            try:
                raw = json.loads(body) if body.strip() else {}
                if not isinstance(raw, dict):
                    raise ValueError("a JSON object is expected")
            except (ValueError, UnicodeDecodeError) as exc:
                return JSONResponse(_bad(f"cannot parse the JSON body: {exc}").payload(), 400)
            token = request.path_params["token"]
            status, payload = await run_in_threadpool(
                self.states.get(token, self.state).handle, token, request.path_params["method"], raw)
            return api_response(payload, status)

        return Starlette(routes=[Route("/bot{token}/{method}", api, methods=["GET", "POST"])])


class _ChatDriver(ChatDriver[ZaloEmulatorState]):
    """What a person sees in one chat: the bot's messages, waiting for them, a transcript.
    wait_for counts bot messages only (the Zalo bot cannot edit or delete)."""

    _awaited = "bot message"

    @staticmethod
    def _view(msg: _Msg) -> dict[str, Any]:
        view = copy.deepcopy(msg.api)
        if msg.fetched is not None:
            view["fetched"] = msg.fetched
        return view

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Bot messages in order: message_id, date (ms) and text (+parse_mode), photo (URL,
        +caption, +fetched: FetchedPhoto when fetch_photos) or sticker."""
        with self._state.cond:
            return [self._view(m) for m in self._chat.messages if m.from_bot]

    @property
    def actions(self) -> list[str]:
        """sendChatAction actions the bot showed here ("typing")."""
        with self._state.cond:
            return list(self._chat.actions)

    def transcript(self) -> str:
        """The chat as text, for failure messages."""
        lines = []
        with self._state.cond:
            for m in self._chat.messages:
                a = m.api
                body = a.get("text") or ""
                if "photo" in a or "photo_url" in a:
                    body = f"[photo {a.get('photo') or a.get('photo_url')}] {a.get('caption', '')}"
                elif "sticker" in a:
                    body = f"[sticker {a['sticker']}]"
                elif not m.from_bot and m.event_name != EVENT_TEXT:
                    body = f"[{m.event_name}] {body}"
                who = "bot" if m.from_bot else a.get("from", {}).get("display_name", "user")
                lost = "" if m.delivered else " (not delivered to the bot)"
                lines.append(f"  {who} #{a['message_id'][:8]}{lost}: {body.strip()}")
        return "\n".join(lines) or "  (empty)"


class ZaloUser(_ChatDriver):
    """Plays one Zalo user in their private chat with the bot (chat id == user id)."""

    def __init__(self, state: ZaloEmulatorState, user_id: str) -> None:
        super().__init__(state, user_id)
        self.id = user_id

    @property
    def display_name(self) -> str:
        with self._state.cond:
            return str(self._state.users[self.id]["display_name"])

    def send_event(self, event_name: str, **fields: Any) -> dict[str, Any]:
        """Send any event (new names appear on Zalo); fields are added to the message, a field
        set to None removes it. Returns the message as the bot receives it."""
        self.mark()
        return self._state.user_message(self.id, self.id, event_name, fields)

    def send_text(self, text: str) -> dict[str, Any]:
        return self.send_event(EVENT_TEXT, text=text)

    def send_image(self, photo_url: str = "https://photo.zdn.vn/test.jpg",
                   caption: str | None = None, *, url_key: str = "photo_url") -> dict[str, Any]:
        """An image; url_key="photo" sends the field name the docs use instead."""
        return self.send_event(EVENT_IMAGE, **{url_key: photo_url}, caption=caption)

    def send_sticker(self, sticker: str = "bfe458bf64fa8da4d4eb") -> dict[str, Any]:
        return self.send_event(EVENT_STICKER, sticker=sticker)

    def send_voice(self, voice_url: str = "https://voice.zdn.vn/test.aac") -> dict[str, Any]:
        return self.send_event(EVENT_VOICE, voice_url=voice_url)

    def send_unsupported(self) -> dict[str, Any]:
        """What Zalo sends for protected users, links and unclassified types: no content."""
        return self.send_event(EVENT_UNSUPPORTED)


class ZaloGroup(_ChatDriver):
    """Plays a Zalo group the bot is in. Every member's message is stored; only those that
    @mention the bot (``@{display_name}`` or ``@{bot_name}`` in the text) or reply to a bot message
    reach the bot."""

    def __init__(self, state: ZaloEmulatorState, group_id: str, owner: ZaloEmulator) -> None:
        super().__init__(state, group_id)
        self.id, self._owner = group_id, owner

    @property
    def name(self) -> str:
        return self._chat.name

    def send_text(self, member: ZaloUser | str, text: str, *,
                  reply_to: str | None = None) -> dict[str, Any]:
        """A member writes in the group; reply_to is a message id the member replies to.
        Returns the message; its "delivered" key says whether the bot got an update."""
        user_id = member.id if isinstance(member, ZaloUser) else self._owner.user(member).id
        mention = any(f"@{name}".casefold() in text.casefold()
                      for name in (self._state.bot_name, self._state.display_name))
        to_bot = reply_to is not None and self._state.is_bot_message(self.id, reply_to)
        self.mark()
        message = self._state.user_message(self.id, user_id, EVENT_TEXT, {"text": text},
                                           deliver=mention or to_bot)
        return {**message, "delivered": mention or to_bot}

    def mention(self, member: ZaloUser | str, text: str) -> dict[str, Any]:
        """Send "@Display Name text", as Zalo's mention picker writes it."""
        return self.send_text(member, f"@{self._state.display_name} {text}")

    @property
    def all_messages(self) -> list[dict[str, Any]]:
        """Every message in the group (members' too), each with "from_bot" and "delivered"."""
        with self._state.cond:
            return [{**self._view(m), "from_bot": m.from_bot, "delivered": m.delivered}
                    for m in self._chat.messages]


class ZaloEmulator:
    """Facade: a fake bot-api.zaloplatforms.com on 127.0.0.1, drivers and fault injection."""

    def __init__(self, token: str = "1234567890:TEST-ZALO", bot_name: str = "HocTap", *,
                 min_interval_per_chat: float | None = None, fetch_photos: bool = False,
                 monthly_quota: int | None = None, webhook_bare_body: bool = False,
                 webhook_verification: bool = False, webhook_timeout: float = 10.0,
                 display_name: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 beside: ZaloEmulator | None = None, worker: bool = True) -> None:
        """min_interval_per_chat: seconds between two bot messages into one chat below which
        the send gets 429 "Quota exceeded" (None = no pacing check).
        fetch_photos: sendPhoto GETs the URL (recorded as "fetched"); failure -> 400.
        monthly_quota: messages the bot may send in all (the plan's 3,000) before 429.
        webhook_bare_body: POST bare {event_name, message} instead of {ok, result}.
        webhook_verification: setWebhook probes the URL with an empty POST and adds
        result.verification {ok, url, outcome, hint} (the webhook is saved either way).
        display_name: the name the Zalo app shows for the bot, which the mention picker writes
        (default: bot_name, the account_name getMe returns).
        port: 0 picks a free port; a fixed one suits the interactive playground.
        beside: another bot's emulator whose server this bot shares (one Zalo, many bots: see
        ``add_bot``); worker: False leaves webhook deliveries to ``deliver_next``."""
        if ":" not in token:
            raise ValueError("a Zalo bot token looks like '<numeric id>:<secret>'")
        self.token = token
        self._state = ZaloEmulatorState(
            token, bot_name, min_interval_per_chat=min_interval_per_chat,
            fetch_photos=fetch_photos, monthly_quota=monthly_quota,
            webhook_bare_body=webhook_bare_body, webhook_verification=webhook_verification,
            webhook_timeout=webhook_timeout, display_name=display_name)
        self._shared = beside is not None
        self._server = beside._server if beside is not None else ZaloEmulatorServer(self._state, host, port)
        self._server.states[token] = self._state
        self._with_worker = worker
        self._users: dict[str, ZaloUser] = {}
        self._groups: dict[str, ZaloGroup] = {}
        self._worker: threading.Thread | None = None
        self._started = False

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> ZaloEmulator:
        if not self._shared:
            self._server.start()
        if self._with_worker:
            self._worker = threading.Thread(target=self._state.delivery_loop, daemon=True,
                                            name=f"zalo-webhook:{self._server.port}")
            self._worker.start()
        self._started = True
        return self

    def add_bot(self, token: str, bot_name: str, *, worker: bool = True, **options: Any) -> ZaloEmulator:
        """Another bot on the same fake Zalo (same base URL, its own token, chats and webhook),
        started; stop it before this one."""
        return ZaloEmulator(token, bot_name, beside=self, worker=worker, **options).start()

    def reset_token(self, token: str) -> None:
        """"Reset token" in Bot Creator: the same bot answers only to the new token from now on."""
        if token.split(":")[0] != self.token.split(":")[0]:
            raise ValueError("a reset keeps the bot's numeric id")
        with self._state.cond:
            self._server.states.pop(self.token, None)
            self.token = self._state.token = token
            self._server.states[token] = self._state

    def deliver_next(self) -> WebhookDelivery | None:
        """POST the oldest queued update to the webhook now, in this thread (``worker=False``)."""
        return self._state.deliver_next()

    def stop(self) -> None:
        self._state.close()
        if self._shared:
            self._server.states.pop(self.token, None)
        else:
            self._server.stop()
        if self._worker:
            self._worker.join(timeout=self._state.webhook_timeout + 1)
            self._worker = None
        self._started = False

    def __enter__(self) -> ZaloEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Like "http://127.0.0.1:PORT"; the client calls f"{base_url}/bot{token}/{method}"."""
        if not self._started:
            raise RuntimeError("ZaloEmulator is not started")
        return f"http://{self._server.host}:{self._server.port}"

    @property
    def bot_name(self) -> str:
        return self._state.bot_name

    @property
    def bot_info(self) -> dict[str, Any]:
        """What getMe answers."""
        return dict(self._state.bot_info)

    # --- drivers -------------------------------------------------------------------------
    def user(self, user_id: str, display_name: str = "Người dùng thử") -> ZaloUser:
        """Driver for a user (created on first call; later calls return the same driver)."""
        if not isinstance(user_id, str) or not user_id:
            raise TypeError("Zalo user ids are non-empty strings")
        with self._state.cond:
            if user_id not in self._users:
                if user_id in self._state.chats:
                    raise ValueError(f"{user_id!r} is already a group id")
                self._state.users[user_id] = {"id": user_id, "display_name": display_name,
                                              "is_bot": False}
                self._state.chats[user_id] = _Chat(user_id, "PRIVATE", display_name)
                self._users[user_id] = ZaloUser(self._state, user_id)
            return self._users[user_id]

    def user_who_wrote_before(self, user_id: str, display_name: str = "Người dùng thử") -> ZaloUser:
        """A user who wrote to the bot before this emulator started (their chat exists, so the bot
        may write first): for benchmarks that seed many linked members without a message each."""
        user = self.user(user_id, display_name)
        with self._state.cond:
            self._state.chats[user_id].known = True
        return user

    def group(self, group_id: str, name: str = "Chi bộ thử") -> ZaloGroup:
        """Driver for a group with the bot in it (same driver on later calls)."""
        if not isinstance(group_id, str) or not group_id:
            raise TypeError("Zalo group ids are non-empty strings")
        with self._state.cond:
            if group_id not in self._groups:
                if group_id in self._state.chats:
                    raise ValueError(f"{group_id!r} is already a user id")
                self._state.chats[group_id] = _Chat(group_id, "GROUP", name)
                self._groups[group_id] = ZaloGroup(self._state, group_id, self)
            return self._groups[group_id]

    # --- replay (no acknowledgement on Zalo) ----------------------------------------------
    def replay(self, message_id: str) -> dict[str, Any]:
        """Queue again an update already returned by getUpdates or delivered to the webhook;
        it is the next one out. Returns the update."""
        return self._state.replay(message_id)

    def replay_last(self, user: ZaloUser | str | None = None) -> dict[str, Any]:
        """Replay the newest update already returned that came from this user (any chat), or
        the newest of all with no user."""
        return self._state.replay_last(user.id if isinstance(user, ZaloUser) else user)

    # --- webhook -------------------------------------------------------------------------
    @property
    def webhook(self) -> dict[str, Any] | None:
        """{url, secret_token, updated_at} of the webhook set, or None."""
        with self._state.cond:
            return dict(self._state.webhook) if self._state.webhook else None

    @property
    def webhook_bare_body(self) -> bool:
        return self._state.webhook_bare_body

    @webhook_bare_body.setter
    def webhook_bare_body(self, bare: bool) -> None:
        with self._state.cond:
            self._state.webhook_bare_body = bare

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        """Every webhook POST made so far, in order, with the status the bot answered."""
        with self._state.cond:
            return list(self._state.deliveries)

    def wait_deliveries(self, count: int, timeout: float = 5.0) -> list[WebhookDelivery]:
        """Block until at least count webhook POSTs have been answered (or failed)."""
        state = self._state
        with state.cond:
            wait_until(state.cond, lambda: len(state.deliveries) >= count, timeout,
                       lambda: (f"{len(state.deliveries)} webhook deliveries within {timeout}s, "
                                f"expected {count}"))
            return list(state.deliveries)

    def make_text_update(self, user: ZaloUser | str, text: str) -> dict[str, Any]:
        """A fresh private text update as Zalo would build it, neither stored nor queued (for
        forged or hand-made webhook deliveries)."""
        user_id = user.id if isinstance(user, ZaloUser) else user
        with self._state.cond:
            sender = dict(self._state.users.get(
                user_id, {"id": user_id, "display_name": "Forged", "is_bot": False}))
        return {"event_name": EVENT_TEXT, "message": {
            "message_id": new_message_id(), "date": now_ms(),
            "chat": {"id": user_id, "chat_type": "PRIVATE"}, "from": sender, "text": text}}

    def deliver_webhook(self, update: dict[str, Any], *, secret_token: str | None = None,
                        bare: bool | None = None) -> WebhookDelivery:
        """POST update to the webhook now, synchronously, with the registered secret unless
        secret_token is given; bare picks the body shape (default: webhook_bare_body)."""
        return self._state.deliver(update, secret_token=secret_token, bare=bare)

    def deliver_webhook_with_secret(self, secret_token: str,
                                    update: dict[str, Any] | None = None) -> WebhookDelivery:
        """A forged delivery with this secret; update defaults to a fresh text update from an
        unknown sender. The bot should answer 403 and do nothing."""
        if update is None:
            update = self.make_text_update("forged" + secrets.token_hex(6), "xin chào")
        return self.deliver_webhook(update, secret_token=secret_token)

    # --- faults --------------------------------------------------------------------------
    def inject_error(self, method: str, status: int, description: str | None = None,
                     times: int = 1, chat_id: str | None = None, after: int = 0) -> None:
        """Make the next `times` calls of method ("*" = any) fail with this status, optionally
        only for one chat, once `after` of them went through. 429 says "Quota exceeded" and, as on
        Zalo, has no retry_after."""
        if description is None:
            description = _DEFAULT_DESCRIPTIONS.get(status) or HTTPStatus(status).phrase
        with self._state.cond:
            self._state.faults.append(Fault(method, status, description, times, chat_id, after))

    def inject_empty(self, method: str, times: int = 1) -> None:
        """Make the next `times` calls of method answer at once with 200 {ok: true} and no
        result (after any injected errors), as a relay or a hurried server may."""
        with self._state.cond:
            self._state.empty_answers[method] = self._state.empty_answers.get(method, 0) + times

    def clear_errors(self) -> None:
        with self._state.cond:
            self._state.faults.clear()

    def block(self, user: ZaloUser | str) -> None:
        """The user blocks the bot: sends to their chat get 403 BLOCKED_DESCRIPTION until they
        write again (or unblock)."""
        with self._state.cond:
            self._state.chats[user.id if isinstance(user, ZaloUser) else user].blocked = True

    def unblock(self, user: ZaloUser | str) -> None:
        with self._state.cond:
            self._state.chats[user.id if isinstance(user, ZaloUser) else user].blocked = False

    # --- what the bot did ----------------------------------------------------------------
    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        """Every API call with a valid token, in order, as (method, JSON body)."""
        with self._state.cond:
            return copy.deepcopy(self._state.log)

    def calls(self, method: str) -> list[dict[str, Any]]:
        """Bodies of every call of one method."""
        return [params for name, params in self.requests if name == method]

    def call_times(self, method: str) -> list[float]:
        """When (``time.monotonic()``) each call of one method arrived, in order."""
        with self._state.cond:
            return [at for name, at in self._state.log_at if name == method]

    def reset_log(self) -> None:
        with self._state.cond:
            self._state.log.clear()
            self._state.log_at.clear()

    def updates_pending(self) -> int:
        """Updates queued and not yet returned by getUpdates or delivered to the webhook."""
        with self._state.cond:
            return len(self._state.updates)

    def sent_count(self) -> int:
        """Messages (text, photo, sticker) the bot sent successfully, for quota tests."""
        with self._state.cond:
            return self._state.sent

    @property
    def poll_conflicts(self) -> int:
        """How often a getUpdates arrived while another was held (one poller per token)."""
        with self._state.cond:
            return self._state.poll_conflicts
