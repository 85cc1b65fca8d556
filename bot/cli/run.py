"""Running the server: the bot, the scheduler alone, one catch-up of due work, the schema."""

from __future__ import annotations

import sys
from datetime import timedelta

from bot.cli.base import CommandTree, UsageError, command, local_time, open_db
from bot.config import Settings
from bot.timeutil import fmt_datetime, utcnow


@command("run")
def cmd_run(args, settings: Settings) -> int:
    from bot.app import run

    return run(settings)


@command("scheduler")
def cmd_scheduler(args, settings: Settings) -> int:
    from bot.app import run_scheduler

    return run_scheduler(settings)


FUTURE_SLACK = timedelta(minutes=5)  # clocks of two machines disagree a little


@command("scheduler run-due")
def cmd_scheduler_run_due(args, settings: Settings) -> int:
    from bot.app import budgets, due_schedule, fleet_budget, oa_budget, zalo_quota
    from bot.scheduling.due import run_due
    from bot.scheduling.reports import ReportBuilder

    now = utcnow()
    at = local_time(args.at, settings, "--at") if args.at else now
    if at > now + FUTURE_SLACK:  # doing a later day's work now would close rounds still running, for good
        raise UsageError(f"--at {fmt_datetime(at, settings.tz)} has not come yet; run-due does the work of a moment "
                         "that has passed (see what a later day brings with 'hoctap playground --at')")
    db = open_db(settings)
    budget = budgets(fleet_budget(settings, db, zalo_quota(settings, db)), oa_budget(settings, db))
    report = run_due(db, at, due_schedule(settings, budget), ReportBuilder(settings))  # as the running scheduler
    for job in report.jobs:
        print(job)
    for dropped in report.dropped:
        print(f"dropped: {dropped}")
    if report.skipped_unlinked:
        print(f"{report.skipped_unlinked} recipient(s) skipped: no messenger linked")
    print(f"due at {fmt_datetime(at, settings.tz)}: {report.enqueued} message(s) enqueued", file=sys.stderr)
    return 0


@command("db upgrade")
def cmd_db_upgrade(args, settings: Settings) -> int:
    open_db(settings)
    print("database schema is up to date")
    return 0


def register(tree: CommandTree) -> None:
    tree.leaf(tree.sub, "run", "run the bot on every messenger whose token is set (Telegram, Zalo), else the local playground", "run")

    p = tree.leaf(tree.sub, "scheduler", "run the scheduler and outbox sender alone (announcements, reminders, digests)",
                  "scheduler")
    sched = p.add_subparsers(dest="action", metavar="ACTION")
    p = tree.leaf(sched, "run-due", "enqueue exactly the scheduled work due at a moment (catch-up, tests)",
                  "scheduler run-due")
    p.add_argument("--at", metavar='"YYYY-MM-DD HH:MM"', help="local time (default: now)")

    db = tree.group("db", "database schema")
    tree.leaf(db, "upgrade", "create or upgrade the database schema", "db upgrade")
