"""A Telegram Bot API emulator served over real HTTP, plus a driver that plays users.

The real python-telegram-bot ``Application`` is pointed at it with ``base_url``/``base_file_url``
so tests, benchmarks and the local playground exercise the same HTTP code path as production.
Requests are validated against a trimmed copy of the official machine-readable Bot API spec
(``telegram_api_subset.json``), and every result is checked against it too (``self_check``), so
the emulator cannot silently drift from what Telegram accepts and returns.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import html.parser
import json
import logging
import math
import mimetypes
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.emulators.common import BackgroundServer, ChatDriver, Fault, api_response, take_fault, u16len
from bot.emulators.telegram_delivery import WebhookDelivery

log = logging.getLogger(__name__)

SPEC_SUBSET_PATH = Path(__file__).with_name("telegram_api_subset.json")
IMPLEMENTED_METHODS = (
    "getMe", "getUpdates", "setWebhook", "deleteWebhook", "getWebhookInfo", "setMyCommands",
    "getMyCommands", "deleteMyCommands", "sendMessage", "editMessageText",
    "editMessageReplyMarkup", "answerCallbackQuery", "sendDocument", "sendPhoto",
    "sendChatAction", "deleteMessage", "getFile",
)
SPEC_TYPES = (
    "Update", "Message", "MaybeInaccessibleMessage", "InaccessibleMessage", "User", "Chat",
    "MessageEntity", "CallbackQuery", "Contact", "Document", "PhotoSize", "File", "WebhookInfo",
    "InlineKeyboardMarkup", "InlineKeyboardButton", "ReplyKeyboardMarkup", "KeyboardButton",
    "ReplyKeyboardRemove", "ForceReply", "LinkPreviewOptions", "ReplyParameters", "InputFile",
    "BotCommand", "BotCommandScope", "BotCommandScopeDefault", "BotCommandScopeAllPrivateChats",
    "BotCommandScopeAllGroupChats", "BotCommandScopeAllChatAdministrators", "BotCommandScopeChat",
    "BotCommandScopeChatAdministrators", "BotCommandScopeChatMember", "WebAppInfo",
)
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message")
QUERY_TOO_OLD = ("Bad Request: query is too old and response timeout expired or query ID is "
                 "invalid")
_EMPTY = {"text": "message text is empty", "document": "there is no document in the request",
          "photo": "there is no photo in the request"}
_CHAT_ACTIONS = {"typing", "upload_photo", "record_video", "upload_video", "record_voice",
                 "upload_voice", "upload_document", "choose_sticker", "find_location",
                 "record_video_note", "upload_video_note"}
_HTML_ENTITY = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
                "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
                "del": "strikethrough", "tg-spoiler": "spoiler", "span": "spoiler",
                "a": "text_link", "code": "code", "pre": "pre", "blockquote": "blockquote",
                "tg-emoji": "custom_emoji"}
_COMMAND_RE = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")
_BUTTON_ACTIONS = ("url", "callback_data", "web_app", "login_url", "switch_inline_query",
                   "switch_inline_query_current_chat", "switch_inline_query_chosen_chat",
                   "copy_text", "callback_game", "pay")


class ApiError(Exception):
    """A Bot API error answer: HTTP status and body carry the same code, like Telegram's."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.retry_after = status, description, retry_after

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.status,
                                "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


@dataclass(frozen=True)
class UploadedFile:
    """One multipart file part of a request."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class StoredFile:
    """A file the emulator holds (uploaded by the bot or sent by a user); served by getFile."""

    file_id: str
    file_unique_id: str
    filename: str | None
    mime_type: str | None
    data: bytes
    file_path: str
    width: int = 0
    height: int = 0


class _Mismatch(Exception):
    """A value does not conform to a spec type; turned into a 400 (or 500 for our output)."""


class _Params(dict):  # type: ignore[type-arg]
    """Parsed parameters; reading a name the spec lacks raises, so handlers can't drift."""

    def __init__(self, method: str, allowed: set[str], data: dict[str, Any]) -> None:
        super().__init__(data)
        self.method, self.allowed = method, allowed

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self.allowed:
            raise KeyError(f"{self.method} has no parameter {key!r} in the Bot API spec")
        return super().get(key, default)


class TelegramApiSpec:
    """The trimmed official spec: coerces/validates requests and checks the emulator's output."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data, self.methods, self.types = data, data["methods"], data["types"]

    @classmethod
    def load(cls, path: Path = SPEC_SUBSET_PATH) -> TelegramApiSpec:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def parse_params(self, method: str, raw: dict[str, Any]) -> _Params:
        """Coerce request values to their spec types; unknown names are ignored like Telegram."""
        fields = {f["name"]: f for f in self.methods[method].get("fields", [])}
        out: dict[str, Any] = {}
        for name, f in fields.items():
            value = raw.get(name)
            if value is None or value == "":
                if f["required"]:
                    raise _bad(_EMPTY.get(name, f"{name} is empty"))
                continue
            try:
                out[name] = self.conform(value, f["types"], name, strict=False)
            except _Mismatch as exc:
                if name == "reply_markup":
                    raise _bad("can't parse reply keyboard markup JSON object") from exc
                raise _bad(f"can't parse {exc}") from exc
        return _Params(method, set(fields), out)

    def check_result(self, method: str, result: Any) -> None:
        """Raise _Mismatch unless result has only fields and types the spec allows."""
        self.conform(result, self.methods[method]["returns"], method, strict=True)

    def check_object(self, type_name: str, obj: Any) -> None:
        """Raise _Mismatch unless obj is a valid `type_name` with only spec fields."""
        self.conform(obj, [type_name], type_name, strict=True)

    def conform(self, value: Any, types: list[str], where: str, strict: bool) -> Any:
        errors: list[str] = []
        for t in types:
            try:
                return self._conform_one(value, t, where, strict)
            except _Mismatch as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise _Mismatch(errors[0])
        raise _Mismatch(f"{where}: expected {' or '.join(types)} ({'; '.join(errors)})")

    def _conform_one(self, value: Any, t: str, where: str, strict: bool) -> Any:
        if t.startswith("Array of ") or t in self.types and t != "InputFile":
            if isinstance(value, str) and not strict:
                try:
                    value = json.loads(value)
                except ValueError:
                    raise _Mismatch(f"{where}: expected JSON-serialized {t}") from None
        if t.startswith("Array of "):
            if not isinstance(value, list):
                raise _Mismatch(f"{where}: expected {t}")
            return [self.conform(v, [t[9:]], f"{where}[{i}]", strict)
                    for i, v in enumerate(value)]
        if t == "Integer":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if not strict and isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value):
                return int(value)
        elif t == "Float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            if not strict and isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        elif t == "Boolean":
            if isinstance(value, bool):
                return value
            if not strict and str(value).lower() in ("true", "false", "1", "0"):
                return str(value).lower() in ("true", "1")
        elif t == "String":
            if isinstance(value, str):
                return value
            if not strict and isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
        elif t == "InputFile":
            if isinstance(value, UploadedFile) and not strict:
                return value
        elif t in self.types:
            return self._conform_object(value, t, where, strict)
        elif not strict and isinstance(value, (dict, list)):
            return value  # a type this emulator ignores: only its JSON shape is checked
        raise _Mismatch(f"{where}: expected {t}")

    def _conform_object(self, value: Any, t: str, where: str, strict: bool) -> dict[str, Any]:
        spec = self.types[t]
        if "subtypes" in spec:
            subtypes = spec["subtypes"]
            if isinstance(value, dict) and isinstance(value.get("type"), str):
                named = [s for s in subtypes if s.startswith(t) and
                         re.sub(r"(?<!^)(?=[A-Z])", "_", s[len(t):]).lower() == value["type"]]
                subtypes = named or subtypes
            return self.conform(value, subtypes, where, strict)  # type: ignore[no-any-return]
        if not isinstance(value, dict):
            raise _Mismatch(f"{where}: expected {t} object")
        fields = {f["name"]: f for f in spec.get("fields", [])}
        if strict and (unknown := set(value) - set(fields)):
            raise _Mismatch(f"{where}: {t} has no field(s) {sorted(unknown)}")
        out = {}
        for name, f in fields.items():
            if name in value:
                out[name] = self.conform(value[name], f["types"], f"{where}.{name}", strict)
            elif f["required"]:
                raise _Mismatch(f"{where}: {t}.{name} is required")
        return out


class _HtmlToEntities(html.parser.HTMLParser):
    """Telegram's HTML parse mode: plain text plus entities with UTF-16 offsets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.pos = 0
        self.stack: list[tuple[str, int, dict[str, str | None]]] = []
        self.entities: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_ENTITY or tag == "span" and ("class", "tg-spoiler") not in attrs:
            raise _bad(f'can\'t parse entities: Unsupported start tag "{tag}"')
        self.stack.append((tag, self.pos, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            raise _bad(f'can\'t parse entities: Unmatched end tag "{tag}"')
        _, start, attrs = self.stack.pop()
        if self.pos > start:
            entity: dict[str, Any] = {"type": _HTML_ENTITY[tag], "offset": start,
                                      "length": self.pos - start}
            if tag == "a":
                entity["url"] = attrs.get("href") or ""
            if tag == "tg-emoji":
                entity["custom_emoji_id"] = attrs.get("emoji-id") or ""
            self.entities.append(entity)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)
        self.pos += u16len(data)

    def parse(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        self.feed(text)
        self.close()
        if self.stack:
            raise _bad("can't parse entities: Can't find end tag corresponding to start tag "
                       f'"{self.stack[-1][0]}"')
        return "".join(self.parts), sorted(self.entities, key=lambda e: e["offset"])


def _format(text: str, parse_mode: str | None, entities: list[dict[str, Any]] | None,
            limit: int, kind: str) -> dict[str, Any]:
    """Apply parse_mode and Telegram's length limits; returns the text/caption fields.
    HTML is parsed into entities; Markdown modes are accepted but kept verbatim."""
    mode = (parse_mode or "").lower()
    if mode == "html":
        text, entities = _HtmlToEntities().parse(text)
    elif mode not in ("", "markdown", "markdownv2"):
        raise _bad("unsupported parse_mode")
    if kind == "text" and not text.strip():
        raise _bad("message text is empty")
    if u16len(text) > limit:
        raise _bad("message is too long" if kind == "text" else "message caption is too long")
    out: dict[str, Any] = {kind: text} if text else {}
    if entities:
        out["entities" if kind == "text" else "caption_entities"] = entities
    return out


def _check_markup(markup: dict[str, Any] | None) -> None:
    """Telegram's semantic keyboard checks the type spec cannot express."""
    for row in (markup or {}).get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(data.encode("utf-8")) <= 64:
                raise _bad("BUTTON_DATA_INVALID")
            actions = [k for k in _BUTTON_ACTIONS if k in button]
            if not actions:
                raise _bad("can't parse inline keyboard button: Text buttons are unallowed in "
                           "the inline keyboard")
            if len(actions) > 1:  # "Exactly one of the fields other than text ... must be used"
                raise _bad("can't parse inline keyboard button: exactly one action is allowed")
            if "url" in button and not str(button["url"]).startswith(("http://", "https://", "tg://")):
                raise _bad("BUTTON_URL_INVALID")
            if "web_app" in button and not str((button["web_app"] or {}).get("url", "")).startswith("https://"):
                raise _bad("BUTTON_URL_INVALID")  # WebAppInfo.url: "An HTTPS URL"


def _has_web_app(markup: dict[str, Any] | None) -> bool:
    return any("web_app" in b for row in (markup or {}).get("inline_keyboard", []) for b in row)


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG, as Telegram needs a decodable image."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])  # type: ignore[return-value]
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])  # type: ignore[return-value]
    i = 2 if data[:2] == b"\xff\xd8" else len(data)
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def text_content(text: str) -> dict[str, Any]:
    """A typed message's content: /commands get bot_command entities, as real clients produce them."""
    entities = [{"type": "bot_command", "offset": u16len(text[:m.start()]), "length": u16len(m.group())}
                for m in _COMMAND_RE.finditer(text)]
    return {"text": text, **({"entities": entities} if entities else {})}


@dataclass
class _Msg:
    api: dict[str, Any]                     # the Message as the Bot API returns it
    from_bot: bool
    markup: dict[str, Any] | None = None    # any reply_markup kind: the user sees all of them
    file: StoredFile | None = None
    deleted: bool = False


@dataclass
class _Chat:
    """A user and their private chat with the bot (chat id == user id)."""

    user: dict[str, Any]
    started: bool = False
    blocked: bool = False
    next_id: int = 1
    messages: dict[int, _Msg] = field(default_factory=dict)
    seq: int = 0                            # bumps on every bot action, for wait_for
    reply_keyboard: dict[str, Any] | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)
    last_send: float = -math.inf

    title: str | None = None                # a group's: then ``user`` holds only the group's id

    @property
    def api(self) -> dict[str, Any]:
        if self.title is not None:
            return {"id": self.user["id"], "type": "group", "title": self.title}
        keys = ("first_name", "last_name", "username")
        return {"id": self.user["id"], "type": "private",
                **{k: self.user[k] for k in keys if k in self.user}}


@dataclass
class _Fault(Fault):
    retry_after: int | None = None  # a 429's parameters.retry_after


class EmulatorState:
    """Everything the fake Telegram knows; one re-entrant lock guards it all (thread-safe)."""

    def __init__(self, token: str, bot_username: str, bot_first_name: str, spec: TelegramApiSpec,
                 flood_limit_per_chat: float | None, callback_query_ttl: float,
                 self_check: bool) -> None:
        self.token, self.spec, self.self_check = token, spec, self_check
        self.flood_limit, self.query_ttl = flood_limit_per_chat, callback_query_ttl
        self.bot_user = {"id": int(token.split(":")[0]), "is_bot": True,
                         "first_name": bot_first_name, "username": bot_username,
                         "can_join_groups": True, "can_read_all_group_messages": False,
                         "supports_inline_queries": False, "can_connect_to_business": False,
                         "has_main_web_app": False}
        self.cond = threading.Condition(threading.RLock())
        self.chats: dict[int, _Chat] = {}
        self.updates: list[dict[str, Any]] = []
        self.returned: dict[int, dict[str, Any]] = {}  # update_id -> update handed out by getUpdates
        # Like Telegram, update ids only grow, also across emulator runs sharing one bot database
        # (the bot de-duplicates by update_id durably): start from the clock.
        self.next_update_id, self.poll_generation, self.closed = int(time.time() * 10_000), 0, False
        self.allowed_updates: list[str] | None = None
        self.webhook: dict[str, Any] = {"url": ""}
        self.queries: dict[str, tuple[int, float, bool]] = {}  # id -> chat, created, answered
        self.commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.files: dict[str, StoredFile] = {}
        self.faults: list[_Fault] = []
        self.held: set[int] = set()  # chats whose requests hang (a slow network) until released
        self.held_methods: set[str] = set()  # methods whose calls hang (a slow answer) until released
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.canonical = {m.lower(): m for m in spec.methods}

    # --- request entry point -------------------------------------------------------------
    def handle(self, token: str, method: str, raw: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Serve one API call; returns (HTTP status, JSON body). Method names are
        case-insensitive, as on api.telegram.org."""
        if token != self.token:
            return 401, ApiError(401, "Unauthorized").payload()
        name = self.canonical.get(method.lower())
        if name is None:
            log.warning("Telegram emulator: method %r is not emulated", method)
            with self.cond:
                self.log.append((method, dict(raw)))
            return 404, ApiError(404, "Not Found").payload()
        try:
            params = self.spec.parse_params(name, raw)
        except ApiError as exc:
            with self.cond:
                self.log.append((name, dict(raw)))
            return exc.status, exc.payload()
        with self.cond:
            self.log.append((name, dict(params)))
        chat_id = params.get("chat_id") if "chat_id" in params.allowed else None
        with self.cond:
            self.cond.wait_for(lambda: (chat_id not in self.held and name not in self.held_methods) or self.closed)
        try:
            self._take_fault(name, chat_id)
            result = getattr(self, f"_m_{name}")(params)
            if self.self_check:
                try:
                    self.spec.check_result(name, result)
                except _Mismatch as exc:
                    log.error("Telegram emulator self-check failed: %s", exc)
                    raise ApiError(500, f"Internal Server Error: emulator self-check: {exc}")
            return 200, {"ok": True, "result": result}
        except ApiError as exc:
            return exc.status, exc.payload()
        except Exception as exc:  # an emulator bug: answer like a broken server, loudly
            log.exception("Telegram emulator failed on %s", name)
            return 500, ApiError(500, f"Internal Server Error: emulator bug: {exc!r}").payload()

    def _take_fault(self, method: str, chat_id: Any) -> None:
        with self.cond:
            fault = take_fault(self.faults, method, chat_id)
        if fault:
            raise ApiError(fault.status, fault.description, fault.retry_after)

    # --- helpers -------------------------------------------------------------------------
    def _chat(self, chat_id: Any, *, sending: bool = False) -> _Chat:
        chat = self.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None or not chat.started:
            raise _bad("chat not found")
        if chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if sending and self.flood_limit:
            wait = 1.0 / self.flood_limit - (time.monotonic() - chat.last_send)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                raise ApiError(429, f"Too Many Requests: retry after {retry}", retry)
        return chat

    def _bump(self, chat: _Chat) -> None:
        chat.seq += 1
        self.cond.notify_all()

    def _enqueue(self, kind: str, payload: dict[str, Any]) -> None:
        self.updates.append({"update_id": self.next_update_id, kind: payload})
        self.next_update_id += 1
        self.cond.notify_all()

    def _new_message(self, chat: _Chat, content: dict[str, Any], *, from_bot: bool,
                     markup: dict[str, Any] | None = None,
                     file: StoredFile | None = None, sender: dict[str, Any] | None = None) -> dict[str, Any]:
        sender = ({k: self.bot_user[k] for k in ("id", "is_bot", "first_name", "username")}
                  if from_bot else sender or chat.user)  # getMe's capability flags are not repeated
        api = {"message_id": chat.next_id, "from": sender,
               "chat": chat.api, "date": int(time.time()), **content}
        if markup and "inline_keyboard" in markup:
            api["reply_markup"] = markup
        chat.messages[chat.next_id] = _Msg(copy.deepcopy(api), from_bot, markup, file)
        chat.next_id += 1
        return api

    def _find_message(self, p: _Params, missing: str) -> tuple[_Chat, _Msg]:
        if "inline_message_id" in p.allowed and p.get("inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")  # inline messages are not emulated
        if p.get("chat_id") is None:
            raise _bad("chat_id is empty")
        if p.get("message_id") is None:
            raise _bad("message identifier is not specified")
        chat = self._chat(p.get("chat_id"))
        msg = chat.messages.get(p.get("message_id"))
        if msg is None or msg.deleted:
            raise _bad(missing)
        return chat, msg

    def _store_file(self, value: UploadedFile | str, kind: str) -> StoredFile:
        if isinstance(value, str):
            if value in self.files:
                return self.files[value]
            if not re.match(r"https?://", value):
                raise _bad("wrong file identifier/HTTP URL specified")
            value = UploadedFile(value.rsplit("/", 1)[-1] or kind, "", b"")  # not downloaded
        elif not value.data:
            raise _bad("file must be non-empty")
        if len(value.data) > 50 * 1024 * 1024:
            raise ApiError(413, "Request Entity Too Large")
        size = _image_size(value.data) if kind == "photo" else (0, 0)
        if size is None and value.data:
            raise _bad("IMAGE_PROCESS_FAILED")
        n = len(self.files) + 1
        mime = value.content_type or mimetypes.guess_type(value.filename)[0]
        ext = Path(value.filename).suffix or (".jpg" if kind == "photo" else "")
        stored = StoredFile(f"{'AgAC' if kind == 'photo' else 'BQAC'}AgIAAxkBAAI{n:06d}",
                            f"AQAD{n:06d}", value.filename, mime, value.data,
                            f"{kind}s/file_{n}{ext}", *(size or (0, 0)))
        self.files[stored.file_id] = stored
        return stored

    # --- API methods (names match the Bot API) ------------------------------------------
    def _m_getMe(self, p: _Params) -> dict[str, Any]:
        return dict(self.bot_user)

    def _m_getUpdates(self, p: _Params) -> list[dict[str, Any]]:
        """Long polling: confirm by offset, then hold until an update arrives or timeout."""
        deadline = time.monotonic() + max(p.get("timeout") or 0, 0)
        limit = min(max(p.get("limit") or 100, 1), 100)
        with self.cond:
            if self.webhook["url"]:
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is "
                                    "active; use deleteWebhook to delete the webhook first")
            if p.get("allowed_updates") is not None:
                self.allowed_updates = p.get("allowed_updates") or None
            offset = p.get("offset")
            if offset is not None:
                self.updates = (self.updates[offset:] if offset < 0 else
                                [u for u in self.updates if u["update_id"] >= offset])
            self.poll_generation += 1
            generation = self.poll_generation
            self.cond.notify_all()
            while True:
                if self.poll_generation != generation:
                    raise ApiError(409, "Conflict: terminated by other getUpdates request; make "
                                        "sure that only one bot instance is running")
                if self.allowed_updates:  # Telegram never creates the other kinds
                    self.updates = [u for u in self.updates
                                    if any(kind in u for kind in self.allowed_updates)]
                remaining = deadline - time.monotonic()
                if self.updates or self.closed or remaining <= 0:
                    for u in self.updates[:limit]:
                        self.returned[u["update_id"]] = copy.deepcopy(u)
                    return copy.deepcopy(self.updates[:limit])
                self.cond.wait(remaining)

    def _m_setWebhook(self, p: _Params) -> bool:
        url = p.get("url")
        if url == "":  # "Use an empty string to remove webhook integration"
            with self.cond:
                self.webhook = {"url": ""}
            return True
        if not url.startswith("https://"):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise _bad("secret token contains unallowed characters")
        connections = p.get("max_connections") or 40
        if not 1 <= connections <= 100:
            raise _bad("bad webhook: max_connections must be between 1 and 100")
        with self.cond:
            self.webhook = {"url": url, "max_connections": connections}
            if secret:
                self.webhook["secret_token"] = secret
            if p.get("allowed_updates") is not None:
                self.allowed_updates = p.get("allowed_updates") or None
            if p.get("drop_pending_updates"):
                self.updates.clear()
            self.cond.notify_all()
        return True

    def _m_deleteWebhook(self, p: _Params) -> bool:
        with self.cond:
            self.webhook = {"url": ""}
            if p.get("drop_pending_updates"):
                self.updates.clear()
        return True

    def _m_getWebhookInfo(self, p: _Params) -> dict[str, Any]:
        with self.cond:
            info = {**{k: v for k, v in self.webhook.items() if k != "secret_token"},
                    "has_custom_certificate": False, "pending_update_count": len(self.updates)}
            if self.webhook["url"] and self.allowed_updates:
                info["allowed_updates"] = list(self.allowed_updates)
            return info

    @staticmethod
    def _commands_key(p: _Params) -> tuple[str, str]:
        scope = json.dumps(p.get("scope") or {"type": "default"}, sort_keys=True)
        return scope, p.get("language_code") or ""

    def _m_setMyCommands(self, p: _Params) -> bool:
        commands = p.get("commands")
        if len(commands) > 100:
            raise _bad("BOT_COMMANDS_TOO_MUCH")
        for c in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", c["command"]):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(c["description"]) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        with self.cond:
            self.commands[self._commands_key(p)] = commands
        return True

    def _m_getMyCommands(self, p: _Params) -> list[dict[str, str]]:
        with self.cond:
            return copy.deepcopy(self.commands.get(self._commands_key(p), []))

    def _m_deleteMyCommands(self, p: _Params) -> bool:
        with self.cond:
            self.commands.pop(self._commands_key(p), None)
        return True

    def _m_sendMessage(self, p: _Params) -> dict[str, Any]:
        with self.cond:
            self._chat(p.get("chat_id"))  # "chat not found" comes before text checks
        content = _format(p.get("text"), p.get("parse_mode"), p.get("entities"), 4096, "text")
        if p.get("link_preview_options"):
            content["link_preview_options"] = p.get("link_preview_options")
        return self._send(p, content)

    def _m_sendDocument(self, p: _Params) -> dict[str, Any]:
        return self._send_file(p, "document")

    def _m_sendPhoto(self, p: _Params) -> dict[str, Any]:
        return self._send_file(p, "photo")

    def _send_file(self, p: _Params, kind: str) -> dict[str, Any]:
        with self.cond:
            self._chat(p.get("chat_id"))
        content = _format(p.get("caption") or "", p.get("parse_mode"),
                          p.get("caption_entities"), 1024, "caption")
        with self.cond:
            self._chat(p.get("chat_id"), sending=True)  # fail before storing the file
            f = self._store_file(p.get(kind), kind)
        base = {"file_id": f.file_id, "file_unique_id": f.file_unique_id,
                "file_size": len(f.data)}
        if kind == "photo":
            content["photo"] = [{**base, "width": f.width, "height": f.height}]
        else:
            content["document"] = {**base, **({"file_name": f.filename} if f.filename else {}),
                                   **({"mime_type": f.mime_type} if f.mime_type else {})}
        return self._send(p, content, f)

    def _send(self, p: _Params, content: dict[str, Any],
              file: StoredFile | None = None) -> dict[str, Any]:
        markup = p.get("reply_markup")
        _check_markup(markup)
        with self.cond:
            chat = self._chat(p.get("chat_id"), sending=True)
            if _has_web_app(markup) and chat.api.get("type", "private") != "private":
                raise _bad("BUTTON_TYPE_INVALID")  # web_app: "Available only in private chats"
            chat.last_send = time.monotonic()
            if markup and "keyboard" in markup:
                chat.reply_keyboard = markup
            elif markup and "remove_keyboard" in markup:
                chat.reply_keyboard = None
            api = self._new_message(chat, content, from_bot=True, markup=markup, file=file)
            self._bump(chat)
            return copy.deepcopy(api)

    def _m_editMessageText(self, p: _Params) -> dict[str, Any]:
        content = _format(p.get("text") or "", p.get("parse_mode"), p.get("entities"),
                          4096, "text")
        if p.get("link_preview_options"):
            content["link_preview_options"] = p.get("link_preview_options")
        return self._edit(p, content, ("text", "entities", "link_preview_options"))

    def _m_editMessageReplyMarkup(self, p: _Params) -> dict[str, Any]:
        return self._edit(p, {}, ())

    def _edit(self, p: _Params, content: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        markup = p.get("reply_markup")  # omitted -> the inline keyboard is removed, as on TG
        _check_markup(markup)
        with self.cond:
            chat, msg = self._find_message(p, "message to edit not found")
            if not msg.from_bot:
                raise _bad("message can't be edited")
            if keys and "text" not in msg.api:
                raise _bad("there is no text in the message to edit")
            old = {k: msg.api.get(k) for k in keys[:2]}
            if old == {k: content.get(k) for k in keys[:2]} and msg.markup == markup:
                raise _bad(NOT_MODIFIED.removeprefix("Bad Request: "))
            for k in keys:
                msg.api.pop(k, None)
            msg.api.pop("reply_markup", None)
            msg.api.update(content, edit_date=int(time.time()))
            if markup:
                msg.api["reply_markup"] = markup
            msg.markup = markup
            self._bump(chat)
            return copy.deepcopy(msg.api)

    def _m_deleteMessage(self, p: _Params) -> bool:
        with self.cond:
            chat, msg = self._find_message(p, "message to delete not found")
            msg.deleted = True
            self._bump(chat)
        return True

    def _m_answerCallbackQuery(self, p: _Params) -> bool:
        text = p.get("text")
        if text and u16len(text) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        with self.cond:
            query_id = p.get("callback_query_id")
            chat_id, created, answered = self.queries.get(query_id, (0, 0.0, True))
            if answered or time.monotonic() - created > self.query_ttl:
                raise _bad(QUERY_TOO_OLD.removeprefix("Bad Request: "))
            self.queries[query_id] = (chat_id, created, True)
            chat = self.chats[chat_id]
            chat.answers.append({"callback_query_id": query_id, "text": text,
                                 "show_alert": bool(p.get("show_alert")), "url": p.get("url")})
            self._bump(chat)
        return True

    def _m_sendChatAction(self, p: _Params) -> bool:
        if p.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        with self.cond:
            self._chat(p.get("chat_id"))
        return True

    def _m_getFile(self, p: _Params) -> dict[str, Any]:
        with self.cond:
            f = self.files.get(p.get("file_id"))
        if f is None:
            raise _bad("invalid file_id")
        if len(f.data) > 20 * 1024 * 1024:
            raise _bad("file is too big")
        return {"file_id": f.file_id, "file_unique_id": f.file_unique_id,
                "file_size": len(f.data), "file_path": f.file_path}

    # --- user side (called by the driver) -------------------------------------------------
    def user_message(self, user_id: int, content: dict[str, Any]) -> dict[str, Any]:
        """A user writes to the bot: store the message and queue an Update."""
        with self.cond:
            chat = self.chats[user_id]
            chat.started, chat.blocked = True, False  # writing to a bot unblocks it
            keyboard = chat.reply_keyboard
            if keyboard and keyboard.get("one_time_keyboard"):
                chat.reply_keyboard = None
            api = self._new_message(chat, content, from_bot=False)
            self._enqueue("message", copy.deepcopy(api))
            return api

    def user_edit(self, user_id: int, message_id: int, text: str) -> dict[str, Any]:
        """A user edits a text message they sent: store it and queue an ``edited_message`` Update."""
        with self.cond:
            msg = self.chats[user_id].messages.get(message_id)
            if msg is None or msg.from_bot or "text" not in msg.api:
                raise LookupError(f"no text message {message_id} from user {user_id}")
            msg.api.pop("entities", None)
            msg.api.update(text_content(text), edit_date=int(time.time()))
            self._enqueue("edited_message", copy.deepcopy(msg.api))
            return copy.deepcopy(msg.api)

    def group_message(self, group_id: int, title: str, user_id: int, text: str) -> dict[str, Any]:
        """A user writes in a group the bot is in (privacy mode on: the bot gets commands only, which is what
        tests send): store the message and queue an Update."""
        with self.cond:
            chat = self.chats.setdefault(group_id, _Chat({"id": group_id}, started=True, title=title))
            api = self._new_message(chat, text_content(text), from_bot=False, sender=self.chats[user_id].user)
            self._enqueue("message", copy.deepcopy(api))
            return api

    def press(self, user_id: int, label: str, message_id: int | None) -> str:
        """A user taps an inline button: queue a CallbackQuery Update, return its id."""
        with self.cond:
            chat = self.chats[user_id]
            seen: list[str] = []
            for msg in sorted(chat.messages.values(), key=lambda m: -m.api["message_id"]):
                mid = msg.api["message_id"]
                if msg.deleted or not msg.from_bot or message_id not in (None, mid):
                    continue
                for row in msg.api.get("reply_markup", {}).get("inline_keyboard", []):
                    for button in row:
                        seen.append(f"#{msg.api['message_id']} {button['text']!r}")
                        if label not in (button["text"], button.get("callback_data")):
                            continue
                        if "callback_data" not in button:
                            raise ValueError(f"button {button['text']!r} has no callback_data")
                        query_id = str(4_000_000_000_000_000 + self.next_update_id)
                        self.queries[query_id] = (user_id, time.monotonic(), False)
                        self._enqueue("callback_query", {
                            "id": query_id, "from": chat.user, "message": copy.deepcopy(msg.api),
                            "chat_instance": str(-(10**18) - user_id),
                            "data": button["callback_data"]})
                        return query_id
            raise LookupError(f"no inline button {label!r} in chat {user_id}; buttons: {seen}")

    def forge_press(self, user_id: int, data: str, message_id: int | None) -> str:
        """A modified client sends callback data that no button carries, on the newest bot
        message (or message_id): queue that CallbackQuery Update, return its id."""
        with self.cond:
            chat = self.chats[user_id]
            pressed = [m for m in chat.messages.values() if m.from_bot and not m.deleted
                       and message_id in (None, m.api["message_id"])]
            if not pressed:
                raise LookupError(f"no bot message to press in chat {user_id}")
            query_id = str(4_000_000_000_000_000 + self.next_update_id)
            self.queries[query_id] = (user_id, time.monotonic(), False)
            self._enqueue("callback_query", {
                "id": query_id, "from": chat.user, "message": copy.deepcopy(pressed[-1].api),
                "chat_instance": str(-(10**18) - user_id), "data": data})
            return query_id

    def replay(self, update_id: int) -> dict[str, Any]:
        """Hand out again an update already returned by getUpdates, with its own update_id."""
        with self.cond:
            update = self.returned.get(update_id)
            if update is None:
                raise LookupError(f"update {update_id} was never returned to the bot")
            if all(u["update_id"] != update_id for u in self.updates):
                self.updates.append(copy.deepcopy(update))
                self.updates.sort(key=lambda u: u["update_id"])
            self.cond.notify_all()
            return copy.deepcopy(update)

    def close(self) -> None:
        """Release every held long poll so the HTTP server can stop promptly."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()


async def _read_params(request: Request) -> dict[str, Any]:
    """Query string plus a JSON, urlencoded or multipart body, as Telegram accepts them all."""
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    body = await request.body()
    if not body:
        return params
    if kind == "application/json":
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("JSON object expected")
        params.update(data)
    elif kind == "application/x-www-form-urlencoded":
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    elif kind == "multipart/form-data":
        params.update(_parse_multipart(content_type, body))
    return params


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """Minimal multipart/form-data parser (keeps python-multipart out of the dependencies)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ValueError("multipart boundary missing")
    out: dict[str, Any] = {}
    for part in (b"\r\n" + body).split(b"\r\n--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        headers = dict(line.split(":", 1) for line in head.decode("utf-8").splitlines()
                       if ":" in line)
        headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
        disposition = dict((k.lower(), unquote(v.replace("%22", '"')))
                           for k, v in re.findall(r';\s*([\w*]+)="((?:[^"\\]|\\.)*)"',
                                                  headers.get("content-disposition", "")))
        name = disposition.get("name")
        if name is None:
            continue
        if "filename" in disposition:
            out[name] = UploadedFile(disposition["filename"],
                                     headers.get("content-type", ""), data)
        else:
            out[name] = data.decode("utf-8")
    return out


class EmulatorServer(BackgroundServer):
    """Serves EmulatorState over HTTP with uvicorn in a daemon thread with its own loop."""

    thread_name = "telegram-emulator"
    description = "Telegram emulator"

    def __init__(self, state: EmulatorState, host: str = "127.0.0.1", port: int = 0, round_trip: float = 0.0) -> None:
        super().__init__(host, port)
        self.state, self.round_trip = state, round_trip

    def _app(self) -> Starlette:
        async def api(request: Request) -> Response:
            if self.round_trip:
                await asyncio.sleep(self.round_trip)
            try:
                raw = await _read_params(request)
            except (ValueError, UnicodeDecodeError) as exc:
                return JSONResponse(_bad(f"can't parse request: {exc}").payload(), 400)
            status, body = await run_in_threadpool(
                self.state.handle, request.path_params["token"], request.path_params["method"],
                raw)
            return api_response(body, status)

        async def file(request: Request) -> Response:
            state, path = self.state, request.path_params["file_path"]
            with state.cond:
                found = [f for f in state.files.values() if f.file_path == path]
            if request.path_params["token"] != state.token or not found:
                return JSONResponse(ApiError(404, "Not Found").payload(), 404)
            return Response(found[0].data, media_type=found[0].mime_type)

        return Starlette(routes=[
            Route("/bot{token}/{method}", api, methods=["GET", "POST"]),
            Route("/file/bot{token}/{file_path:path}", file, methods=["GET"]),
        ])


class EmulatedUser(ChatDriver[EmulatorState]):
    """Plays one Telegram user in a private chat with the bot; every call is thread-safe.
    wait_for counts every bot action in the chat: messages, edits, deletions, answers."""

    def __init__(self, state: EmulatorState, user_id: int) -> None:
        super().__init__(state, user_id)
        self.id = user_id

    def send_text(self, text: str) -> dict[str, Any]:
        """Send a text message; /commands get bot_command entities like real clients produce."""
        self.mark()
        return self._state.user_message(self.id, text_content(text))

    def send_contact(self, phone_number: str, user_id: int | None = None,
                     first_name: str | None = None, last_name: str | None = None
                     ) -> dict[str, Any]:
        """Share a contact: the user's own (as a request_contact button does) or, with
        user_id, someone else's, to exercise "that is not your number" checks."""
        me = self._chat.user
        own = user_id in (None, self.id)
        contact = {"phone_number": phone_number,
                   "first_name": first_name or (me["first_name"] if own else "Contact"),
                   "user_id": self.id if own else user_id}
        if last_name or own and "last_name" in me:
            contact["last_name"] = last_name or me["last_name"]
        self.mark()
        return self._state.user_message(self.id, {"contact": contact})

    def send_document(self, filename: str, data: bytes, caption: str | None = None,
                      mime_type: str | None = None) -> dict[str, Any]:
        """Send a file to the bot (e.g. a roster spreadsheet); the bot can getFile it."""
        with self._state.cond:
            f = self._state._store_file(UploadedFile(filename, mime_type or "", data), "document")
        document = {"file_id": f.file_id, "file_unique_id": f.file_unique_id,
                    "file_name": filename, "file_size": len(data)}
        if f.mime_type:
            document["mime_type"] = f.mime_type
        self.mark()
        return self._state.user_message(
            self.id, {"document": document, **({"caption": caption} if caption else {})})

    def edit_text(self, message_id: int, text: str) -> dict[str, Any]:
        """Edit a text message this user sent (the bot gets an ``edited_message``)."""
        self.mark()
        return self._state.user_edit(self.id, message_id, text)

    def send_content(self, content: dict[str, Any]) -> dict[str, Any]:
        """Send a message whose content (``{"poll": {...}}``, a sticker...) is given as Telegram would put it,
        unchecked: with ``self_check=False`` it may be what a client's library cannot read."""
        self.mark()
        return self._state.user_message(self.id, copy.deepcopy(content))

    def press(self, label_or_data: str, message_id: int | None = None) -> str:
        """Tap the inline button with this text or callback_data on the newest bot message
        having it (or on message_id); returns the callback query id."""
        self.mark()
        return self._state.press(self.id, label_or_data, message_id)

    def forge_press(self, data: str, message_id: int | None = None) -> str:
        """An intruder's tap: callback data no button carries (``s:1:9999999999999999999``)."""
        self.mark()
        return self._state.forge_press(self.id, data, message_id)

    def open_web_app(self, label: str, *, auth_date: int | None = None) -> str:
        """Tap a ``web_app`` button: the address Telegram's webview loads, i.e. the button's URL
        with ``#tgWebAppData=<initData>`` signed as Telegram signs it (Initializing Mini Apps)."""
        with self._state.cond:
            button = next((b for m in reversed(list(self._chat.messages.values())) if m.from_bot
                           for row in (m.markup or {}).get("inline_keyboard", []) for b in row
                           if "web_app" in b and b["text"] == label), None)
            user = {k: v for k, v in self._chat.user.items() if k != "is_bot"}
        if button is None:
            raise ValueError(f"no web_app button {label!r} in this chat")
        return f"{button['web_app']['url']}#{web_app_fragment(user, self._state.token, auth_date)}"

    def _view(self, msg: _Msg) -> dict[str, Any]:
        view = copy.deepcopy(msg.api)
        if msg.markup:
            view["reply_markup"] = copy.deepcopy(msg.markup)
        if msg.file:
            view["file"] = msg.file
        return view

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Bot messages as the user sees them now (edits applied, deletions gone); reply
        keyboards show as reply_markup and files as "file" (a StoredFile with the bytes)."""
        with self._state.cond:
            return [self._view(m) for m in self._chat.messages.values()
                    if m.from_bot and not m.deleted]

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` bot messages as ``messages`` shows them, copying only those."""
        with self._state.cond:
            newest = []
            for m in reversed(self._chat.messages.values()):
                if len(newest) == n:
                    break
                if m.from_bot and not m.deleted:
                    newest.append(self._view(m))
            return newest[::-1]

    @property
    def reply_keyboard(self) -> dict[str, Any] | None:
        """The ReplyKeyboardMarkup currently shown under the input field, if any."""
        with self._state.cond:
            return copy.deepcopy(self._chat.reply_keyboard)

    @property
    def callback_answers(self) -> list[dict[str, Any]]:
        """answerCallbackQuery calls for this user's queries (text, show_alert, url)."""
        with self._state.cond:
            return copy.deepcopy(self._chat.answers)

    def transcript(self) -> str:
        """The chat as text, for failure messages."""
        lines = []
        with self._state.cond:
            for m in self._chat.messages.values():
                a = m.api
                body = a.get("text") or a.get("caption") or ""
                if "contact" in a:
                    body = f"[contact {a['contact']['phone_number']}] {body}"
                if m.file:
                    body = f"[file {m.file.filename}] {body}"
                rows = (m.markup or {}).get("inline_keyboard") or (m.markup or {}).get("keyboard")
                if rows:
                    body += " " + " / ".join(
                        "[" + " | ".join(b["text"] for b in row) + "]" for row in rows)
                who = "bot " if m.from_bot else "user"
                gone = " (deleted)" if m.deleted else ""
                lines.append(f"  {who} #{a['message_id']}{gone}: {body}")
            lines += [f"  answer: {a['text']!r} alert={a['show_alert']}"
                      for a in self._chat.answers]
        return "\n".join(lines) or "  (empty)"


def web_app_hash(fields: dict[str, str], token: str) -> str:
    """Telegram's ``hash`` of Mini App init data: HMAC-SHA256 keyed by HMAC("WebAppData", token)
    over the sorted ``key=value`` lines of every other field."""
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "hash")
    return hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()


def web_app_fragment(user: dict[str, Any], token: str, auth_date: int | None = None) -> str:
    """The fragment Telegram appends to a Mini App's address for ``user``: signed ``tgWebAppData``."""
    fields = {"query_id": f"AAH{user['id']}", "user": json.dumps(user, ensure_ascii=False, separators=(",", ":")),
              "auth_date": str(auth_date if auth_date is not None else int(time.time()))}
    fields["hash"] = web_app_hash(fields, token)
    return urlencode({"tgWebAppData": urlencode(fields, quote_via=quote), "tgWebAppVersion": "8.0",
                      "tgWebAppPlatform": "android"}, quote_via=quote)


class TelegramEmulator:
    """Facade: a fake api.telegram.org on 127.0.0.1, user drivers and fault injection."""

    def __init__(self, token: str = "123456:TEST-TOKEN", bot_username: str = "hoctap_test_bot",
                 *, bot_first_name: str = "HocTap Test Bot",
                 flood_limit_per_chat: float | None = None, callback_query_ttl: float = 15.0,
                 self_check: bool = True, host: str = "127.0.0.1", port: int = 0,
                 spec: TelegramApiSpec | None = None, webhook_targets: list[str] | None = None,
                 webhook_retry_delay: float = 0.5, round_trip: float = 0.0) -> None:
        """flood_limit_per_chat: messages per second one chat accepts before 429 (None = off).
        callback_query_ttl: seconds after which answerCallbackQuery says "query is too old".
        self_check: validate every result against the spec (a 500 exposes emulator drift).
        port: 0 picks a free port; a fixed one suits the interactive playground.
        webhook_targets: where a webhook's updates go, round-robin (the reverse proxy's backends,
        e.g. ``http://127.0.0.1:8081``); without them, the webhook URL itself.
        round_trip: seconds each Bot API call waits before it is served, as the network to Telegram's servers
        makes it (benchmarks: what a member waits for, not only what the machine spends)."""
        self.token = token
        self.spec = spec or TelegramApiSpec.load()
        self._state = EmulatorState(token, bot_username, bot_first_name, self.spec,
                                    flood_limit_per_chat, callback_query_ttl, self_check)
        self._server = EmulatorServer(self._state, host, port, round_trip)
        self._users: dict[int, EmulatedUser] = {}
        self._started = False
        self.webhook = WebhookDelivery(self._state, targets=webhook_targets, retry_delay=webhook_retry_delay)

    def start(self) -> TelegramEmulator:
        self._server.start()
        self.webhook.start()
        self._started = True
        return self

    def polls_started(self) -> int:
        """How many getUpdates calls have started: each new one ends the one waiting before it."""
        return self._state.poll_generation

    def stop(self) -> None:
        self._state.close()
        self.webhook.join()
        self._server.stop()
        self._started = False

    def __enter__(self) -> TelegramEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """For ApplicationBuilder().base_url(); PTB appends the token."""
        if not self._started:
            raise RuntimeError("TelegramEmulator is not started")
        return f"http://{self._server.host}:{self._server.port}/bot"

    @property
    def base_file_url(self) -> str:
        return self.base_url.replace("/bot", "/file/bot")

    @property
    def bot_user(self) -> dict[str, Any]:
        return dict(self._state.bot_user)

    def user(self, user_id: int, first_name: str = "Test", last_name: str | None = None,
             username: str | None = None, language_code: str | None = "vi") -> EmulatedUser:
        """Driver for a user (created on first call; later calls return the same driver)."""
        with self._state.cond:
            if user_id not in self._state.chats:
                info = {"id": user_id, "is_bot": False, "first_name": first_name,
                        "last_name": last_name, "username": username,
                        "language_code": language_code}
                user = {k: v for k, v in info.items() if v is not None}
                self._state.chats[user_id] = _Chat(user)
                self._users[user_id] = EmulatedUser(self._state, user_id)
            return self._users[user_id]

    def group_says(self, group_id: int, user_id: int, text: str, title: str = "Chi bộ ấp 1") -> dict[str, Any]:
        """``user_id`` (a ``user`` of this emulator) writes ``text`` in the group ``group_id`` (negative)."""
        return self._state.group_message(group_id, title, user_id, text)

    def group_messages(self, group_id: int) -> list[dict[str, Any]]:
        """What the bot sent in the group."""
        with self._state.cond:
            chat = self._state.chats.get(group_id)
            return [copy.deepcopy(m.api) for m in chat.messages.values() if m.from_bot] if chat else []

    def deliver(self, kind: str, payload: dict[str, Any]) -> int:
        """Queue an update of ``kind`` (``business_message``, a ``message`` without ``from``...) with ``payload``
        as given, unchecked: what other ``allowed_updates`` or an odd client would bring. Returns its update_id."""
        with self._state.cond:
            self._state._enqueue(kind, copy.deepcopy(payload))
            return self._state.updates[-1]["update_id"]

    def lift_flood_limit(self) -> None:
        """Every chat accepts messages at any rate from now on (a test done measuring a burst)."""
        with self._state.cond:
            self._state.flood_limit = None

    def inject_error(self, method: str, status: int, *, retry_after: int | None = None,
                     description: str | None = None, times: int = 1,
                     chat_id: int | str | None = None, after: int = 0) -> None:
        """Make the next `times` calls of method ("*" = any) fail, optionally only for one
        chat, once `after` of them went through; a 429 carries parameters.retry_after (default 1)."""
        if status == 429:
            retry_after = retry_after or 1
            description = description or f"Too Many Requests: retry after {retry_after}"
        if description is None:
            description = {400: "Bad Request", 403: "Forbidden"}.get(
                status, HTTPStatus(status).phrase)
        method = self._state.canonical.get(method.lower(), method)
        with self._state.cond:
            self._state.faults.append(
                _Fault(method, status, description, times, chat_id, after, retry_after=retry_after))

    def hold(self, user_id: int) -> None:
        """Requests into this chat hang, as on a stalled network, until ``release``: logged
        (``requests``) when they arrive, answered (and delivered) only after."""
        with self._state.cond:
            self._state.held.add(user_id)

    def release(self, user_id: int) -> None:
        with self._state.cond:
            self._state.held.discard(user_id)
            self._state.cond.notify_all()

    def hold_method(self, method: str) -> None:
        """Calls of ``method`` hang until ``release_method``: logged when they arrive, answered after."""
        with self._state.cond:
            self._state.held_methods.add(self._state.canonical.get(method.lower(), method))

    def release_method(self, method: str) -> None:
        with self._state.cond:
            self._state.held_methods.discard(self._state.canonical.get(method.lower(), method))
            self._state.cond.notify_all()

    def clear_errors(self) -> None:
        with self._state.cond:
            self._state.faults.clear()

    def block(self, user_id: int) -> None:
        """The user blocks the bot: sends to their chat get 403 until they write again."""
        with self._state.cond:
            self._state.chats[user_id].blocked = True

    def unblock(self, user_id: int) -> None:
        with self._state.cond:
            self._state.chats[user_id].blocked = False

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        """Every API call the bot made, in order, as (method, parsed params)."""
        with self._state.cond:
            return list(self._state.log)

    def calls(self, method: str) -> list[dict[str, Any]]:
        """Params of every call of one method."""
        return [params for name, params in self.requests if name == method]

    def reset_log(self) -> None:
        with self._state.cond:
            self._state.log.clear()

    def replay_last(self, user_id: int) -> dict[str, Any]:
        """Deliver again the newest update from this user that getUpdates already returned.

        Telegram hands an update out again until a getUpdates confirms it with a higher offset
        (a bot killed before its next poll) and retries a webhook delivery that got no 2xx. A
        running bot has confirmed offsets past it and would never see it: restart the bot after
        calling this, as after a crash."""
        with self._state.cond:
            for update_id, update in reversed(self._state.returned.items()):
                body = update.get("message") or update.get("callback_query") or {}
                if body.get("from", {}).get("id") == user_id:
                    return self._state.replay(update_id)
        raise LookupError(f"no update from {user_id} was returned to the bot yet")

    def webhook_info(self) -> dict[str, Any]:
        """What getWebhookInfo answers."""
        return self._state.handle(self.token, "getWebhookInfo", {})[1]["result"]

    def updates_pending(self) -> int:
        """Updates not yet confirmed by the bot (as getWebhookInfo.pending_update_count)."""
        with self._state.cond:
            return len(self._state.updates)

    def pending_update_ids(self) -> list[int]:
        """The ids of the updates not yet confirmed by the bot, oldest first."""
        with self._state.cond:
            return [u["update_id"] for u in self._state.updates]

    def my_commands(self, language_code: str = "") -> list[dict[str, str]]:
        """The default-scope commands the bot registered with setMyCommands."""
        key = (json.dumps({"type": "default"}), language_code)
        with self._state.cond:
            return copy.deepcopy(self._state.commands.get(key, []))

    def file(self, file_id: str) -> StoredFile:
        with self._state.cond:
            return self._state.files[file_id]
