"""The product's own web server (starlette, served by uvicorn inside ``hoctap run``).

- ``POST /zalo/webhook``: the default Zalo bot's webhook; ``POST /zalo/<bot id>/webhook``: a branch
  bot's (``bot/channels/zalo/fleet.py``; an unknown bot gets the same 403 as a wrong secret). The
  ``X-Bot-Api-Secret-Token`` header is compared in constant time and a wrong one is refused (403) before
  the body is read. Both body shapes are accepted (``{ok, result: {event_name, message}}`` and a bare
  ``{event_name, message}``); an empty probe gets 200, a body that is not a well-formed update 400. The
  answer is immediate: the update is handled in the background, idempotently (``message_id`` is recorded
  with the work).
- Every webhook reads its body with ``read_body``/``parse_json`` (or ``read_json``): at most
  ``MAX_BODY`` bytes (413 beyond), JSON nested at most ``MAX_JSON_DEPTH`` deep (400), never a
  traceback (a client gone mid-body is a 400 too); lone UTF-16 surrogates become U+FFFD (``bot/json_text.py``);
  ``BadBody.response()`` is the answer to send.
- ``GET /files/<token>/<name>``: short-lived files (report charts) that Zalo fetches by URL; the
  token is random (192 bits) and expires after ``ttl`` seconds.
- ``GET /healthz``: 200 while the database answers, 503 when it does not, and 503 while the process is
  still starting (``app.state.starting``: its channels' webhooks are not all mounted yet); meanwhile an
  unknown path gets 503 with ``Retry-After`` rather than 404, so that a webhook event arriving early is
  delivered again, not refused.
- ``/hoc/...``: the members' study pages (``bot/webapp``), when given.
- Other surfaces add their routes: ``create_app(routes=...)`` or ``mount`` (Telegram's webhook, metrics).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import mimetypes
import re
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route

from bot import json_text
from bot.channels.zalo.updates import unwrap_update
from bot.db_probe import DatabaseProbe
from bot.metrics import WebhookCounter
from bot.routing import allowed_methods, slash_redirect, without_slash_redirects

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Bot-Api-Secret-Token"
# what a browser shows off the study pages and the console (members open the server's address too)
NOT_FOUND = "Không tìm thấy trang này."
WRONG_METHOD = "Địa chỉ này không mở được theo cách này."


@dataclass
class _Shelved:
    name: str
    data: bytes
    content_type: str
    expires: float


class FileShelf:
    """Files served for a short time under an unguessable path (in this process's memory)."""

    def __init__(self, public_url: str, ttl: float = 900.0, max_items: int = 500):
        self.public_url, self.ttl, self.max_items = public_url.rstrip("/"), ttl, max_items
        self._items: dict[str, _Shelved] = {}
        self.hits = 0

    def put(self, data: bytes, filename: str) -> str:
        """Shelve ``data``; returns the public URL it can be fetched from until it expires."""
        self._expire()
        while len(self._items) >= self.max_items:
            self._items.pop(next(iter(self._items)))
        token = secrets.token_urlsafe(24)
        name = "".join(ch if ch.isalnum() or ch in ".-_" else "-" for ch in filename) or "file"
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._items[token] = _Shelved(name, data, ctype, time.monotonic() + self.ttl)
        return f"{self.public_url}/files/{token}/{name}"

    def get(self, token: str, name: str) -> _Shelved | None:
        self._expire()
        item = self._items.get(token)
        return item if item is not None and item.name == name else None

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, item in self._items.items() if item.expires <= now]:
            del self._items[token]


MAX_BODY = 64 * 1024  # a webhook update is a few KiB at most
MAX_JSON_DEPTH = 32  # a Zalo update nests 4 deep; json.loads recurses, so depth is bounded first
_JSON_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)  # always matches: one pass
_JSON_BRACKETS = re.compile(rb"[\[\]{}]")


class BadBody(Exception):
    """A request body refused before any work is done: ``status`` 400 or 413."""

    def __init__(self, status: int, description: str):
        super().__init__(description)
        self.status, self.description = status, description

    def response(self) -> Response:
        return JSONResponse({"ok": False, "description": self.description}, status_code=self.status)


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body (for a signature check, say), refused with 413 beyond ``limit`` bytes: by its
    Content-Length, or while it streams in when it has none; with 400 when the client goes away before the
    whole body arrived (no traceback: mobile networks drop connections all the time)."""
    length = request.headers.get("content-length", "")
    if length and not (length.isascii() and length.isdigit()):
        raise BadBody(400, "Bad request: invalid Content-Length")
    if length and int(length) > limit:
        raise BadBody(413, f"Payload too large: at most {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadBody(413, f"Payload too large: at most {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # a phone that lost its network: nothing failed here, and nobody reads the answer
        raise BadBody(400, "Bad request: the client closed the connection before the whole body arrived") from None
    return b"".join(chunks)


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in ``raw`` (strings left out), without parsing it."""
    depth = deepest = 0
    for bracket in _JSON_BRACKETS.findall(_JSON_STRINGS.sub(b"", raw)):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH):
    """The JSON value in ``raw``; ``BadBody(400)`` when it is not JSON or nests deeper than ``max_depth``."""
    if json_depth(raw) > max_depth:
        raise BadBody(400, f"Bad request: JSON nested deeper than {max_depth} levels")
    try:
        return json_text.loads(raw)  # a lone surrogate ("\ud800") becomes U+FFFD: storable, never a 500
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadBody(400, "Bad request: not JSON") from None


async def read_json(request: Request, limit: int = MAX_BODY, max_depth: int = MAX_JSON_DEPTH):
    """``read_body`` then ``parse_json``; None for an empty body."""
    raw = await read_body(request, limit)
    return parse_json(raw, max_depth) if raw.strip() else None


def _secret_ok(request: Request, expected: str | None) -> bool:
    """The webhook secret header, compared in constant time."""
    given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
    return bool(expected) and hmac.compare_digest(given, expected.encode("utf-8"))


async def _zalo_update(request: Request, take) -> Response:
    """Read one webhook delivery and hand a well-formed update to ``take`` (which keeps it before it is
    answered: Zalo will not deliver it again)."""
    try:
        body = await read_json(request)
    except BadBody as exc:
        log.info("Zalo webhook: %s", exc.description)
        return exc.response()
    if body is None or body == {}:
        return JSONResponse({"ok": True})  # Zalo's verification probe
    update = unwrap_update(body)
    if update is None:
        log.info("Zalo webhook: a body that is not a well-formed update; refused")
        return JSONResponse({"ok": False, "description": "Bad request: not a Zalo update"}, status_code=400)
    await take(update)
    return JSONResponse({"ok": True})


def zalo_webhook_route(zalo, webhook_secret: str | None) -> Route:
    """``POST /zalo/webhook`` for a ZaloChannel (its ``dispatch`` takes one update); 403 without one."""

    async def zalo_webhook(request: Request) -> Response:
        if zalo is None and _starting(request):
            return _try_again()
        if zalo is None or not _secret_ok(request, webhook_secret):
            return JSONResponse({"ok": False, "description": "Forbidden"}, status_code=403)
        return await _zalo_update(request, zalo.take)

    return Route("/zalo/webhook", zalo_webhook, methods=["POST"])


def fleet_webhook_route(fleet) -> Route:
    """``POST /zalo/<bot id>/webhook`` for the branches' bots (``ZaloFleet``): an unknown bot is refused as a
    wrong secret is (one 403 for both, so that a stranger cannot learn which bot ids are registered)."""

    async def bot_webhook(request: Request) -> Response:
        bot = await fleet.bot(request.path_params["bot_id"]) if fleet is not None else None
        if bot is None and _starting(request):
            return _try_again()
        if bot is None or bot.mode != "webhook" or not _secret_ok(request, bot.secret):
            return JSONResponse({"ok": False, "description": "Forbidden"}, status_code=403)
        return await _zalo_update(request, bot.channel.take)

    return Route("/zalo/{bot_id}/webhook", bot_webhook, methods=["POST"])


def files_route(shelf: FileShelf | None) -> Route:
    """``GET /files/<token>/<name>``: the shelf's files (404 without a shelf)."""

    async def shelved(request: Request) -> Response:
        item = shelf.get(request.path_params["token"], request.path_params["name"]) if shelf else None
        if item is None:
            return PlainTextResponse("Not found", status_code=404)
        shelf.hits += 1
        return Response(item.data, media_type=item.content_type, headers={"Cache-Control": "no-store"})

    return Route("/files/{token}/{name}", shelved, methods=["GET", "HEAD"])


HEALTH_TIMEOUT = 5.0  # seconds a health check waits for the database before it answers 503


def health_route(db=None) -> Route:
    """``GET /healthz``: 200 "ok" when the database answers (or none is given), else 503."""

    def database_answers() -> bool:
        from sqlalchemy import text

        try:
            with db.read_session() as s:  # never waits for SQLite's write lock
                s.execute(text("SELECT 1"))
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            log.warning("health check: the database does not answer (%s)", type(exc).__name__)
            return False

    probe = DatabaseProbe(database_answers, timeout=HEALTH_TIMEOUT, name="healthz")

    async def healthz(request: Request) -> Response:
        if _starting(request):
            return _try_again()
        if db is not None:
            try:
                answers = await probe()
            except TimeoutError:
                log.warning("health check: the database did not answer within %.0fs", HEALTH_TIMEOUT)
                answers = False
            if not answers:
                return PlainTextResponse("database unavailable", status_code=503)
        return PlainTextResponse("ok")

    return Route("/healthz", healthz, methods=["GET"])


def create_app(*, zalo=None, webhook_secret: str | None = None, shelf: FileShelf | None = None,
               zalo_oa=None, pages=None, fleet=None, console=None, routes: list[BaseRoute] | tuple = (),
               db=None) -> Starlette:
    """The one web application of a process: ``zalo`` (a ZaloChannel) for the Zalo webhook, ``fleet``
    (``ZaloFleet``) for the branches' bots, ``shelf`` for files, ``zalo_oa`` (an endpoint) for the OA's
    events, ``pages`` (``bot.webapp``) under ``/hoc``, ``console`` (``bot.console``) under ``/quantri``,
    ``db`` for the health check, and ``routes``:
    what other surfaces mount (the Telegram webhook, metrics). Runtimes started later add theirs
    with ``mount``."""
    app = Starlette(exception_handlers={404: _not_found, 405: _wrong_method}, middleware=[Middleware(WebhookCounter)], routes=[
        zalo_webhook_route(zalo, webhook_secret),
        fleet_webhook_route(fleet),
        files_route(shelf),
        health_route(db),
        *([Route("/zalo-oa/webhook", zalo_oa, methods=["POST"])] if zalo_oa else []),  # bot/channels/zalo_oa
        *([Mount("/hoc", app=pages)] if pages is not None else []),
        *routes,
        *([Mount("/quantri", console)] if console is not None else []),  # bot/console
    ])
    without_slash_redirects(app.router)
    return app


def _starting(request: Request) -> bool:
    return getattr(request.app.state, "starting", False)


def _try_again() -> Response:
    """While the process starts: not ready yet, ask again shortly (webhook senders deliver again on a 5xx)."""
    return PlainTextResponse("starting", status_code=503, headers={"Retry-After": "1"})


async def _not_found(request: Request, exc) -> Response:
    """404, except while the process starts: a route not mounted yet (a webhook) is "try again"; a path that
    lacks a page's trailing slash (``/quantri``) is sent to it."""
    if _starting(request):
        return _try_again()
    return slash_redirect(request) or PlainTextResponse(NOT_FOUND, status_code=404)


async def _wrong_method(request: Request, exc) -> Response:
    """405 in Vietnamese (``GET /zalo/webhook`` from a curious browser), with the methods the path takes."""
    return PlainTextResponse(WRONG_METHOD, status_code=405, headers={"Allow": allowed_methods(request)})


def mount(app: Starlette, routes: list[BaseRoute]) -> None:
    """Add ``routes`` to a running app, ahead of any route of the same path (a runtime's real webhook
    replaces the 403 placeholder)."""
    app.router.routes[:0] = routes


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self):  # the caller owns the signals (``hoctap run`` stops every channel)
        yield


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port)


class ThreadedWebServer:
    """A ``WebServer`` in a thread of its own, for callers without an event loop (playground, tests)."""

    def __init__(self, app: Starlette, listen: str):
        import threading

        self.web = WebServer(app, listen)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="web")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.web.host in ("0.0.0.0", "") else self.web.host
        return f"http://{host}:{self.web.port}"

    def start(self) -> "ThreadedWebServer":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.web.start(), self.loop).result(15)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.web.stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class WebServer:
    """uvicorn serving ``app`` in the current event loop, on ``host:port``."""

    def __init__(self, app: Starlette, listen: str):
        self.app = app
        self.host, self.port = parse_listen(listen)
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise self._cannot_listen(exc.strerror or str(exc)) from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise self._cannot_listen("it did not start")
            await asyncio.sleep(0.01)
        log.info("web server listening on %s:%d", self.host, self.port)

    def _cannot_listen(self, why: str) -> OSError:
        """The one line ``hoctap run`` prints (``bot/startup.py``): what failed and the setting to change."""
        return OSError(f"the web server cannot listen on {self.host}:{self.port} ({why}) — check web.listen "
                       "(HOCTAP_WEB_LISTEN); several processes on one machine each need a port of their own")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
        self._server = self._task = None
