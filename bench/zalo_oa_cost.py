"""Messages and đồng per member per study round on a Zalo Official Account, per rung of the ladder.

One round is played through the real OA transport and outbox against the OA emulator, for ``--members``
members linked on the OA: the announcement to everyone, the conversation of the members who study (the
free replies of a whole read-and-quiz, measured on a few members driven through the real webhook), a
reminder three days before the deadline and the last-48-hours reminder to those who have not finished.
Before each broadcast every member's last interaction is drawn from the shares given (recent: ≤ 48 h;
week: 3-6 days; the others: over 7 days). Each deployment ladder is played on the same draws, side by side:

- ``example``: free consultation plus ZNS only for the last-48-hours reminder (README's worked example);
- ``+paid``: the same with paid consultation messages allowed (≤ 7 days);
- ``zns-all``: the baseline without the ladder's restraint: every message out of the free window by ZNS.

Printed per ladder and rung: messages and đồng per member per round, and per month for ``--province``
members and ``--rounds`` rounds a month. Prices are the spec's UNCONFIRMED figures (settings). There is
no web study page in this branch, so the "with the study page" column is not measured.

    python -m bench.zalo_oa_cost [--members 200] [--recent 0.35] [--week 0.2] [--unfinished 0.7 0.4]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select

from bench.seeding import seed_branch
from bot.channels.zalo_oa import TRAITS, BackgroundOA, OABudget, OARuntime, Prices, token_store
from bot.config import ZaloOASettings
from bot.domain import messages as msg
from bot.emulators.common import free_port
from bot.emulators.zalo_oa import ZaloOAEmulator
from bot.outbox import queue
from bot.outbox.sender import OutboxSender
from bot.services.chat import ChatService
from bot.storage.db import Database
from bot.storage.models import OutboxMessage, Round, ZaloOaContact, ZaloOaSend
from bot.timeutil import utcnow

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
LADDERS = {
    "example": dict(paid_consultation=False, zns_purposes=("remind",), zns_last_hours=48),
    "+paid": dict(paid_consultation=True, zns_purposes=("remind",), zns_last_hours=48),
    "zns-all": dict(paid_consultation=False, zns_purposes=("announce", "remind"), zns_last_hours=0),
}


def draw_ages(rng: random.Random, n: int, recent: float, week: float) -> list[timedelta]:
    ages = []
    for _ in range(n):
        r = rng.random()
        hours = rng.uniform(1, 47) if r < recent else rng.uniform(72, 150) if r < recent + week else rng.uniform(200, 900)
        ages.append(timedelta(hours=hours))
    return ages


def set_ages(db: Database, emu: ZaloOAEmulator, people: list[tuple[int, str]], ages: list[timedelta]) -> None:
    now = utcnow()
    with db.session() as s:
        s.execute(delete(ZaloOaContact))
        s.add_all(ZaloOaContact(user_id=uid, following=True, last_interaction_at=now - age, updated_at=now)
                  for (_, uid), age in zip(people, ages))
    with emu.state.cond:
        for (_, uid), age in zip(people, ages):
            emu.state.chats[uid].last_interaction = emu.state.now() - age.total_seconds()
            emu.state.chats[uid].following = True


def broadcast(db, bot, purpose: str, member_ids: list[int], key: str) -> None:
    with db.session() as s:
        rnd = s.get(Round, 1)
        reply = msg.announcement(rnd, TZ) if purpose == "announce" else msg.reminder(rnd, TZ)
        queue.enqueue_many(s, purpose=purpose, keyed_members=[(f"{key}:{m}", m) for m in member_ids], reply=reply,
                           now=utcnow(), round_id=1)
    sender = OutboxSender(db, {"zalo_oa": bot.runtime.transport}, per_chat_interval=0, rate=1000)
    bot.run(sender.run(until_idle=True), timeout=600)


def conversation_messages(emu: ZaloOAEmulator, uid: str) -> int:
    """Free replies of one member reading the summary and taking the whole quiz (taps)."""
    user = emu.user(uid)
    before = len(emu.calls("cs"))

    def act(do, marker: str) -> None:
        start = len(user.messages)
        do()
        user.wait_for(lambda u: any(marker in m["text"] for m in u.messages[start:]), timeout=30)

    act(lambda: user.send_text("/hoc"), "Hạn hoàn thành")
    act(lambda: user.press(user.messages[-1]["buttons"][0]["title"]), "(Trang 1/")
    while any(b["title"] == "Tiếp ›" for b in user.messages[-1].get("buttons") or []):
        page = user.messages[-1]["text"]
        act(lambda: user.press("Tiếp ›"), "(Trang ")
        if user.messages[-1]["text"] == page:
            break
    act(lambda: user.send_text("/lambai"), "Câu 1/10")
    for position in range(1, 11):
        act(lambda: user.press("A"), f"Câu {position + 1}/10" if position < 10 else "lượt làm bài")
    time.sleep(0.3)
    return len(emu.calls("cs")) - before


def play(ladder: str, args, url: str) -> tuple[Counter, Counter, float]:
    """(messages per rung, đồng per rung, free conversation messages per studying member)."""
    db = Database(url)
    people = seed_branch(db, args.members, "zalo_oa", lambda i: f"oa{i}", phones=True, seen=True, round_days=14)
    ids = [m for m, _ in people]
    rng = random.Random(args.seed)
    with ZaloOAEmulator(paid_price=args.paid_price, zns_price=args.zns_price) as emu:
        for _, uid in people:
            emu.user(uid)
        port = free_port()
        settings = ZaloOASettings(app_id=emu.app_id, app_secret=emu.app_secret, oa_secret_key=emu.oa_secret,
                                  api_base_url=emu.base_url, business_api_url=emu.base_url, oauth_url=emu.base_url,
                                  public_url=f"http://127.0.0.1:{port}", listen=f"127.0.0.1:{port}", rate=1000.0,
                                  zns_template_id="ZNS-REMIND-1", paid_price=args.paid_price,
                                  zns_price=args.zns_price, **LADDERS[ladder])
        store = token_store(settings, db)
        store.complete(emu.approve(store.permission_url(f"{settings.public_url}/zalo-oa/callback")))
        prices = Prices(paid=args.paid_price, zns=args.zns_price, paid_allowed=settings.paid_consultation,
                        zns_template=settings.zns_template_id, zns_purposes=settings.zns_purposes,
                        zns_last_hours=settings.zns_last_hours)
        budget = OABudget(db, 0, TZ, prices)
        with BackgroundOA(OARuntime(settings, ChatService(db, TRAITS, TZ, budget=budget), budget)) as bot:
            emu.set_webhook(f"http://127.0.0.1:{port}/zalo-oa/webhook")
            set_ages(db, emu, people, draw_ages(rng, len(people), args.recent, args.week))
            broadcast(db, bot, "announce", ids, "announce")
            talk = [conversation_messages(emu, uid) for _, uid in people[:args.talkers]]
            first, last = (rng.sample(ids, round(share * len(ids))) for share in args.unfinished)
            set_ages(db, emu, people, draw_ages(rng, len(people), args.recent_unfinished, args.week))
            broadcast(db, bot, "remind", first, "remind-3d")
            with db.session() as s:
                s.get(Round, 1).closes_at = utcnow() + timedelta(hours=30)
            set_ages(db, emu, people, draw_ages(rng, len(people), args.recent_unfinished, args.week))
            broadcast(db, bot, "remind", last, "remind-48h")
        with db.session() as s:
            rows = s.execute(select(ZaloOaSend.rung, func.count(), func.sum(ZaloOaSend.cost))
                             .group_by(ZaloOaSend.rung)).all()
            assert s.scalar(select(func.count()).select_from(OutboxMessage)
                            .where(OutboxMessage.status == "pending")) == 0
        billed = emu.spent
    db.dispose()
    messages, money = Counter({r: n for r, n, _ in rows}), Counter({r: int(c or 0) for r, _, c in rows})
    assert sum(money.values()) == billed, "what Zalo billed differs from what the outbox recorded"
    return messages, money, sum(talk) / max(len(talk), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--recent", type=float, default=0.35, help="share interacted ≤ 48 h before the announcement")
    parser.add_argument("--recent-unfinished", type=float, default=0.15,
                        help="the same share among those not finished, before each reminder")
    parser.add_argument("--week", type=float, default=0.2, help="share interacted 3-6 days before")
    parser.add_argument("--unfinished", type=float, nargs=2, default=(0.7, 0.4), metavar=("AT_3_DAYS", "AT_48_H"),
                        help="share not finished at the first and at the last reminder")
    parser.add_argument("--talkers", type=int, default=3, help="members driven through a whole read-and-quiz")
    parser.add_argument("--paid-price", type=int, default=55)
    parser.add_argument("--zns-price", type=int, default=300)
    parser.add_argument("--province", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds a month")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", help="default: a fresh SQLite file per ladder")
    args = parser.parse_args()
    n = args.members
    print(f"{n} members; interacted ≤ 48 h: {args.recent:.0%} (announcement), {args.recent_unfinished:.0%} "
          f"(reminders); 3-6 days: {args.week:.0%}; not finished at 3 days / 48 h: "
          f"{args.unfinished[0]:.0%} / {args.unfinished[1]:.0%}; prices: paid {args.paid_price} đ, ZNS "
          f"{args.zns_price} đ (UNCONFIRMED)")
    print(f"{'ladder':<9}{'rung':<11}{'msgs/member/round':>19}{'đ/member/round':>16}"
          f"{f'đ/month ({args.province:,} × {args.rounds})':>30}")
    for ladder in LADDERS:
        url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
        messages, money, talk = play(ladder, args, url)
        rows = [("conversation", talk, 0)] + [(r, messages[r] / n, money[r] / n) for r in ("free", "paid", "zns",
                                                                                           "call_list")]
        for rung, per, cost in rows:
            print(f"{ladder:<9}{rung:<11}{per:>19.2f}{cost:>16.1f}{cost * args.province * args.rounds:>30,.0f}")
        total = sum(money.values()) / n
        print(f"{ladder:<9}{'total':<11}{'':>19}{total:>16.1f}{total * args.province * args.rounds:>30,.0f}")
    print("conversation: free replies per member who reads the summary and takes the quiz (one message per "
          "question, no edits); call_list: messages that reached nobody (the secretary calls)")


if __name__ == "__main__":
    main()
