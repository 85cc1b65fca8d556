"""Link a chat account to a member: by single-use invite code or by the member's own phone number.

Two kinds of code: a long one carried by a Telegram deep link, and a short one that a member types
on a phone (Zalo has no deep-link parameter): 8 characters from an alphabet without look-alikes
(no 0/O, 1/I/L), case-insensitive, shown as ``K7PM-X3QD``; spaces and dashes of every kind are
ignored (``K7PM–X3QD``, with the en dash a phone keyboard makes, is the same code).
"""

from __future__ import annotations

import logging
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bot.domain.phones import display_phone, normalize_phone
from bot.storage.models import ChatAccount, LinkCode, Member, UnitAncestor, ZaloBot

log = logging.getLogger(__name__)

# Deep-link payloads allow A-Z a-z 0-9 _ - up to 64 characters; 128 random bits is unguessable.
CODE_BYTES = 16
# Typed codes: 31 symbols ** 8 ≈ 40 bits; with WRONG_CODES_LIMIT tries per CODE_PAUSE per chat,
# guessing one is out of reach.
SHORT_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
SHORT_LENGTH = 8
WRONG_CODES_LIMIT = 5
CODE_PAUSE = timedelta(minutes=15)
TYPED_CODE_CHANNELS = ("zalo", "zalo_oa")
# where the code of an invitation made for a messenger works: a Zalo code on the Zalo bot and the OA
CODE_WORKS_ON = {"telegram": ("telegram",), "zalo": TYPED_CODE_CHANNELS, "zalo_oa": TYPED_CODE_CHANNELS}
_OTHER_SEPARATORS = frozenset("_.\u2212\u2043")  # and every dash, space and format character
_LONG_CODE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass
class LinkResult:
    status: str  # linked | already | unknown | used | member_taken | account_taken | inactive | for_zalo | for_telegram
    member: Member | None = None


def account_member(session: Session, channel: str, external_id: str) -> Member | None:
    """The active member behind a chat account, or None (unknown users see nothing)."""
    member = session.scalar(
        select(Member).join(ChatAccount, ChatAccount.member_id == Member.id)
        .where(ChatAccount.channel == channel, ChatAccount.external_id == external_id)
    )
    return member if member is not None and member.active else None


def create_invites(session: Session, members: list[Member], now: datetime, channel: str = "telegram", *,
                   replacing: bool = False) -> dict[int, str]:
    """A fresh code per member for ``channel``; that channel's codes handed out earlier and not used
    stop working. Channels where members type the code get short codes (see ``format_code``).
    ``replacing``: codes that move a member already linked to the chat that uses them (``relink``)."""
    ids = [m.id for m in members]
    if ids:  # a sheet printed again leaves a member's relink code alone; a new relink code retires everything
        retired = delete(LinkCode).where(LinkCode.member_id.in_(ids), LinkCode.used_at.is_(None),
                                         LinkCode.channel == channel)
        session.execute(retired if replacing else retired.where(LinkCode.replaces_link.is_(False)))
    if channel in TYPED_CODE_CHANNELS:
        codes: dict[int, str] = {}
        taken: set[str] = set()
        for m in members:
            code = _short_code()
            while code in taken or session.get(LinkCode, code) is not None:
                code = _short_code()
            taken.add(code)
            codes[m.id] = code
    else:
        codes = {m.id: secrets.token_urlsafe(CODE_BYTES) for m in members}
    session.add_all(LinkCode(code=c, member_id=mid, created_at=now, channel=channel, replaces_link=replacing)
                    for mid, c in codes.items())
    session.flush()
    return codes


# the sheet a secretary prints or mail-merges: Vietnamese headers, like the roster files'
TELEGRAM_INVITE_HEADER = ["Mã đảng viên", "Họ và tên", "Mã đơn vị", "Số điện thoại", "Đường dẫn liên kết"]
ZALO_INVITE_HEADER = ["Mã đảng viên", "Họ và tên", "Mã đơn vị", "Số điện thoại", "Mã liên kết", "Đường dẫn bot Zalo",
                      "Lời nhắn", "Bot Zalo"]


def unit_bot(s: Session, unit_id: int) -> ZaloBot | None:
    """The Zalo bot of the unit or of the nearest unit above it that has one (``hoctap zalo bots``);
    None: the default bot. Members link to this bot, and their invitations name it."""
    return s.scalar(select(ZaloBot).join(UnitAncestor, UnitAncestor.ancestor_id == ZaloBot.unit_id)
                    .where(UnitAncestor.descendant_id == unit_id).order_by(UnitAncestor.depth).limit(1))


def units_bots(s: Session, unit_ids: set[int]) -> dict[int, ZaloBot | None]:
    """``unit_bot`` for several units."""
    return {uid: unit_bot(s, uid) for uid in unit_ids}


def invitation_rows(members: list[Member], codes: dict[int, str], channel: str, *, bot_name: str = "",
                    zalo_link: str = "", unit_bots: dict | None = None,
                    phone_shown=lambda member: True) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the invitation sheet a secretary hands out: Telegram deep links, or Zalo
    codes to type beside the bot's share link (``hoctap members invite`` and the console).
    ``unit_bots``: each unit's own Zalo bot (``name``, ``share_link``), else the default bot.
    ``phone_shown(member)``: False leaves that member's phone out (whoever downloads may not see it)."""
    phone = lambda m: display_phone(m.phone) if phone_shown(m) else ""  # noqa: E731
    if channel != "zalo":
        return TELEGRAM_INVITE_HEADER, [
            [m.code, m.full_name, m.unit.code, phone(m), f"https://t.me/{bot_name}?start={codes[m.id]}"]
            for m in members]
    rows = []
    for m in members:
        bot = (unit_bots or {}).get(m.unit_id)
        link = (bot.share_link or "") if bot is not None else zalo_link
        name = f"bot «{bot.name}»" if bot is not None else "bot học tập"
        where = f"mở {link} (hoặc tìm {name} trên Zalo)" if link else f"mở {name} trên Zalo"
        code = format_code(codes[m.id])
        rows.append([m.code, m.full_name, m.unit.code, phone(m), code, link,
                     f"Đồng chí {m.full_name}: {where} và gõ mã {code}", bot.name if bot is not None else ""])
    return ZALO_INVITE_HEADER, rows


def _short_code() -> str:
    return "".join(secrets.choice(SHORT_ALPHABET) for _ in range(SHORT_LENGTH))


def format_code(code: str) -> str:
    """``K7PMX3QD`` → ``K7PM-X3QD`` (how a short code is printed); long codes are left alone."""
    if len(code) == SHORT_LENGTH and all(ch in SHORT_ALPHABET for ch in code):
        return f"{code[:4]}-{code[4:]}"
    return code


def _is_separator(ch: str) -> bool:
    """Dashes, spaces and invisible marks that phone keyboards put in a typed code: every Unicode
    dash (Pd: ``–``, ``—``, ``‐``, ``－``…), space (Z*: no-break, thin, ideographic…), control and
    format character (zero-width space, soft hyphen), the minus sign, ``_`` and ``.``."""
    return unicodedata.category(ch)[0] in "ZC" or unicodedata.category(ch) == "Pd" or ch in _OTHER_SEPARATORS


def _short_form(text: str) -> str:
    """The code as stored: full-width letters and digits folded to ASCII, separators dropped, upper case."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text) if not _is_separator(ch)).upper()


def looks_like_code(text: str) -> bool:
    """Typed text that is meant as a code: 8 letters and digits (dashes and spaces ignored) or a
    long deep-link code. Words such as "xin chào" or "học" are not."""
    text = text.strip()
    if _LONG_CODE.match(text):
        return True
    return _is_short(_short_form(text))


_QUOTED_LINK = re.compile(r"t\.me/[A-Za-z0-9_]+\?start=([A-Za-z0-9_-]{16,64})")
_QUOTED_SHORT = re.compile(r"(?<![A-Za-z0-9])([A-Za-z2-9]{4}[\s\-\u2010-\u2015\u2212]?[A-Za-z2-9]{4})(?![A-Za-z0-9])")


def code_in(text: str) -> str | None:
    """A code quoted inside a longer message: a pasted ``t.me/...?start=`` link, or a short code after the word
    "mã" (the invitation sheet's own "... gõ mã K7PM-X3QD", "Mã của tôi là K7PM-X3QD"). Only then: a word of
    eight letters elsewhere is not taken for a guess."""
    link = _QUOTED_LINK.search(text)
    if link:
        return link.group(1)
    composed = unicodedata.normalize("NFC", text)  # "Unicode tổ hợp" keyboards type it decomposed
    at = composed.casefold().find("mã") if len(composed.casefold()) == len(composed) else composed.find("Mã")
    if at < 0:
        return None
    for found in _QUOTED_SHORT.finditer(composed[at:]):
        code = found.group(1)  # as printed: capitals or digits, so "Mã của anh Tuan Hung" quotes no code
        if (code.isupper() or any(ch.isdigit() for ch in code)) and _is_short(_short_form(code)) \
                and all(ch in SHORT_ALPHABET for ch in _short_form(code)):
            return code
    return None


def code_said(text: str) -> str | None:
    """The code a message to the bot gives: the whole message, or one quoted in it (``code_in``)."""
    return text if looks_like_code(text) else code_in(text)


def _is_short(code: str) -> bool:
    return len(code) == SHORT_LENGTH and code.isascii() and code.isalnum()


def find_code(session: Session, code: str) -> LinkCode | None:
    """A long code exactly as given; a short one in any case, with or without separators."""
    code = code.strip()
    if not code:
        return None
    # only what a code can be is looked up (a NUL, for one, is refused by PostgreSQL's text type)
    link = session.get(LinkCode, code) if _LONG_CODE.match(code) or _is_short(code) else None
    if link is None:
        short = _short_form(code)
        if _is_short(short) and short != code:
            link = session.get(LinkCode, short)
    return link


def void_posted_code(session: Session, text: str) -> bool:
    """A code posted where others read it (a group): an unused one is deleted so that nobody else can link
    with it. True when one was."""
    link = find_code(session, text)
    if link is None or link.used_at is not None:
        return False
    session.delete(link)
    return True


def link_by_code(session: Session, channel: str, external_id: str, code: str, now: datetime) -> LinkResult:
    link = find_code(session, code)
    if link is None:
        return LinkResult("unknown")
    member = session.get(Member, link.member_id)
    if channel not in CODE_WORKS_ON.get(link.channel, (link.channel,)):  # not spent on the wrong messenger
        return LinkResult("for_zalo" if link.channel in TYPED_CODE_CHANNELS else "for_telegram", member)
    if link.used_at is not None:
        current = account_member(session, channel, external_id)
        return LinkResult("already" if current is not None and current.id == member.id else "used", member)
    moves = CODE_WORKS_ON.get(link.channel, (link.channel,)) if link.replaces_link else ()
    result = _link(session, channel, external_id, member, now, replacing=moves)
    if result.status == "linked":
        link.used_at = now
    return result


def link_by_phone(session: Session, channel: str, external_id: str, phone: str, now: datetime) -> LinkResult:
    normalized = normalize_phone(phone)
    member = session.scalar(select(Member).where(Member.phone == normalized, Member.active)) if normalized else None
    if member is None:
        return LinkResult("unknown")
    return _link(session, channel, external_id, member, now)


def relink_code(session: Session, member: Member, now: datetime, channel: str = "telegram") -> str:
    """A code for this one member that moves their link to the chat that uses it: the secretary's answer to a
    lost phone or a new account. Their other unused codes of ``channel`` stop working."""
    return create_invites(session, [member], now, channel, replacing=True)[member.id]


def _link(session: Session, channel: str, external_id: str, member: Member, now: datetime, *,
          replacing: tuple[str, ...] = ()) -> LinkResult:
    """Link this chat to ``member``. A chat whose member is no longer active is free to link again (the
    person may be back under a new code). A member already linked elsewhere moves to this chat only with a
    code made for that purpose (``replacing``: the messengers whose accounts of the member it replaces, see
    ``relink_code``); an invitation sheet's code, or a phone number, cannot take a member over. Every
    refusal is decided before anything changes."""
    if not member.active:
        return LinkResult("inactive", member)
    account = session.scalar(
        select(ChatAccount).where(ChatAccount.channel == channel, ChatAccount.external_id == external_id)
    )
    if account is not None:
        if account.member_id == member.id:
            return LinkResult("already", member)
        if account.member.active:
            return LinkResult("account_taken", account.member)
    other = session.scalar(select(ChatAccount).where(ChatAccount.channel == channel, ChatAccount.member_id == member.id))
    if other is not None and channel not in replacing:
        return LinkResult("member_taken", member)
    if account is not None:
        log.info("%s chat %s: released by member %s (no longer active) to link member %s",
                 channel, external_id, account.member.code, member.code)
        session.delete(account)
    if replacing:
        _forget_old_accounts(session, member, replacing, now, external_id)
    session.flush()
    session.add(ChatAccount(channel=channel, external_id=external_id, member_id=member.id, linked_at=now, last_seen_at=now))
    session.flush()
    return LinkResult("linked", member)


def _forget_old_accounts(session: Session, member: Member, channels: tuple[str, ...], now: datetime,
                         new_external_id: str) -> None:
    """A relink: the member's accounts on these messengers (the lost phone's) are unlinked, and the study
    links and console sessions they may still hold stop working."""
    from bot.services.web_links import revoke
    from bot.storage.models import ConsoleLogin, ConsoleSession

    old = list(session.scalars(select(ChatAccount).where(ChatAccount.member_id == member.id,
                                                         ChatAccount.channel.in_(channels))))
    for account in old:
        log.info("member %s: %s chat %s unlinked by a code made to replace it (now %s)",
                 member.code, account.channel, account.external_id, new_external_id)
        session.delete(account)
    if old:
        revoke(session, member.id, now)
        session.execute(update(ConsoleSession).where(ConsoleSession.member_id == member.id,
                                                     ConsoleSession.ended_at.is_(None)).values(ended_at=now))
        session.execute(update(ConsoleLogin).where(ConsoleLogin.member_id == member.id, ConsoleLogin.used_at.is_(None),
                                                   ConsoleLogin.expires_at > now).values(expires_at=now))
