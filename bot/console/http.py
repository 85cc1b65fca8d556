"""HTTP helpers of the console: refusals as pages, security headers, bounded forms with CSRF, strict ids."""

from __future__ import annotations

import asyncio
import hmac
import logging

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from bot.domain.ids import parse_id

log = logging.getLogger(__name__)

MAX_FORM = 64 * 1024
MAX_UPLOAD = 2 * 1024 * 1024  # a document file: a few hundred questions are well below
MAX_ROSTER_UPLOAD = 16 * 1024 * 1024  # a roster: 500,000 members as .xlsx, about 250,000 as .csv
CSP = ("default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


class Refused(Exception):
    """A request answered with a page saying why (status 400, 403, 404, 413 or 429)."""

    def __init__(self, status: int, message: str, back: str | None = None):
        super().__init__(message)
        self.status, self.message, self.back = status, message, back  # back: the page to try again from


def secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # login links must not leak in a Referer
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def client(request: Request) -> str:
    return request.client.host if request.client else ""


def path_id(request: Request, name: str) -> int:
    value = parse_id(request.path_params.get(name, ""))
    if value is None:
        raise Refused(404, "Không tìm thấy trang này.")
    return value


async def read_form(request: Request, csrf: str, limit: int = MAX_FORM, too_big: str = ""):
    """The posted form, refused before parsing when larger than ``limit`` (``too_big``: what to do then) or
    without the session's CSRF token (nothing is changed then)."""
    length = request.headers.get("content-length", "")
    if not (length.isascii() and length.isdigit()):
        raise Refused(411, "Yêu cầu thiếu độ dài nội dung.")
    if int(length) > limit:
        size = f"{limit // 1024 // 1024} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"
        raise Refused(413, f"Tệp quá lớn: tối đa {size}.{' ' + too_big if too_big else ''}")
    try:
        form = await request.form(max_files=2, max_fields=200)
    except (HTTPException, MultiPartException):  # Starlette's own refusal: too many fields or files, a broken body
        raise Refused(400, "Biểu mẫu không hợp lệ (quá nhiều trường, quá nhiều tệp hoặc bị hỏng); đồng chí tải lại "
                           "trang rồi làm lại.") from None
    given = form.get("csrf")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), csrf.encode()):
        raise Refused(403, "Biểu mẫu đã cũ hoặc không hợp lệ; đồng chí tải lại trang rồi làm lại.")
    return form


def off_the_loop(endpoint, body_limit: int = MAX_FORM, admits=None):
    """Run a console endpoint in a worker thread with an event loop of its own.

    Console pages do their database work synchronously (roll-ups of a province, imports): run in the
    process's one event loop they would hold up every chat update and webhook it serves. The request's
    body is read here first, so the page can parse it in the other loop: at most ``body_limit`` (larger or
    unknown lengths are left for ``read_form`` to refuse without reading), and beyond a form's size only when
    ``admits(request)`` (run in a thread: a signed-in session), so strangers cannot make the process hold
    megabytes per request.
    """

    async def threaded(request: Request):
        length = request.headers.get("content-length", "")
        if request.method == "POST" and length.isascii() and length.isdigit() and int(length) <= body_limit:
            if int(length) <= MAX_FORM or admits is None or await run_in_threadpool(admits, request):
                try:
                    await request.body()
                except ClientDisconnect:  # a lost connection, no failure of ours: nobody reads the answer
                    log.debug("console: the client went away before its form arrived whole (%s)", request.url.path)
                    return Response(status_code=400)
        return await run_in_threadpool(asyncio.run, endpoint(request))

    return threaded
