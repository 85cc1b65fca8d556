"""What a Zalo update must look like before the bot acts on it, however it arrived (long polling or
the webhook). It exists so that a forged or broken body is refused in one place (the webhook answers
400) instead of failing deep inside the conversation: ids must fit the columns they are stored in
(``message_id`` is the durable de-duplication key, ``chat.id`` the account's external id).
"""

from __future__ import annotations

from typing import Any

ID_LIMIT = 64  # ProcessedUpdate.update_key, ChatAccount.external_id
NAME_LIMIT = 128


def _id(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    return 0 < len(str(value)) <= ID_LIMIT


def _text(value: Any, limit: int | None = None) -> bool:
    return isinstance(value, str) and (limit is None or len(value) <= limit)


def _optional_text(value: Any) -> bool:
    return value is None or isinstance(value, str)


def well_formed(update: Any) -> bool:
    """``{event_name, message: {message_id, chat: {id, chat_type?}, from?: {id?, display_name?},
    text?}}`` with ids of at most 64 characters; other fields are free (new kinds of events appear)."""
    if not isinstance(update, dict) or not (_text(update.get("event_name"), NAME_LIMIT) and update["event_name"]):
        return False
    message = update.get("message")
    if not isinstance(message, dict) or not _id(message.get("message_id")):
        return False
    chat, sender = message.get("chat"), message.get("from", {})
    if not isinstance(chat, dict) or not _id(chat.get("id")) or not _text(chat.get("chat_type", ""), NAME_LIMIT):
        return False
    if not isinstance(sender, dict) or ("id" in sender and not _id(sender["id"])):
        return False
    if not all(_optional_text(sender.get(key)) for key in ("display_name", "name")):
        return False
    return _optional_text(message.get("text"))


def in_group(update: dict) -> bool:
    """A group's message: ``chat_type`` GROUP, or (where it is missing) a chat that is not its sender's own (in a
    private chat ``chat.id == from.id``): replies there go to everyone in the group."""
    message = update.get("message") if isinstance(update.get("message"), dict) else {}
    chat = message.get("chat") if isinstance(message.get("chat"), dict) else {}
    sender = message.get("from") if isinstance(message.get("from"), dict) else {}
    if "chat_type" in chat:
        return str(chat["chat_type"]).upper() == "GROUP"
    return "id" in sender and str(sender["id"]) != str(chat.get("id"))


def unwrap_update(body: Any) -> dict | None:
    """The update in ``{ok, result: update}`` or a bare update, if it is well formed; else None."""
    if isinstance(body, dict) and isinstance(body.get("result"), dict):
        body = body["result"]
    return body if well_formed(body) else None
