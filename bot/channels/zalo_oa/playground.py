"""``hoctap playground --channel zalo-oa``: the real OA channel (signed webhook, token store, buttons) on
the OA emulator, with this terminal as the member's phone. A number taps that button of the newest
message, as on Telegram; anything else is typed. Nothing is edited: every answer is a new message."""

from __future__ import annotations

import time

from bot.channels.playground import Playground
from bot.channels.zalo_oa.ladder import OABudget, Prices
from bot.channels.zalo_oa.rendering import TRAITS
from bot.channels.zalo_oa.runtime import BackgroundOA, OARuntime, token_store
from bot.config import ZaloOASettings
from bot.reports.replies import report_replies
from bot.services.chat import ChatService
from bot.services.linking import account_member, create_invites, format_code
from bot.timeutil import utcnow

OA_HELP = """Playground (Zalo Official Account): you are a member who follows the OA.
  type commands with or without the slash or diacritics (hoc, /lambai, ketqua, trogiup)
  type a number to tap that button of the newest message (or type a letter to answer)
  /as CODE  become another member (e.g. /as DV002)      /quit  leave"""


class OAPlayground(Playground):
    def run(self, as_member: str | None = None, lines=None) -> int:
        from bot.emulators.zalo_oa import ZaloOAEmulator

        if not self.prepare():
            return 1
        with ZaloOAEmulator() as emu:
            settings = ZaloOASettings(app_id=emu.app_id, app_secret=emu.app_secret, oa_secret_key=emu.oa_secret,
                                      api_base_url=emu.base_url, business_api_url=emu.base_url,
                                      oauth_url=emu.base_url, public_url="http://127.0.0.1", listen="127.0.0.1:0")
            store = token_store(settings, self.db)
            store.complete(emu.approve(store.permission_url("http://127.0.0.1/zalo-oa/callback")))
            budget = OABudget(self.db, 0, self.settings.tz, Prices())
            service = ChatService(self.db, TRAITS, self.settings.tz, budget=budget, reports=report_replies,
                                  study_links=self._links())
            with BackgroundOA(OARuntime(settings, service, budget)) as bot:
                emu.set_webhook(f"http://127.0.0.1:{bot.runtime.web.port}/zalo-oa/webhook")
                self.emu, self.channel, self.events = emu, bot.runtime.channel, 0
                self._play(as_member, lines, OA_HELP)
        return 0

    def _become(self, code: str | None):
        with self.db.session() as s:
            member = self._member(s, code)
            if member is None:
                return self.user
            user_id = f"oa{800_000_000 + member.id}"
            linked = account_member(s, TRAITS.name, user_id)
            invite = None if linked else create_invites(s, [member], utcnow(), channel=TRAITS.name)[member.id]
            name = f"{member.full_name} ({member.code}, {member.role})"
        user = self.emu.user(user_id)
        print(f"--- you are {name}, following the OA", file=self.out)
        self.shown = {}
        self._act(user, user.follow)
        if invite:
            print(f"(typing the invitation code {format_code(invite)} that the secretary handed out)", file=self.out)
            self._act(user, lambda: user.send_text(format_code(invite).lower()))
        return user

    def _say(self, line: str) -> None:
        last = self.user.messages[-1] if self.user.messages else None
        buttons = (last or {}).get("buttons") or []
        if line.isdigit() and 1 <= int(line) <= len(buttons) and buttons[int(line) - 1]["type"] == "oa.open.url":
            print(f"(the phone opens {buttons[int(line) - 1]['payload']['url']} in the browser)", file=self.out)
        elif line.isdigit() and 1 <= int(line) <= len(buttons):
            self._act(self.user, lambda: self.user.tap(buttons[int(line) - 1]))
        else:
            self._act(self.user, lambda: self.user.send_text(line))

    def _act(self, user, action) -> None:
        """Do ``action`` (one event to the OA) and print what the OA answered once it has finished."""
        action()
        self.events += 1
        deadline = time.monotonic() + 10
        while self.channel.done < self.events and time.monotonic() < deadline:
            time.sleep(0.01)
        self._show(user)

    def _show(self, user) -> None:
        for message in user.messages:
            if message["message_id"] in self.shown:
                continue
            buttons = "".join(f"\n   [{i}] {b['title']}" + (f": {b['payload']['url']}" if b["type"] == "oa.open.url" else "")
                              for i, b in enumerate(message.get("buttons") or [], 1))
            self.shown[message["message_id"]] = message["text"]
            print(f"\nOA:\n{message['text']}{buttons}\n", file=self.out)
