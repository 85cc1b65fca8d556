"""What the Zalo bot and Zalo OA tests share: a free port, a process that settles and stops, invitation
codes per messenger, typing and waiting for the answer, counting rows."""

from __future__ import annotations

import time
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot.emulators.common import free_port  # noqa: F401 - the tests' name for it

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def count(db, model, *where) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def invitation_codes(db, channel: str):
    """``make(member_code)``: a fresh single-use invitation of that member for ``channel``."""
    from bot.services.linking import create_invites
    from bot.storage.models import Member
    from bot.timeutil import utcnow

    def make(member_code: str, channel: str = channel) -> str:
        with db.session() as s:
            member = s.scalar(select(Member).where(Member.code == member_code))
            return create_invites(s, [member], utcnow(), channel=channel)[member.id]

    return make


def new_texts(user, before: int) -> list[str]:
    return [m.get("text", "") for m in user.messages[before:]]


def say(user, text: str, fragment: str | None = None, timeout: float = 5.0) -> str:
    """Type ``text`` and wait for the bot's answer (the new messages, one containing ``fragment``)."""
    before = len(user.messages)
    user.send_text(text)
    user.wait_for(lambda u: any(fragment is None or fragment in t for t in new_texts(u, before)), timeout=timeout)
    return "\n".join(new_texts(user, before))


class ChannelProcess:
    """A Zalo bot or Zalo OA side of the bot as one process runs it (``running``: its Background*);
    subclasses start it. Stopping is what a crash would do: the next start must pick up from the database."""

    running = None

    @property
    def runtime(self):
        return self.running.runtime

    @property
    def channel(self):
        return self.runtime.channel

    def settle(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` updates in all were finished by this process."""
        deadline = time.monotonic() + timeout
        while self.channel.done < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.channel.done} updates finished, expected {count}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None
