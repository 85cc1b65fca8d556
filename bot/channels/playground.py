"""Local playground: the real bot on the Telegram emulator, with this terminal as the member's phone.

Nothing is mocked: the same Application, ChatService and database as production, only the Bot API
is the emulator on 127.0.0.1. Type as a member would; a number presses that button.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from datetime import timedelta

from sqlalchemy import select

from bot.channels.telegram import TRAITS, BackgroundBot, TelegramChannel
from bot.config import Settings
from bot.domain.ids import parse_id
from bot.emulators.telegram import TelegramEmulator
from bot.reports.replies import report_replies
from bot.services.chat import ChatService
from bot.services.linking import account_member, create_invites
from bot.services.rounds import open_round, round_status
from bot.storage.db import Database
from bot.storage.models import Document, Member, Round, Unit
from bot.timeutil import utcnow

HELP = """Playground: you are a member chatting with the bot.
  type text or commands (/hoc, /lambai, /ketqua, /trogiup) as on a phone
  type a number to press that button of the newest message (or a letter to answer)
  /as CODE  become another member (e.g. /as DV002)      /quit  leave"""
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "roster"


class Playground:
    def __init__(self, settings: Settings, db: Database, out=None):
        self.settings, self.db, self.out = settings, db, out or sys.stdout  # sys.stdout now, not at import
        self.shown: dict[int, str] = {}
        self.answers_seen = 0
        self.echo = False
        self.pages = None  # the study pages beside the chat (``--web``): a started BackgroundPages
        self.console_url: str | None = None  # the console's address with ``--web`` (``/quantri`` in chat)
        self.banner: list[str] = []  # lines printed once, after the study link (the console's login link)

    def prepare(self) -> bool:
        """Sample roster and documents in an empty database, and an open round to play with."""
        if not self._has_roster() and not self._seed():
            return False
        self._ensure_open_round()
        return True

    def run(self, as_member: str | None = None, lines=None) -> int:
        if not self.prepare():
            return 1
        with TelegramEmulator(bot_username="hoctap_playground_bot") as emu:
            service = ChatService(self.db, TRAITS, self.settings.tz, study_links=self._links(),
                                  console_url=self.console_url, reports=report_replies)
            app = TelegramChannel(service).build(emu.token, emu.base_url, emu.base_file_url)
            with BackgroundBot(app):
                self.emu = emu
                self._play(as_member, lines, HELP)
        return 0

    def _links(self):
        return self.pages.links if self.pages is not None else None

    def _print_study_link(self, member_id: int, name: str) -> None:
        """With ``--web``: the member's own link to the study pages, on a line of its own."""
        if self.pages is None:
            return
        with self.db.session() as s:
            url = self.pages.links.for_member(s, member_id, utcnow()).url
        print(url, file=self.out)
        print(f"(the study page of {name}: open the link above in a browser)", file=self.out)

    def _play(self, as_member: str | None, lines, help_text: str) -> None:
        """The chat loop: the script's lines, or what is typed at the terminal."""
        self.user = self._become(as_member)
        print(help_text, file=self.out)
        self.echo = lines is not None or not sys.stdin.isatty()
        for line in (lines if lines is not None else self._stdin()):
            if not self._handle(line.strip()):
                break

    # -- setup ---------------------------------------------------------------------------------
    def _has_roster(self) -> bool:
        with self.db.session() as s:
            return s.scalar(select(Member.id).limit(1)) is not None

    def _seed(self) -> bool:
        """An empty database gets the sample roster and the documents, so a fresh clone can play."""
        from bot.content.load import load_document
        from bot.content.validate import check_paths
        from bot.roster.importer import import_members, import_units

        checked = check_paths([self.settings.content_dir])
        if checked.problems or not (SAMPLES / "units.csv").exists():
            for problem in checked.problems:
                print(problem, file=sys.stderr)
            print("The database has no members: import a roster first ('hoctap units import', "
                  "'hoctap members import', 'hoctap content load').", file=sys.stderr)
            return False
        with self.db.session() as s:
            import_units(s, SAMPLES / "units.csv")
            import_members(s, SAMPLES / "members.csv")
            for doc in checked.documents:
                load_document(s, doc, utcnow())
        print(f"(loaded the sample roster from {SAMPLES} and {len(checked.documents)} documents)", file=self.out)
        return True

    def _ensure_open_round(self) -> None:
        """A playground with nothing to study shows nothing: open a two-week round if none is open."""
        now = utcnow()
        with self.db.session() as s:
            if any(round_status(r, now) == "open" for r in s.scalars(select(Round))):
                return
            doc = s.scalar(select(Document).order_by(Document.id))
            root = s.scalar(select(Unit).where(Unit.parent_id.is_(None)).order_by(Unit.code))
            if doc is None or root is None:
                return
            rnd = open_round(s, doc.id, [root.code], now - timedelta(minutes=1), now + timedelta(days=14), 98, now)
            print(f"(opened round {rnd.id}: {doc.code} for {root.code}, closing in 14 days)", file=self.out)

    def _member(self, s, code: str | None) -> Member | None:
        """The active member ``code`` (or the first plain member); None, said aloud, if there is none."""
        query = select(Member).where(Member.active).order_by(Member.code)
        member = s.scalar(query.where(Member.code == code) if code else query.where(Member.role == "member"))
        if member is None:
            print(f"(no active member {code}; see 'hoctap members list')", file=self.out)
        return member

    def _become(self, code: str | None):
        with self.db.session() as s:
            member = self._member(s, code)
            if member is None:
                return self.user
            user_id = 900_000 + member.id
            linked = account_member(s, "telegram", str(user_id))
            invite = None if linked else create_invites(s, [member], utcnow())[member.id]
            name = f"{member.full_name} ({member.code}, {member.role})"
            member_id = member.id
        self._print_study_link(member_id, name)
        for line in self.banner:
            print(line, file=self.out)
        self.banner = []
        user = self.emu.user(user_id, first_name=name)
        print(f"--- you are {name}", file=self.out)
        self.shown = {}
        self.answers_seen = len(user.callback_answers)
        if invite:
            user.send_text(f"/start {invite}")
            self._show(user)
        return user

    # -- loop ------------------------------------------------------------------------------------
    def _stdin(self):
        interactive = sys.stdin.isatty()
        while True:
            try:
                yield input("> ") if interactive else input()
            except EOFError:
                return

    def _handle(self, line: str) -> bool:
        """Playground commands (/quit, /as CODE); anything else goes to the bot as the member."""
        if not line:
            return True
        if self.echo:
            print(f"> {line}", file=self.out)
        if line in ("/quit", "/q"):
            return False
        if line == "/as" or line.startswith("/as "):
            self.user = self._become(line[3:].strip() or None)
            return True
        self._say(line)
        return True

    def _say(self, line: str) -> None:
        """A number presses that button of the newest message; anything else is typed."""
        number = parse_id(line)  # "²" or "٣" are typed text, not a button
        if number is not None and (last := self.user.last()) and (buttons := _buttons(last)):
            if 1 <= number <= len(buttons):
                self.user.press(buttons[number - 1]["callback_data"], message_id=last["message_id"])
                self._show(self.user)
                return
        self.user.send_text(line)
        self._show(self.user)

    def _show(self, user, settle: float = 0.3) -> None:
        """Print what changed in the chat: new messages, edits and button notices."""
        try:
            user.wait_for(timeout=5)
        except TimeoutError:
            print("(no answer from the bot)", file=self.out)
            return
        time.sleep(settle)  # let multi-message replies arrive
        for answer in user.callback_answers[self.answers_seen:]:
            if answer.get("text"):
                print(f"  ⓘ {answer['text']}", file=self.out)
        self.answers_seen = len(user.callback_answers)
        for message in user.messages:
            text = message.get("text") or _attachment(message)
            key = message["message_id"]
            rendered = text + "".join(f"\n   [{i}] {b['text']}" for i, b in enumerate(_buttons(message), 1))
            if self.shown.get(key) == rendered:
                continue
            tag = "bot (sửa)" if key in self.shown else "bot"
            self.shown[key] = rendered
            print(f"\n{tag}:\n{rendered}\n", file=self.out)


def _attachment(message) -> str:
    """A file or a photo as a line of text (the terminal shows no files), with its caption."""
    if message.get("document"):
        shown = f"[tệp: {message['document'].get('file_name') or 'tệp đính kèm'}]"
    elif message.get("photo"):
        shown = "[ảnh]"
    else:
        return ""
    return f"{shown} {message.get('caption') or ''}".strip()


def _buttons(message) -> list[dict]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [b for row in rows for b in row]


ZALO_HELP = """Playground (Zalo): you are a member chatting with the Zalo bot. Zalo has no buttons:
  type commands with or without the slash or diacritics (hoc, học, lam bai, /ketqua, trogiup)
  type the number of a choice, TIẾP to read on, A/b/2 to answer a question
  /as CODE  become another member (e.g. /as DV002)      /quit  leave"""


class ZaloPlayground(Playground):
    """The same, on the Zalo emulator: the real Zalo client, poller and ChatService; typing only."""

    def run(self, as_member: str | None = None, lines=None) -> int:
        from bot.channels.zalo import TRAITS as ZALO_TRAITS, BackgroundZalo, ZaloOptions, ZaloRuntime
        from bot.emulators.zalo import ZaloEmulator

        if not self.prepare():
            return 1
        with ZaloEmulator(bot_name="HocTap") as emu:
            service = ChatService(self.db, ZALO_TRAITS, self.settings.tz, study_links=self._links(),
                                  console_url=self.console_url, reports=report_replies)
            options = ZaloOptions(token=emu.token, api_base_url=emu.base_url, poll_timeout=2, poll_interval=0.0)
            with BackgroundZalo(ZaloRuntime(options, service)) as bot:
                self.emu, self.channel, self.typed = emu, bot.runtime.channel, 0
                self._play(as_member, lines, ZALO_HELP)
        return 0

    def _become(self, code: str | None):
        with self.db.session() as s:
            member = self._member(s, code)
            if member is None:
                return self.user
            user_id = str(700_000_000 + member.id)
            linked = account_member(s, "zalo", user_id)
            invite = None if linked else create_invites(s, [member], utcnow(), channel="zalo")[member.id]
            name = f"{member.full_name} ({member.code}, {member.role})"
            member_id = member.id
        from bot.services.linking import format_code

        self._print_study_link(member_id, name)
        for line in self.banner:
            print(line, file=self.out)
        self.banner = []
        user = self.emu.user(user_id, display_name=name)
        print(f"--- you are {name}", file=self.out)
        self.shown = {}
        if invite:
            print(f"(typing the invitation code {format_code(invite)} that the secretary handed out)", file=self.out)
            self._type(user, format_code(invite).lower())
        return user

    def _say(self, line: str) -> None:
        self._type(self.user, line)

    def _type(self, user, text: str) -> None:
        """Send ``text`` and print the answer once the bot has finished with it (all its messages)."""
        user.send_text(text)
        self.typed += 1
        deadline = time.monotonic() + 10
        while self.channel.done < self.typed and time.monotonic() < deadline:
            time.sleep(0.01)
        if not any(m["message_id"] not in self.shown for m in user.messages):
            print("(no answer from the bot)", file=self.out)
        self._show(user)

    def _show(self, user) -> None:
        for message in user.messages:
            key = message["message_id"]
            if key in self.shown:
                continue
            text = message.get("text") or f"[ảnh: {message.get('photo')}] {message.get('caption') or ''}".strip()
            self.shown[key] = text
            print(f"\nbot:\n{text}\n", file=self.out)
