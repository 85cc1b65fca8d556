"""A Zalo Official Account (OA API v3, ZNS, OAuth v4) emulator over real HTTP, plus a driver per user.

The OA channel's httpx client is pointed at ``base_url`` for all three of Zalo's hosts
(``openapi.zalo.me``, ``business.openapi.zalo.me``, ``oauth.zaloapp.com``): the paths differ, so one
server answers them all. Behaviour follows ``shared/specs/zalo-oa-api/README.md``:

- API answers are HTTP 200 with ``{error: 0, message, data}``; a non-zero ``error`` is a failure:
  -216 access token invalid or expired, -230 no interaction for 7 days, -213 not a follower;
- consultation messages (``/v3.0/oa/message/cs``): text 1-2,000 characters, ≤ 5 buttons
  (titles ≤ 100, payload ≤ 1,000); free within 48 h of the user's last interaction (``quota_type``
  ``reply`` in the answer), billed ``paid_price`` đồng between 48 h and 7 days (no quota block);
- interactions: a text, a button tap (``oa.query.hide`` comes back as ``user_send_text`` carrying
  the payload; ``oa.query.show`` also shows it in the chat), a follow;
- webhook deliveries are signed ``X-ZEvent-Signature: mac=sha256(app_id + body + timestamp +
  OA secret key)``; the timestamp is the body's field, or ``X-ZEvent-Timestamp``
  (``signature_timestamp="header"``);
- OAuth v4: the permission page issues a code (10 minutes) bound to the PKCE challenge; the token
  endpoint (form-encoded, header ``secret_key``) answers ``expires_in`` as a string ("90000": 25 h);
  a refresh token is single-use and lives 3 months: spending one twice loses the pair;
- ZNS (``/message/template``): approved templates only, to a phone ``84…``, 06:00-21:59 local time,
  ``zns_price`` đồng each, recorded in ``zns``.

Choices where Zalo's behaviour is not documented (named constants, so tests can point at them):
the OAuth error body ``{error, error_name, error_description}`` and its codes; the ZNS error codes
for a template not approved and for the hours; a consultation to a user who unfollowed gets -213;
``template_type`` in a buttons attachment is optional (the reference is unclear).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.emulators.common import BackgroundServer, ChatDriver, Fault, take_fault, u16len, wait_until

log = logging.getLogger(__name__)

TEXT_LIMIT = 2000
MAX_BUTTONS, TITLE_LIMIT, PAYLOAD_LIMIT = 5, 100, 1000
BUTTON_TYPES = ("oa.query.show", "oa.query.hide", "oa.open.url", "oa.open.phone", "oa.open.sms")
FREE_WINDOW = 48 * 3600
PAID_WINDOW = 7 * 24 * 3600
ACCESS_TTL = 90000  # 25 h
REFRESH_TTL = 90 * 24 * 3600
CODE_TTL = 600
ERR_TOKEN = -216
ERR_WINDOW = -230
ERR_NOT_FOLLOWER = -213
ERR_INVALID_PARAM = -201
ERR_OAUTH_CODE = -14019  # undocumented: a wrong, used or expired authorisation code (or verifier)
ERR_OAUTH_REFRESH = -14020  # undocumented: a wrong, used or expired refresh token
ERR_OAUTH_SECRET = -14003  # undocumented: wrong app id or secret key
ERR_ZNS_TEMPLATE = -1124  # undocumented: template not approved for this OA
ERR_ZNS_HOURS = -1139  # undocumented: outside 06:00-21:59
TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def mac(app_id: str, body: bytes, timestamp: str, oa_secret: str) -> str:
    """What ``X-ZEvent-Signature`` carries after ``mac=``: plain SHA-256, not HMAC."""
    return hashlib.sha256(app_id.encode() + body + timestamp.encode() + oa_secret.encode()).hexdigest()


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class OAError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class _Msg:
    api: dict[str, Any]
    from_oa: bool
    kind: str = "cs"  # cs | zns | user


@dataclass
class _Chat:
    id: str
    phone: str | None = None
    following: bool = False
    last_interaction: float | None = None
    messages: list[_Msg] = field(default_factory=list)
    seq: int = 0


@dataclass
class Delivery:
    """One signed POST to the webhook and what the bot answered."""

    body: dict[str, Any]
    headers: dict[str, str]
    status: int | None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class OAState:
    """Everything the fake Zalo knows, under one re-entrant lock."""

    def __init__(self, app_id: str, app_secret: str, oa_id: str, oa_secret: str, *, paid_price: int,
                 zns_price: int, templates: set[str], signature_timestamp: str, webhook_timeout: float):
        self.app_id, self.app_secret, self.oa_id, self.oa_secret = app_id, app_secret, oa_id, oa_secret
        self.paid_price, self.zns_price, self.templates = paid_price, zns_price, set(templates)
        self.signature_timestamp, self.webhook_timeout = signature_timestamp, webhook_timeout
        self.cond = threading.Condition(threading.RLock())
        self.chats: dict[str, _Chat] = {}
        self.offset = 0.0
        self.access: dict[str, float] = {}  # token -> expiry
        self.refresh: dict[str, tuple[float, bool]] = {}  # token -> (expiry, used)
        self.codes: dict[str, tuple[str, str, float]] = {}  # code -> (challenge, redirect_uri, expiry)
        self.faults: list[Fault] = []
        self.held: set[str] = set()  # users whose messages hang (a slow network) until released
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.webhook_url: str | None = None
        self.events: list[dict[str, Any]] = []
        self.delivered: dict[str, dict[str, Any]] = {}
        self.deliveries: list[Delivery] = []
        self.spent = 0
        self.cs_sent = self.cs_paid = 0
        self.zns: list[dict[str, Any]] = []
        self.refreshes = self.refresh_reuses = 0
        self.closed = False

    def now(self) -> float:
        return time.time() + self.offset

    # -- API -----------------------------------------------------------------------------------
    def call(self, name: str, token: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            self.log.append((name, copy.deepcopy(body)))
            user = str((body.get("recipient") or {}).get("user_id") or "") if name == "cs" else None
            self.cond.wait_for(lambda: user not in self.held or self.closed)
            try:
                fault = take_fault(self.faults, name, None)
                if fault:
                    if fault.status > 0:
                        return {"http": fault.status}
                    raise OAError(fault.status, fault.description)
                if name.startswith("oauth"):
                    return getattr(self, f"_{name}")(body)
                if not token or self.access.get(token, 0) <= self.now():
                    raise OAError(ERR_TOKEN, "Access token is invalid or has expired")
                return {"error": 0, "message": "Success", "data": getattr(self, f"_{name}")(body)}
            except OAError as exc:
                if name.startswith("oauth"):
                    return {"error": exc.code, "error_name": "invalid_request", "error_description": exc.message}
                return {"error": exc.code, "message": exc.message}

    def _recipient(self, body: dict[str, Any]) -> _Chat:
        uid = str(((body.get("recipient") or {}).get("user_id")) or "")
        chat = self.chats.get(uid)
        if chat is None:
            raise OAError(ERR_INVALID_PARAM, "user_id is invalid")
        return chat

    def _cs(self, body: dict[str, Any]) -> dict[str, Any]:
        chat = self._recipient(body)
        message = body.get("message") or {}
        text = message.get("text")
        if not isinstance(text, str) or not text.strip() or u16len(text) > TEXT_LIMIT:
            raise OAError(ERR_INVALID_PARAM, f"text must be 1-{TEXT_LIMIT} characters")
        buttons = self._buttons(message.get("attachment"))
        age = None if chat.last_interaction is None else self.now() - chat.last_interaction
        if age is None or age > PAID_WINDOW:
            raise OAError(ERR_WINDOW, "User has not interacted with the OA in the last 7 days")
        if not chat.following and age > FREE_WINDOW:
            raise OAError(ERR_NOT_FOLLOWER, "User is not a follower of the OA")
        result: dict[str, Any] = {"message_id": secrets.token_hex(16), "user_id": chat.id}
        if age <= FREE_WINDOW:
            result["quota"] = {"quota_type": "reply"}
        else:
            self.spent += self.paid_price
            self.cs_paid += 1
        self.cs_sent += 1
        self._show(chat, {"message_id": result["message_id"], "text": text, "buttons": buttons}, "cs")
        return result

    @staticmethod
    def _buttons(attachment: Any) -> list[dict[str, Any]]:
        if attachment is None:
            return []
        payload = attachment.get("payload") if isinstance(attachment, dict) else None
        if attachment.get("type") != "template" or not isinstance(payload, dict):
            raise OAError(ERR_INVALID_PARAM, "attachment must be a template")
        buttons = payload.get("buttons") or []
        if not isinstance(buttons, list) or len(buttons) > MAX_BUTTONS:
            raise OAError(ERR_INVALID_PARAM, f"at most {MAX_BUTTONS} buttons")
        for b in buttons:
            title, kind, data = b.get("title"), b.get("type"), b.get("payload")
            if not isinstance(title, str) or not title or len(title) > TITLE_LIMIT:
                raise OAError(ERR_INVALID_PARAM, f"button title must be 1-{TITLE_LIMIT} characters")
            if kind not in BUTTON_TYPES:
                raise OAError(ERR_INVALID_PARAM, f"unknown button type {kind!r}")
            if kind.startswith("oa.query") and (not isinstance(data, str) or len(data) > PAYLOAD_LIMIT):
                raise OAError(ERR_INVALID_PARAM, f"button payload must be text of at most {PAYLOAD_LIMIT}")
            if kind == "oa.open.url" and not (isinstance(data, dict) and isinstance(data.get("url"), str)
                                               and data["url"].startswith(("https://", "http://"))):
                raise OAError(ERR_INVALID_PARAM, 'an oa.open.url button\'s payload is {"url": "https://..."}')
        return copy.deepcopy(buttons)

    def _quota(self, body: dict[str, Any]) -> dict[str, Any]:
        chat = self.chats.get(str(body.get("user_id") or ""))
        if chat is None:
            raise OAError(ERR_INVALID_PARAM, "user_id is invalid")
        last = chat.last_interaction
        return {"last_interaction": int(last * 1000) if last else None, "daily_remain": 1, "monthly_remain": 0}

    def _zns(self, body: dict[str, Any]) -> dict[str, Any]:
        phone, template = str(body.get("phone") or ""), str(body.get("template_id") or "")
        if not (phone.startswith("84") and phone.isdigit() and 10 <= len(phone) <= 12):
            raise OAError(ERR_INVALID_PARAM, "phone must be 84xxxxxxxxx")
        if template not in self.templates:
            raise OAError(ERR_ZNS_TEMPLATE, "Template is not approved")
        hour = datetime.fromtimestamp(self.now(), TZ).hour
        if not 6 <= hour < 22:
            raise OAError(ERR_ZNS_HOURS, "ZNS may be sent from 06:00 to 21:59 only")
        record = {"msg_id": secrets.token_hex(16), "phone": phone, "template_id": template,
                  "template_data": copy.deepcopy(body.get("template_data") or {}),
                  "tracking_id": body.get("tracking_id"), "cost": self.zns_price}
        self.zns.append(record)
        self.spent += self.zns_price
        for chat in self.chats.values():
            if chat.phone == phone:
                self._show(chat, {"message_id": record["msg_id"], "text": json.dumps(record["template_data"],
                                                                                    ensure_ascii=False),
                                  "buttons": []}, "zns")
        return {"msg_id": record["msg_id"], "sent_time": str(int(self.now() * 1000))}

    def approve(self, query: dict[str, str]) -> str:
        """The admin allows on the permission page (``query``: its parameters): a code bound to the PKCE
        challenge; returns where the browser is sent back to."""
        if query.get("app_id") != self.app_id or not query.get("code_challenge") or not query.get("redirect_uri"):
            raise ValueError("the permission URL lacks app_id, redirect_uri or code_challenge")
        code = secrets.token_urlsafe(24)
        with self.cond:
            self.codes[code] = (query["code_challenge"], query["redirect_uri"], self.now() + CODE_TTL)
        params = {"code": code, "oa_id": self.oa_id, **({"state": query["state"]} if "state" in query else {})}
        return f"{query['redirect_uri']}?{urlencode(params)}"

    def _oauth_token(self, form: dict[str, Any]) -> dict[str, Any]:
        if form.get("app_id") != self.app_id or form.get("secret_key") != self.app_secret:
            raise OAError(ERR_OAUTH_SECRET, "Invalid app id or secret key")
        grant = form.get("grant_type")
        if grant == "authorization_code":
            entry = self.codes.pop(str(form.get("code") or ""), None)
            if entry is None or entry[2] < self.now():
                raise OAError(ERR_OAUTH_CODE, "Invalid or expired authorization code")
            if pkce_challenge(str(form.get("code_verifier") or "")) != entry[0]:
                raise OAError(ERR_OAUTH_CODE, "Invalid code verifier")
        elif grant == "refresh_token":
            token = str(form.get("refresh_token") or "")
            entry = self.refresh.get(token)
            if entry is None or entry[0] < self.now():
                raise OAError(ERR_OAUTH_REFRESH, "Invalid refresh token")
            if entry[1]:  # spent twice: the pair is lost, an admin must authorise again
                self.refresh_reuses += 1
                self.access.clear()
                self.refresh = {t: (e, True) for t, (e, _) in self.refresh.items()}
                raise OAError(ERR_OAUTH_REFRESH, "Refresh token has been used")
            self.refresh[token] = (entry[0], True)
            self.refreshes += 1
        else:
            raise OAError(ERR_OAUTH_CODE, "Unsupported grant_type")
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.access[access] = self.now() + ACCESS_TTL
        self.refresh[refresh] = (self.now() + REFRESH_TTL, False)
        return {"access_token": access, "refresh_token": refresh, "expires_in": str(ACCESS_TTL)}

    # -- users -----------------------------------------------------------------------------------
    def _show(self, chat: _Chat, api: dict[str, Any], kind: str) -> None:
        chat.messages.append(_Msg(api, True, kind))
        chat.seq += 1
        self.cond.notify_all()

    def event(self, chat: _Chat, name: str, extra: dict[str, Any]) -> dict[str, Any]:
        """A user's action: renews the window (except unfollow) and queues a webhook event."""
        with self.cond:
            now_ms = str(int(self.now() * 1000))
            if name != "unfollow":
                chat.last_interaction = self.now()
            event = {"app_id": self.app_id, "event_name": name, "timestamp": now_ms, "user_id_by_app": chat.id}
            if name in ("follow", "unfollow"):
                event.update(oa_id=self.oa_id, follower={"id": chat.id}, source="oa_profile")
            else:
                event.update(sender={"id": chat.id}, recipient={"id": self.oa_id})
            event.update(extra)
            self.events.append(event)
            self.cond.notify_all()
            return copy.deepcopy(event)

    def signed(self, event: dict[str, Any], *, timestamp: str | None = None) -> tuple[bytes, dict[str, str]]:
        raw = json.dumps(event, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        ts = timestamp or str(event.get("timestamp") or int(self.now() * 1000))
        if self.signature_timestamp == "header":
            headers["X-ZEvent-Timestamp"] = ts
        headers["X-ZEvent-Signature"] = "mac=" + mac(self.app_id, raw, ts, self.oa_secret)
        return raw, headers

    def post(self, raw: bytes, headers: dict[str, str], body: dict[str, Any], url: str | None = None) -> Delivery:
        started = time.monotonic()
        record = Delivery(body, headers, None)
        try:
            with httpx.Client(timeout=self.webhook_timeout) as client:
                record.status = client.post(url or self.webhook_url or "", content=raw, headers=headers).status_code
        except httpx.HTTPError as exc:
            record.error = repr(exc)
        record.seconds = time.monotonic() - started
        with self.cond:
            self.deliveries.append(record)
            self.cond.notify_all()
        return record

    def delivery_loop(self) -> None:
        """Deliver queued events to the webhook, one at a time, in order (not retried)."""
        while True:
            with self.cond:
                while not self.closed and not (self.webhook_url and self.events):
                    self.cond.wait()
                if self.closed:
                    return
                event = self.events.pop(0)
                key = (event.get("message") or {}).get("msg_id")
                if key:
                    self.delivered[key] = copy.deepcopy(event)
                raw, headers = self.signed(event)
            try:
                self.post(raw, headers, event)
            except Exception:  # noqa: BLE001 - never let the worker die
                log.exception("OA emulator: delivery failed")


class OAServer(BackgroundServer):
    thread_name = "zalo-oa-emulator"
    description = "Zalo OA emulator"

    def __init__(self, state: OAState, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.state = state

    def _app(self) -> Starlette:
        state = self.state

        def api(name: str):
            async def endpoint(request: Request) -> Response:
                try:
                    body = json.loads(await request.body() or b"{}")
                    if not isinstance(body, dict):
                        raise ValueError
                except ValueError:
                    return JSONResponse({"error": ERR_INVALID_PARAM, "message": "body is not JSON"})
                answer = await run_in_threadpool(state.call, name, request.headers.get("access_token"), body)
                if "http" in answer:
                    return PlainTextResponse("Internal Server Error", status_code=answer["http"])
                return JSONResponse(answer)
            return endpoint

        async def token(request: Request) -> Response:
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
            form["secret_key"] = request.headers.get("secret_key")
            answer = await run_in_threadpool(state.call, "oauth_token", None, form)
            if "http" in answer:
                return PlainTextResponse("Internal Server Error", status_code=answer["http"])
            return JSONResponse(answer)

        async def permission(request: Request) -> Response:
            """Zalo's permission page, the admin already logged in: "Cho phép" goes back with a code."""
            try:
                back = state.approve(dict(request.query_params))
            except ValueError as exc:
                return PlainTextResponse(str(exc), status_code=400)
            return HTMLResponse('<!doctype html><html lang="vi"><meta charset="utf-8"><title>Zalo</title>'
                                '<p>Cấp quyền cho ứng dụng quản lý Official Account (emulator)</p>'
                                f'<p><a id="allow" href="{html.escape(back)}">Cho phép</a></p></html>')

        return Starlette(routes=[
            Route("/v3.0/oa/message/cs", api("cs"), methods=["POST"]),
            Route("/v3.0/oa/quota/message", api("quota"), methods=["POST"]),
            Route("/message/template", api("zns"), methods=["POST"]),
            Route("/v4/oa/access_token", token, methods=["POST"]),
            Route("/v4/oa/permission", permission, methods=["GET"]),
        ])


class OAUser(ChatDriver[OAState]):
    """Plays one Zalo user talking to the OA: follow, type, tap a button; sees the OA's messages."""

    _awaited = "OA message"

    def __init__(self, state: OAState, user_id: str):
        super().__init__(state, user_id)
        self.id = user_id

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The OA's messages here, in order: message_id, text, buttons (and kind: cs or zns)."""
        with self._state.cond:
            return [{**copy.deepcopy(m.api), "kind": m.kind} for m in self._chat.messages if m.from_oa]

    def transcript(self) -> str:
        with self._state.cond:
            lines = []
            for m in self._chat.messages:
                buttons = " ".join(f"[{b['title']}]" for b in m.api.get("buttons") or [])
                lines.append(f"  {'oa' if m.from_oa else 'user'}: {m.api.get('text', '').strip()} {buttons}")
            return "\n".join(lines) or "  (empty)"

    def follow(self) -> dict[str, Any]:
        self.mark()
        with self._state.cond:
            self._chat.following = True
            return self._state.event(self._chat, "follow", {})

    def unfollow(self) -> dict[str, Any]:
        self.mark()
        with self._state.cond:
            self._chat.following = False
            return self._state.event(self._chat, "unfollow", {})

    def send_text(self, text: str) -> dict[str, Any]:
        self.mark()
        with self._state.cond:
            msg_id = secrets.token_hex(16)
            self._chat.messages.append(_Msg({"message_id": msg_id, "text": text}, False, "user"))
            return self._state.event(self._chat, "user_send_text", {"message": {"text": text, "msg_id": msg_id}})

    def send_image(self) -> dict[str, Any]:
        self.mark()
        with self._state.cond:
            attachment = {"type": "image", "payload": {"url": "https://photo.zdn.vn/test.jpg"}}
            return self._state.event(self._chat, "user_send_image",
                                     {"message": {"msg_id": secrets.token_hex(16), "attachments": [attachment]}})

    def press(self, title: str, message_id: str | None = None) -> dict[str, Any]:
        """Tap the button with this title on the newest OA message that has it (or on ``message_id``)."""
        for message in reversed(self.messages):
            if message_id is not None and message["message_id"] != message_id:
                continue
            for button in message.get("buttons") or []:
                if button["title"] == title:
                    return self.tap(button)
        raise LookupError(f"no button {title!r} in chat {self.id}. Transcript:\n{self.transcript()}")

    def tap(self, button: dict[str, Any]) -> dict[str, Any]:
        if not button["type"].startswith("oa.query"):
            raise ValueError("only oa.query.* buttons talk back to the OA")
        self.mark()
        with self._state.cond:
            msg_id = secrets.token_hex(16)
            if button["type"] == "oa.query.show":
                self._chat.messages.append(_Msg({"message_id": msg_id, "text": button["payload"]}, False, "user"))
            return self._state.event(self._chat, "user_send_text",
                                     {"message": {"text": button["payload"], "msg_id": msg_id}})


class ZaloOAEmulator:
    """Facade: a fake Zalo OA platform on 127.0.0.1, user drivers, a clock to move, fault injection."""

    def __init__(self, app_id: str = "4321098765", app_secret: str = "APP-SECRET-XYZ", *,
                 oa_id: str = "579745863508352884", oa_secret: str = "OA-SECRET-KEY-123", paid_price: int = 55,
                 zns_price: int = 300, templates: tuple[str, ...] = ("ZNS-REMIND-1",),
                 signature_timestamp: str = "body", webhook_timeout: float = 5.0):
        self.app_id, self.app_secret, self.oa_id, self.oa_secret = app_id, app_secret, oa_id, oa_secret
        self._state = OAState(app_id, app_secret, oa_id, oa_secret, paid_price=paid_price, zns_price=zns_price,
                              templates=set(templates), signature_timestamp=signature_timestamp,
                              webhook_timeout=webhook_timeout)
        self._server = OAServer(self._state)
        self._users: dict[str, OAUser] = {}
        self._worker: threading.Thread | None = None

    def start(self) -> ZaloOAEmulator:
        self._server.start()
        self._worker = threading.Thread(target=self._state.delivery_loop, daemon=True, name="zalo-oa-webhook")
        self._worker.start()
        return self

    def stop(self) -> None:
        with self._state.cond:
            self._state.closed = True
            self._state.cond.notify_all()
        self._server.stop()
        if self._worker:
            self._worker.join(timeout=self._state.webhook_timeout + 1)

    def __enter__(self) -> ZaloOAEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    @property
    def state(self) -> OAState:
        return self._state

    # -- setup -----------------------------------------------------------------------------------
    def set_webhook(self, url: str | None) -> None:
        """What the developer types into the app's webhook setting on developers.zalo.me."""
        with self._state.cond:
            self._state.webhook_url = url
            self._state.cond.notify_all()

    def user(self, user_id: str, phone: str | None = None, *, following: bool = False) -> OAUser:
        """``following``: the user followed the OA before the bot's webhook was set (no follow event ever reaches
        the bot)."""
        with self._state.cond:
            if user_id not in self._users:
                self._state.chats[user_id] = _Chat(user_id, phone, following)
                self._users[user_id] = OAUser(self._state, user_id)
            elif phone:
                self._state.chats[user_id].phone = phone
            return self._users[user_id]

    def approve(self, permission_url: str) -> str:
        """The admin opens the permission URL and allows: returns where Zalo redirects the browser."""
        return self._state.approve({k: v[0] for k, v in parse_qs(urlsplit(permission_url).query).items()})

    # -- time and windows ----------------------------------------------------------------------
    def travel(self, seconds: float) -> None:
        """Move Zalo's clock forward (token expiry, windows, ZNS hours)."""
        with self._state.cond:
            self._state.offset += seconds

    def age(self, user: OAUser | str, seconds: float) -> None:
        """Make this user's last interaction ``seconds`` older."""
        with self._state.cond:
            chat = self._state.chats[user.id if isinstance(user, OAUser) else user]
            if chat.last_interaction is not None:
                chat.last_interaction -= seconds

    def expire_access_tokens(self) -> None:
        with self._state.cond:
            self._state.access.clear()

    # -- webhook ---------------------------------------------------------------------------------
    def replay(self, msg_id: str) -> Delivery:
        """Deliver an event again, as Zalo's retries do (signed afresh, same body)."""
        with self._state.cond:
            event = copy.deepcopy(self._state.delivered[msg_id])
            raw, headers = self._state.signed(event)
        return self._state.post(raw, headers, event)

    def deliver_raw(self, raw: bytes, headers: dict[str, str]) -> Delivery:
        """POST anything to the webhook (forged, stale, malformed), synchronously."""
        return self._state.post(raw, headers, {})

    def signed(self, event: dict[str, Any], timestamp: str | None = None) -> tuple[bytes, dict[str, str]]:
        with self._state.cond:
            return self._state.signed(event, timestamp=timestamp)

    def wait_deliveries(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        with self._state.cond:
            wait_until(self._state.cond, lambda: len(self._state.deliveries) >= count, timeout,
                       lambda: f"{len(self._state.deliveries)} deliveries, expected {count}")
            return list(self._state.deliveries)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._state.cond:
            return list(self._state.deliveries)

    # -- faults and accounting -------------------------------------------------------------------
    def inject_error(self, method: str, code: int, description: str = "injected", times: int = 1,
                     after: int = 0) -> None:
        """The next ``times`` calls of ``method`` (cs, quota, zns, oauth_token, *) fail, once ``after`` of
        them went through: a negative code is Zalo's ``error``, a positive one an HTTP status."""
        with self._state.cond:
            self._state.faults.append(Fault(method, code, description, times, None, after))

    def clear_errors(self) -> None:
        with self._state.cond:
            self._state.faults.clear()

    def hold(self, user_id: str) -> None:
        """Consultation messages to this user hang, as on a stalled network, until ``release``: logged
        (``requests``) when they arrive, answered (and delivered, and paid for) only after."""
        with self._state.cond:
            self._state.held.add(user_id)

    def release(self, user_id: str) -> None:
        with self._state.cond:
            self._state.held.discard(user_id)
            self._state.cond.notify_all()

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        with self._state.cond:
            return copy.deepcopy(self._state.log)

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [body for name, body in self.requests if name == method]

    def reset_log(self) -> None:
        with self._state.cond:
            self._state.log.clear()

    @property
    def spent(self) -> int:
        """Đồng billed so far: paid consultation messages and ZNS."""
        with self._state.cond:
            return self._state.spent

    @property
    def zns(self) -> list[dict[str, Any]]:
        with self._state.cond:
            return copy.deepcopy(self._state.zns)

    @property
    def refreshes(self) -> int:
        with self._state.cond:
            return self._state.refreshes

    @property
    def refresh_reuses(self) -> int:
        """Refresh tokens spent twice (each one lost the pair)."""
        with self._state.cond:
            return self._state.refresh_reuses
