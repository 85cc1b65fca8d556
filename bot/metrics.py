"""What ``GET /metrics`` tells Prometheus, and the request id that ties one update's log lines together.

Counters and histograms live in this process (updates handled, handling time, send time, 429s, whether
it leads the scheduler); what every process shares (the outbox by channel and status, the month's quota
and budget used, the database pool) is read from the database at scrape time, so any process's scrape
tells the whole truth.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.db_probe import DatabaseProbe
from bot.timeutil import utcnow

#: The update being handled (a short random id), for log lines (``bot/logs.py``'s JSON format).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

UPDATES = Counter("hoctap_updates", "Updates handled, by channel", ["channel"], registry=None)
HANDLING = Histogram("hoctap_update_seconds", "Time to handle one update (reply sent), by channel", ["channel"],
                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=None)
SENDS = Histogram("hoctap_send_seconds", "Time of one outbox delivery, by channel", ["channel"],
                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=None)
RATE_LIMITED = Counter("hoctap_rate_limited", "Calls refused with 429 (flood control), by channel and what was "
                       "sent (outbox; api: replies and other Bot API calls)", ["channel", "kind"], registry=None)
FAILURES = Counter("hoctap_update_failures", "Updates whose handling raised (logged with a traceback), by channel",
                   ["channel"], registry=None)
WEBHOOK = Counter("hoctap_webhook_requests", "Requests to a webhook, by channel and HTTP status (403: a wrong secret "
                  "or signature; 400/413: malformed)", ["channel", "status"], registry=None)
LEADER = Gauge("hoctap_scheduler_leader", "1 while this process holds the scheduler lease", registry=None)
PROCESS_METRICS = (UPDATES, HANDLING, SENDS, RATE_LIMITED, FAILURES, WEBHOOK, LEADER)
OUTBOX_STATUSES = ("pending", "claimed", "sending", "sent", "uncertain", "failed", "dropped")
SCRAPE_TIMEOUT = 5.0  # seconds a scrape waits for the database's figures
DATABASE_DOWN = (b"# HELP hoctap_database_up 1 when the database answered this scrape\n"
                 b"# TYPE hoctap_database_up gauge\nhoctap_database_up 0.0\n")
log = logging.getLogger(__name__)


@contextmanager
def handling(channel: str) -> Iterator[str]:
    """Count and time one update, with a fresh request id for its log lines."""
    request_id = uuid.uuid4().hex[:12]
    token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    try:
        yield request_id
    finally:
        HANDLING.labels(channel).observe(time.perf_counter() - started)
        UPDATES.labels(channel).inc()
        REQUEST_ID.reset(token)


def webhook_channel(path: str) -> str | None:
    """Which channel's webhook a request path is (``/telegram/webhook``, ``/zalo[/<bot>]/webhook``,
    ``/zalo-oa/webhook``), else None."""
    if not path.endswith("/webhook"):
        return None
    if path == "/telegram/webhook":
        return "telegram"
    if path == "/zalo-oa/webhook":
        return "zalo_oa"
    return "zalo" if path.startswith("/zalo/") else None


class WebhookCounter:
    """ASGI middleware: counts each webhook request by channel and status (``hoctap_webhook_requests``), so that
    refused secrets and malformed bodies show up beside the updates handled."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        channel = webhook_channel(scope.get("path", "")) if scope["type"] == "http" else None
        if channel is None:
            return await self.app(scope, receive, send)

        started = False

        async def counted(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                WEBHOOK.labels(channel, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if not started:  # the server answers it 500
                WEBHOOK.labels(channel, "500").inc()
            raise


class MeasuredTransport:
    """An outbox transport whose deliveries are timed and whose 429s are counted."""

    def __init__(self, transport):
        self.inner = transport
        self.channel = transport.channel

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def deliver(self, external_id, reply, attachment, **extra) -> None:
        """``extra``: what the sender passes on to the transport as it is (``via``: a branch's own Zalo bot)."""
        from bot.outbox.sender import SendError

        started = time.perf_counter()
        try:
            await self.inner.deliver(external_id, reply, attachment, **extra)
        except SendError as exc:
            if exc.kind == "retry_after":
                RATE_LIMITED.labels(self.channel, "outbox").inc()
            raise
        finally:
            SENDS.labels(self.channel).observe(time.perf_counter() - started)


class SharedState:
    """Collected at scrape time from the database: outbox rows by channel and status, each monthly limit's
    use, and this process's connection pool."""

    def __init__(self, db, limits: dict[str, object] | None = None):
        self.db, self.limits = db, {k: v for k, v in (limits or {}).items() if v is not None}

    def collect(self):
        from sqlalchemy import func, select

        from bot.storage.models import OutboxMessage

        outbox = GaugeMetricFamily("hoctap_outbox_messages", "Outbox rows by channel and status",
                                   labels=["channel", "status"])
        now = utcnow()
        with self.db.read_session() as s:  # a scrape never waits for SQLite's write lock
            rows = s.execute(select(OutboxMessage.channel, OutboxMessage.status, func.count())
                             .group_by(OutboxMessage.channel, OutboxMessage.status)).all()
            oldest = s.scalar(select(func.min(OutboxMessage.not_before))
                              .where(OutboxMessage.status == "pending", OutboxMessage.not_before <= now))
        counts = {(channel or "", status): count for channel, status, count in rows}
        for channel in sorted({c for c, _ in counts}):
            for status in OUTBOX_STATUSES:  # a status with no rows reads 0, not missing
                outbox.add_metric([channel, status], counts.get((channel, status), 0))
        yield outbox
        yield GaugeMetricFamily("hoctap_outbox_oldest_due_seconds", "How long the oldest message due has waited "
                                "(0: none waiting): a sender stopped or throttled shows here first",
                                value=(now - oldest).total_seconds() if oldest is not None else 0)
        yield GaugeMetricFamily("hoctap_database_up", "1 when the database answered this scrape", value=1)
        used = GaugeMetricFamily("hoctap_month_used", "Used this month of a monthly limit (Zalo messages, "
                                 "Zalo OA đồng)", labels=["limit"])
        limit = GaugeMetricFamily("hoctap_month_limit", "A monthly limit (0: none)", labels=["limit"])
        for name, holder in self.limits.items():
            used.add_metric([name], holder.used())
            limit.add_metric([name], holder.monthly or 0)
        yield used
        yield limit
        pool = self.db.engine.pool
        if hasattr(pool, "checkedout"):
            yield GaugeMetricFamily("hoctap_db_connections_in_use", "Database connections in use in this process",
                                    value=pool.checkedout())
            yield GaugeMetricFamily("hoctap_db_pool_size", "Database pool size in this process", value=pool.size())


def metrics_route(db, limits: dict[str, object] | None = None) -> Route:
    """``GET /metrics`` in Prometheus' text format."""
    own, shared = CollectorRegistry(), CollectorRegistry()
    for metric in PROCESS_METRICS:
        own.register(metric)
    shared.register(SharedState(db, limits))
    probe = DatabaseProbe(lambda: generate_latest(shared), timeout=SCRAPE_TIMEOUT, name="metrics")

    async def metrics(request: Request) -> Response:
        """This process's own figures always; the shared ones when the database answers in time."""
        try:
            body = await probe()
        except Exception as exc:  # noqa: BLE001 - refused, hung or broken: the process's figures still count
            log.warning("/metrics: the database did not answer (%s)", type(exc).__name__)
            body = DATABASE_DOWN
        return Response(generate_latest(own) + body, media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"])


def measured(transports: dict[str, object], wrap: Callable = MeasuredTransport) -> dict[str, object]:
    return {name: wrap(t) for name, t in transports.items()}
