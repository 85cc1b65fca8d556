"""The console's pages and actions (Starlette), mounted under ``/quantri`` by ``bot.web.create_app``.

Every page finds the session from its cookie, every id in a URL goes through ``parse_id`` and the
domain's permission checks, every form carries the session's CSRF token, and every action calls
the same service the chat or the CLI calls. Pages are plain HTML forms: no script at all.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bot.console import pages
from bot.console.http import (MAX_FORM, MAX_ROSTER_UPLOAD, MAX_UPLOAD, Refused, client, off_the_loop, read_form,
                              secured)
from bot.domain.messages import percent
from bot.domain.permissions import PermissionDenied
from bot.outbox.queue import QuietHours
from bot.routing import allowed_methods, slash_redirect, without_slash_redirects
from bot.services import console_access
from bot.storage.db import Database
from bot.storage.models import ConsoleSession, Member
from bot.timeutil import fmt_datetime, utcnow

HERE = Path(__file__).parent
COOKIE = "hoctap_quantri"
# the login page's own cookie, whose value its form carries back: a form posted from another site (login CSRF,
# to sign a victim into the poster's session) comes without it, as the cookie is SameSite=Strict
LOGIN_COOKIE = "hoctap_vao"
LOGIN_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")
LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,100}")  # a login link's token as we make them (URL-safe)
STALE_LOGIN = ("Trang vào đã cũ hoặc không được mở từ đường dẫn vào; đồng chí mở lại đường dẫn rồi bấm nút (đường "
               "dẫn chưa dùng vẫn còn hiệu lực trong 5 phút; nếu đã quá, gõ /quantri trong chat để nhận đường dẫn mới).")
ADMINS_ONLY = "Chỉ quản trị viên xem được trang này."


@dataclass
class Console:
    """What every page needs: the database, the clock, the time zone, where documents are read."""

    db: Database
    tz: ZoneInfo
    quiet: QuietHours
    clock: Callable[[], datetime] = utcnow
    secure_cookie: bool = False
    bot_name: str = ""  # the Telegram bot's username, for invitation links
    zalo_link: str = ""  # the Zalo bot's share link, beside invitation codes
    budget: Any = None  # the Zalo quota and OA budget a reminder must fit in, as in the chat's /nhacnho
    links: Any = None  # members' study links in reminders (``web_links.StudyLinks``), as in the chat
    oa: Any = None  # (the Zalo OA's TokenStore, its callback address) where an OA is configured
    env: Environment = field(init=False)

    def __post_init__(self):
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
        self.env.filters["when"] = lambda dt: fmt_datetime(dt, self.tz) if dt else "-"
        self.env.filters["pct"] = lambda v: "-" if v is None else percent(v)
        self.env.globals["oa_page"] = self.oa is not None  # the admins' "Zalo OA" link

    def render(self, name: str, status: int = 200, **context) -> HTMLResponse:
        return secured(HTMLResponse(self.env.get_template(name).render(**context), status_code=status))


@dataclass
class Visit:
    """One request of a logged-in person: a page (GET) in a read-only session, an action (POST) in one
    transaction."""

    s: Session
    member: Member
    csrf: str
    now: datetime
    deferred: list[tuple[str, str]] | None = None  # a page's audit lines, written after its read

    def record(self, action: str, detail: str) -> None:
        """An audit line: in the action's transaction, or for a page once its read is over."""
        if self.deferred is None:
            console_access.record(self.s, self.member, action, detail, self.now)
        else:
            self.deferred.append((action, detail))


def create_console(db: Database, tz: ZoneInfo, *, quiet: QuietHours | None = None,
                   clock: Callable[[], datetime] = utcnow, secure_cookie: bool = False, bot_name: str = "",
                   zalo_link: str = "", budget: Any = None, links: Any = None, oa: Any = None) -> Starlette:
    """The console as an ASGI app; ``secure_cookie`` when served behind https; ``budget`` and ``links`` as
    the chat's (``ChatService``); ``oa``: the Zalo OA's token store and callback address, for its page."""
    console = Console(db, tz, quiet or QuietHours(tz=tz), clock, secure_cookie, (bot_name or "").lstrip("@"),
                      zalo_link or "", budget, links, oa)

    def signed_in(request: Request) -> bool:
        with db.read_session() as s:  # a look only: strangers' posts must not each take the write lock
            return console_access.active_session(s, request.cookies.get(COOKIE), console.clock()) is not None

    def signed(s: Session, request: Request, now: datetime) -> tuple[ConsoleSession, Member, bool] | None:
        """The request's live session and member, and whether the session is due to be marked used (and its
        cookie renewed); None when nobody is signed in."""
        found = console_access.active_session(s, request.cookies.get(COOKIE), now)
        if found is None:
            return None
        return found[0], found[1], console_access.due_for_touch(found[0], now)

    def page(handler, *, admin_only: bool = False, upload: int = MAX_FORM):
        """``upload``: the largest body the page takes (a file); bodies beyond a form's are read only for a
        signed-in session."""
        async def endpoint(request: Request) -> Response:
            if request.method in ("GET", "HEAD"):
                return await read(request)
            with db.session() as s:
                now = console.clock()
                if (found := signed(s, request, now)) is None:
                    return console.render("login_needed.html", status=401)
                session_row, member, stale = found
                if stale:  # in the action's own transaction; as often as a page's, so the cookie keeps pace
                    session_row.last_seen_at = now
                if admin_only and member.role != "admin":
                    return kept(refused(member, PermissionDenied(ADMINS_ONLY)), request, stale)
                visit = Visit(s, member, session_row.csrf, now)
                work = s.begin_nested()  # a refusal undoes the request's changes, not the session's touch
                try:
                    response = await handler(console, request, visit)
                except (PermissionDenied, Refused) as exc:
                    work.rollback()
                    return kept(refused(member, exc), request, stale)
                if work.is_active:
                    work.commit()
                return kept(response, request, stale)

        async def read(request: Request) -> Response:
            """A page or a download, read in a read-only session: on SQLite it never holds the one write lock,
            so a province's report does not stall members' answers and the chat meanwhile. The session's touch
            and the page's audit lines follow in a short write transaction of their own."""
            audit: list[tuple[str, str]] = []
            with db.read_session() as s:
                now = console.clock()
                if (found := signed(s, request, now)) is None:
                    return console.render("login_needed.html", status=401)
                session_row, member, stale = found
                session_id, member_id = session_row.id, member.id
                if admin_only and member.role != "admin":
                    response = refused(member, PermissionDenied(ADMINS_ONLY))
                else:
                    visit = Visit(s, member, session_row.csrf, now, deferred=audit)
                    try:
                        response = await handler(console, request, visit)
                    except (PermissionDenied, Refused) as exc:
                        audit.clear()
                        response = refused(member, exc)
                if s.new or s.dirty or s.deleted:  # it would be rolled back unseen: a page must not write
                    raise RuntimeError(f"{request.url.path}: a page changed the database in its read-only session")
            if stale or audit:
                with db.session() as s:
                    if stale:
                        console_access.touch_session(s, session_id, now)
                    for action, detail in audit:
                        console_access.record_by_id(s, member_id, action, detail, now)
            return kept(response, request, stale)

        return off_the_loop(endpoint, upload, signed_in)

    def kept(response: Response, request: Request, touched: bool) -> Response:
        """The session was just marked as used: its cookie lives ``SESSION_IDLE`` from now, as it does on
        the server (not from the login: a session in use does not end mid-work)."""
        if touched:
            keep_cookie(response, request.cookies[COOKIE])
        return response

    def login_path(request: Request) -> str:
        """The login page's cookie is its link's own (another link's page keeps its value); a token we never
        make (it could carry a cookie attribute) gets the folder's."""
        token = request.path_params["token"]
        return f"/quantri/vao/{token}" if LOGIN_TOKEN.fullmatch(token) else "/quantri/vao"

    def keep_cookie(response: Response, value: str) -> None:
        response.set_cookie(COOKIE, value, max_age=int(console_access.SESSION_IDLE.total_seconds()),
                            path="/quantri", httponly=True, samesite="lax", secure=console.secure_cookie)

    def refused(member: Member, exc: PermissionDenied | Refused) -> Response:
        status = exc.status if isinstance(exc, Refused) else 403
        return console.render("refused.html", status=status, me=member, message=exc.message,
                              back=getattr(exc, "back", None))

    async def login_form(request: Request) -> Response:
        """The login link's page: a button (a link preview must not spend the link) whose form carries the
        value of a cookie this page sets, for this link alone (kept if the browser sends it back; the same link
        tapped again in the chat is a visit from another site, which gets a fresh value: the newer page's button
        works, the older one's asks to open the link again, which still works)."""
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not LOGIN_NONCE.fullmatch(nonce):
            nonce = secrets.token_urlsafe(24)
        response = console.render("login.html", token=request.path_params["token"], csrf=nonce)
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=int(console_access.LINK_TTL.total_seconds()) * 2,
                            path=login_path(request), httponly=True, samesite="strict", secure=console.secure_cookie)
        return response

    async def login(request: Request) -> Response:
        token = request.path_params["token"]
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        try:  # checked before the link is looked at: a refused form leaves the link unspent
            if not LOGIN_NONCE.fullmatch(nonce):
                raise Refused(403, STALE_LOGIN)
            await read_form(request, nonce)
        except Refused as exc:
            return console.render("refused.html", status=exc.status,
                                  message=STALE_LOGIN if exc.status == 403 else exc.message)
        with db.session() as s:
            now = console.clock()
            # A real link opens even from an address on hold: behind a proxy every user shares its address,
            # and a stranger's forged links must not lock cadres out. Links are 256 random bits, so the hold
            # only keeps forgeries from filling the audit log.
            held = console_access.too_many_refusals(s, client(request), now)
            opened = console_access.redeem_login(s, token, now, client(request), record_refusal=not held)
        if opened is None and held:
            return console.render("refused.html", status=429,
                                  message="Quá nhiều lần vào không thành công; đồng chí thử lại sau 10 phút.")
        if opened is None:
            return console.render("refused.html", status=403, message=(
                "Đường dẫn này đã được dùng hoặc đã hết hạn. Đồng chí gõ /quantri trong chat để nhận đường dẫn mới."))
        response = secured(RedirectResponse("/quantri/", status_code=303))
        keep_cookie(response, opened.token)
        response.delete_cookie(LOGIN_COOKIE, path=login_path(request))
        return response

    async def logout(request: Request) -> Response:
        with db.session() as s:
            found = console_access.active_session(s, request.cookies.get(COOKIE), console.clock())
            if found is not None:
                await read_form(request, found[0].csrf)
                console_access.end_session(s, request.cookies.get(COOKIE), console.clock())
        response = secured(RedirectResponse("/quantri/da-thoat", status_code=303))
        response.delete_cookie(COOKIE, path="/quantri")
        return response

    async def logged_out(request: Request) -> Response:
        return console.render("login_needed.html", message="Đồng chí đã thoát khỏi trang quản trị.")

    async def refused_logout(request: Request) -> Response:  # logout answers Refused as a page too
        try:
            return await logout(request)
        except Refused as exc:
            return console.render("refused.html", status=exc.status, message=exc.message)

    async def not_found(request: Request, exc) -> Response:
        return slash_redirect(request) or console.render("refused.html", status=404,
                                                         message="Không tìm thấy trang này.")

    async def wrong_method(request: Request, exc) -> Response:
        response = console.render("refused.html", status=405, message="Trang này không mở được theo cách này.")
        response.headers["Allow"] = allowed_methods(request)
        return response

    app = Starlette(routes=[
        Route("/vao/{token}", login_form, methods=["GET"]),
        Route("/vao/{token}", off_the_loop(login), methods=["POST"]),
        Route("/thoat", off_the_loop(refused_logout), methods=["POST"]),
        Route("/da-thoat", logged_out, methods=["GET"]),
        Route("/", page(pages.overview), methods=["GET"]),
        Route("/dot/{round_id}/donvi/{unit_id}", page(pages.unit_page), methods=["GET"]),
        Route("/dot/{round_id}/donvi/{unit_id}/baocao.xlsx", page(pages.report_xlsx), methods=["GET"]),
        Route("/dot/{round_id}/donvi/{unit_id}/bieudo.png", page(pages.chart_png), methods=["GET"]),
        Route("/nhacnho", page(pages.remind), methods=["POST"]),
        Route("/dot/moi", page(pages.new_round), methods=["GET", "POST"]),
        Route("/dot/{round_id}/dong", page(pages.close_round), methods=["POST"]),
        Route("/dot/{round_id}/giahan", page(pages.extend_round), methods=["POST"]),
        Route("/vanban", page(pages.documents, upload=MAX_UPLOAD), methods=["GET", "POST"]),
        Route("/vanban/mau.xlsx", page(pages.document_template), methods=["GET"]),
        Route("/doanvien", page(pages.roster, upload=MAX_ROSTER_UPLOAD), methods=["GET", "POST"]),
        Route("/doanvien/thumoi.xlsx", page(pages.invitations), methods=["POST"]),
        Route("/doanvien/{member_id}/ngung", page(pages.deactivate), methods=["POST"]),
        Route("/doanvien/{member_id}/sinhhoatlai", page(pages.reactivate), methods=["POST"]),
        Route("/doanvien/{member_id}/malienket", page(pages.relink), methods=["POST"]),
        Route("/nhatky", page(pages.audit, admin_only=True), methods=["GET"]),
        Route("/zalo-oa", page(pages.zalo_oa, admin_only=True), methods=["GET"]),
        Route("/zalo-oa/ketnoi", page(pages.zalo_oa_connect, admin_only=True), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ], exception_handlers={404: not_found, 405: wrong_method})
    without_slash_redirects(app.router)
    return app
