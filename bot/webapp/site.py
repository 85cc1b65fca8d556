"""The study pages' routes (mounted at ``/hoc``): open rounds, summary, quiz, result, history.

Every page reads the database; nothing about a member lives in this process. The way in is the
member's signed link (``/hoc/l/<token>``), after which a cookie carries the same token (HttpOnly,
SameSite=Lax, Secure behind HTTPS), so a revoked or expired link, or a deactivated member, ends
the session too. Forms post and redirect (POST-redirect-GET); an answer names its attempt and
position, so a resubmitted form records nothing twice.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl
from datetime import datetime
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bot.domain.ids import MAX_ID, parse_id
from bot.domain.languages import UNREVIEWED, language_name
from bot.domain.messages import LETTERS, percent, reading_of
from bot.services import quiz, web_links
from bot.routing import allowed_methods, slash_redirect, without_slash_redirects
from bot.storage.db import Database
from bot.storage.models import Attempt, AttemptQuestion, ChatAccount, Round
from bot.timeutil import utcnow
from bot.web import BadBody, read_body
from bot.webapp.miniapp import check_init_data

HERE = Path(__file__).parent
COOKIE = "hoctap_hoc"
CSP = "default-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors {}"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",  # the back button shows the current question, never a stale form
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CSP.format("'none'"),  # no other site can frame the one-tap answer buttons
    "X-Frame-Options": "DENY",
}
# The Mini App's own pages (its start page and the answers to its login): Telegram's web client shows a
# Mini App in an iframe on web.telegram.org (the apps in a web view of their own). X-Frame-Options cannot
# name a site, and a browser that knows frame-ancestors ignores it, so it is left out.
MINI_APP_HEADERS = {**{k: v for k, v in SECURITY_HEADERS.items() if k != "X-Frame-Options"},
                    "Content-Security-Policy": CSP.format("https://web.telegram.org")}
NEW_LINK = "Để nhận đường link mới, đồng chí nhắn /hoc cho bot học tập (trên Zalo gõ HỌC)."
REFUSALS = {
    "forged": (403, "Đường link không hợp lệ",
               "Đường link này không đúng hoặc đã bị sửa đổi, nên không mở được trang học tập."),
    "expired": (410, "Đường link đã hết hạn",
                "Đường link này đã hết hạn: đợt học tập đã kết thúc hoặc link đã quá thời hạn sử dụng."),
    "revoked": (403, "Đường link đã bị thu hồi", "Đường link này không còn dùng được."),
    "inactive": (403, "Không mở được trang",
                 "Đảng viên gắn với đường link này không còn trong danh sách sinh hoạt. "
                 "Vui lòng liên hệ bí thư chi bộ."),
    "other_user": (403, "Đây là đường link của đồng chí khác",
                   "Đường link này được gửi riêng cho một đảng viên khác, nên không mở được bằng "
                   "tài khoản Telegram của đồng chí. Hãy dùng đường link trong tin nhắn bot gửi cho chính mình."),
    "no_session": (401, "Cần mở từ tin nhắn của bot",
                   "Trang học tập chỉ mở được bằng đường link riêng mà bot gửi cho đồng chí."),
    "tampered": (403, "Không xác minh được tài khoản Telegram",
                 "Dữ liệu đăng nhập từ Telegram không hợp lệ. Đồng chí đóng trang và bấm lại nút trong Telegram."),
    "stale": (403, "Phiên Telegram đã quá cũ",
              "Đồng chí đóng trang và bấm lại nút «Mở trang học tập» trong Telegram."),
    "missing": (403, "Cần mở trong Telegram",
                "Trang này mở bằng nút «Mở trang học tập» trong ứng dụng Telegram."),
    "csrf": (403, "Trang đã cũ", "Trang đồng chí vừa gửi đã cũ. Đồng chí quay lại trang học tập và thử lại."),
    "not_found": (404, "Không tìm thấy trang", "Trang này không có hoặc không dành cho đồng chí."),
    "round_over": (410, "Đợt học tập đã kết thúc",
                   "Đợt học tập này đã kết thúc, nên không đọc tài liệu hay làm bài kiểm tra của đợt được nữa. "
                   "Kết quả của đồng chí vẫn được lưu."),
    "wrong_method": (405, "Không mở được trang này", "Trang này không mở được theo cách này; hãy mở từ tin nhắn của bot."),
    "too_large": (413, "Không gửi được", "Nội dung gửi lên quá lớn so với một câu trả lời. Đồng chí quay lại trang "
                                         "học tập và chạm vào một đáp án."),
}
MAX_FORM = 16 * 1024  # an answer or a Mini App login is well under 2 KB; read before anything else is done
# where a fresh link from the bot is the way back in (not for a round that is over, nor a member no longer listed)
NEW_LINK_HELPS = {"forged", "expired", "revoked", "no_session", "csrf", "not_found", "wrong_method"}


async def small_form(request: Request) -> FormData | None:
    """The posted (URL-encoded) form, read whole only up to ``MAX_FORM`` bytes; None beyond (or a body
    that lies about its length). Nothing is spooled to disk for a stranger's upload."""
    try:
        raw = await read_body(request, MAX_FORM)
    except BadBody:
        return None
    return FormData(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


class Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class PagesConfig:
    db: Database
    secret: bytes = field(repr=False)
    public_url: str
    tz: ZoneInfo = ZoneInfo("Asia/Ho_Chi_Minh")
    telegram_token: str | None = field(default=None, repr=False)  # checks Mini App initData
    clock: Callable[[], datetime] = utcnow

    @property
    def secure_cookie(self) -> bool:
        return self.public_url.startswith("https://")


def summary_blocks(text: str) -> list[dict]:
    """The summary as readable blocks: a paragraph, or a heading line with a numbered list under it."""
    blocks = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in para.splitlines() if line.strip()]
        items = [re.sub(r"^\d+[.)]\s*", "", line) for line in lines[1:] if re.match(r"^\d+[.)]\s", line)]
        if items and len(items) == len(lines) - 1:
            blocks.append({"heading": lines[0], "entries": items})
        else:
            blocks.append({"text": " ".join(lines)})
    return blocks


def lead(text: str) -> Markup:
    """``Mục đích (Mục I): ...`` with its label in bold."""
    head, sep, rest = text.partition(": ")
    if sep and len(head) <= 60:
        return Markup("<strong>{}:</strong> {}").format(head, rest)
    return escape(text)


def create_pages(cfg: PagesConfig) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters["lead"] = lead
    env.filters["percent"] = percent
    env.filters["local"] = lambda dt: dt.astimezone(cfg.tz).strftime("%H:%M ngày %d/%m/%Y")
    env.filters["language_name"] = language_name
    env.globals["LETTERS"] = LETTERS
    env.globals["UNREVIEWED"] = UNREVIEWED

    def page(request: Request, name: str, status: int = 200, *, mini_app: bool = False, **context) -> Response:
        context.setdefault("base", request.scope.get("root_path", ""))
        response = templates.TemplateResponse(request, name, context, status_code=status)
        response.headers.update(MINI_APP_HEADERS if mini_app else SECURITY_HEADERS)
        return response

    def go(request: Request, path: str) -> Response:
        return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303,
                                headers={"Cache-Control": "no-store"})

    def refusal(request: Request, reason: str, *, mini_app: bool = False) -> Response:
        status, title, text = REFUSALS[reason]
        return page(request, "refused.html", status, mini_app=mini_app, title=title, text=text,
                    new_link=NEW_LINK if reason in NEW_LINK_HELPS else None)

    def signed_in(request: Request, response: Response, token: str, link) -> Response:
        max_age = max(int((link.expires_at - cfg.clock()).total_seconds()), 0)
        response.set_cookie(COOKIE, token, max_age=max_age, path=request.scope.get("root_path", "") or "/",
                            httponly=True, samesite="lax", secure=cfg.secure_cookie)
        return response

    def session_of(request: Request, s):
        token = request.cookies.get(COOKIE)
        if not token:
            raise Refused("no_session")
        checked = web_links.check(s, cfg.secret, token, cfg.clock())
        if not checked.ok:
            raise Refused(checked.status)
        return checked

    def csrf_ok(checked, form) -> bool:
        return hmac.compare_digest(str(form.get("csrf", "")).encode("utf-8", "replace"),
                                   web_links.form_token(cfg.secret, checked.link.id).encode())

    def landing(s, checked) -> str:
        rid = checked.link.round_id
        if rid is not None and quiz.round_for_member(s, checked.member, rid, cfg.clock()) is not None:
            return f"/dot/{rid}"
        return "/"

    # -- getting in ------------------------------------------------------------------------------
    def open_link(request: Request) -> Response:
        token = request.path_params["token"]
        mini_app = bool(request.query_params.get("tg"))
        with cfg.db.session() as s:
            checked = web_links.check(s, cfg.secret, token, cfg.clock())
            if not checked.ok:
                return refusal(request, checked.status, mini_app=mini_app)
            if mini_app:  # who opened it is checked first
                return page(request, "miniapp.html", mini_app=True, token=token)
            return signed_in(request, go(request, landing(s, checked)), token, checked.link)

    def mini_app_login(request: Request, form) -> Response:
        token = str(form.get("token", ""))
        with cfg.db.session() as s:
            checked = web_links.check(s, cfg.secret, token, cfg.clock())
            if not checked.ok:
                return refusal(request, checked.status, mini_app=True)
            init = check_init_data(str(form.get("init_data", "")), cfg.telegram_token or "", cfg.clock())
            if not init.ok:
                return refusal(request, init.status, mini_app=True)
            linked = s.scalar(select(ChatAccount.external_id).where(
                ChatAccount.channel == "telegram", ChatAccount.member_id == checked.member.id))
            if linked is None or linked != str(init.user_id):
                return refusal(request, "other_user", mini_app=True)
            return signed_in(request, go(request, landing(s, checked)), token, checked.link)

    # -- pages -----------------------------------------------------------------------------------
    def home(request: Request, s, checked) -> Response:
        now = cfg.clock()
        rows = []
        for rnd in quiz.open_rounds_for(s, checked.member, now):
            attempts = quiz.attempts_of(s, rnd.id, checked.member.id)
            rows.append({"round": rnd, "state": _state(s, attempts, rnd.document.max_attempts)})
        return page(request, "home.html", member=checked.member, rows=rows)

    def read(request: Request, s, checked) -> Response:
        rnd = _open_round(s, checked, request.path_params["rid"], cfg.clock())
        quiz.record_view(s, rnd.id, checked.member.id, cfg.clock())
        attempts = quiz.attempts_of(s, rnd.id, checked.member.id)
        reading = reading_of(rnd.document, checked.member.language)  # as in the chat: /ngonngu, the roster
        return page(request, "read.html", round=rnd, doc=rnd.document, blocks=summary_blocks(reading.summary),
                    reading=reading, state=_state(s, attempts, rnd.document.max_attempts), csrf=_csrf(checked))

    def start(request: Request, s, checked, form) -> Response:
        now = cfg.clock()
        rnd = _open_round(s, checked, request.path_params["rid"], now)
        position = quiz.start_or_resume(s, rnd, checked.member, now)
        if position is None:
            return go(request, f"/dot/{rnd.id}")
        return go(request, f"/bai/{position.attempt.id}")

    def question(request: Request, s, checked) -> Response:
        attempt = _attempt(s, checked, request.path_params["aid"])
        position = quiz.position_of(s, attempt)
        if position.current is None:
            return go(request, f"/bai/{attempt.id}/ketqua")
        rnd = s.get(Round, attempt.round_id)
        aq: AttemptQuestion = position.current
        options = [(i, aq.question.options[original]) for i, original in enumerate(aq.option_order)]
        notice = {"duplicate": "Câu trước đã được ghi nhận rồi; đây là câu tiếp theo.",
                  "stale": "Câu đó không còn hiện hành; đây là câu hiện tại.",
                  "choice": "Câu này không có đáp án đó; đồng chí chạm vào một đáp án dưới đây.",
                  "closed": "Đợt học tập đã kết thúc, không thể ghi nhận thêm."}.get(request.query_params.get("tb", ""))
        closed = rnd.closed_at is not None or cfg.clock() >= rnd.closes_at
        return page(request, "question.html", attempt=attempt, aq=aq, options=options, doc=rnd.document,
                    notice=None if closed else notice, closed=closed, csrf=_csrf(checked))  # the card says it

    def answer(request: Request, s, checked, form) -> Response:
        attempt = _attempt(s, checked, request.path_params["aid"])
        position, shown = parse_id(str(form.get("position", ""))), parse_id(str(form.get("chon", "")))
        if position is None:
            return go(request, f"/bai/{attempt.id}?tb=stale")
        if shown is None or shown >= len(LETTERS):
            return go(request, f"/bai/{attempt.id}?tb=choice")
        result = quiz.answer(s, checked.member.id, attempt.id, position, shown, cfg.clock())
        if result.status == "missing":
            raise Refused("not_found")
        if result.status == "recorded" and result.quiz.position is None:
            return go(request, f"/bai/{attempt.id}/ketqua")
        status = result.status
        if status == "stale" and result.quiz is not None and result.quiz.position == position:
            status = "choice"  # the question is current: the option is not one of its own
        suffix = "" if status == "recorded" else f"?tb={status}"
        return go(request, f"/bai/{attempt.id}{suffix}")

    def result(request: Request, s, checked) -> Response:
        attempt = _attempt(s, checked, request.path_params["aid"])
        if attempt.submitted_at is None:
            return go(request, f"/bai/{attempt.id}")
        rnd = quiz.round_with_document(s, attempt.round_id)
        reviews = quiz.review(s, attempt)
        missed = [{"r": r, "chosen": r.option_order.index(r.chosen_index),
                   "right": r.option_order.index(r.question.answer_index)} for r in reviews if not r.correct]
        used = quiz.attempts_used(s, rnd.id, checked.member.id)
        still_open = quiz.round_for_member(s, checked.member, rnd.id, cfg.clock()) is not None
        return page(request, "result.html", attempt=attempt, doc=rnd.document, round=rnd, missed=missed,
                    left=max(rnd.document.max_attempts - used, 0) if still_open else 0, csrf=_csrf(checked))

    def history(request: Request, s, checked) -> Response:
        return page(request, "history.html", rows=quiz.member_history(s, checked.member))

    def _csrf(checked) -> str:
        return web_links.form_token(cfg.secret, checked.link.id)

    def _open_round(s, checked, rid: int, now) -> Round:
        rnd = quiz.round_for_member(s, checked.member, rid, now)
        if rnd is None:
            raise Refused("round_over" if quiz.round_over_for(s, checked.member, rid, now) else "not_found")
        return rnd

    def _attempt(s, checked, aid: int) -> Attempt:
        attempt = s.scalar(select(Attempt).where(Attempt.id == aid, Attempt.member_id == checked.member.id))
        if attempt is None:
            raise Refused("not_found")
        return attempt

    # -- plumbing: one transaction per request, in a worker thread ------------------------------
    def member_page(view, *, post: bool = False):
        async def endpoint(request: Request) -> Response:
            form = await small_form(request) if post else None
            if post and form is None:
                return refusal(request, "too_large")

            def work() -> Response:
                if any(isinstance(v, int) and not 0 < v <= MAX_ID for v in request.path_params.values()):
                    return refusal(request, "not_found")  # no row has such an id (and SQL could not take it)
                try:
                    with cfg.db.session() as s:
                        checked = session_of(request, s)
                        if post and not csrf_ok(checked, form):
                            raise Refused("csrf")
                        response = view(request, s, checked, form) if post else view(request, s, checked)
                        # the cookie lives as long as its link does now (an extended round moves it on)
                        return signed_in(request, response, request.cookies[COOKIE], checked.link)
                except Refused as exc:
                    return refusal(request, exc.reason)

            return await run_in_threadpool(work)
        return endpoint

    async def open_endpoint(request: Request) -> Response:
        return await run_in_threadpool(open_link, request)

    async def mini_app_endpoint(request: Request) -> Response:
        form = await small_form(request)
        if form is None:
            return refusal(request, "too_large", mini_app=True)
        return await run_in_threadpool(mini_app_login, request, form)

    async def not_found(request: Request, exc) -> Response:
        return slash_redirect(request) or refusal(request, "not_found")

    async def wrong_method(request: Request, exc) -> Response:
        response = refusal(request, "wrong_method")
        response.headers["Allow"] = allowed_methods(request)
        return response

    pages = Starlette(routes=[
        Route("/l/{token}", open_endpoint, methods=["GET"]),
        Route("/tg", mini_app_endpoint, methods=["POST"]),
        Route("/", member_page(home), methods=["GET"]),
        Route("/ketqua", member_page(history), methods=["GET"]),
        Route("/dot/{rid:int}", member_page(read), methods=["GET"]),
        Route("/dot/{rid:int}/lambai", member_page(start, post=True), methods=["POST"]),
        Route("/bai/{aid:int}", member_page(question), methods=["GET"]),
        Route("/bai/{aid:int}", member_page(answer, post=True), methods=["POST"]),
        Route("/bai/{aid:int}/ketqua", member_page(result), methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ], exception_handlers={404: not_found, 405: wrong_method})
    without_slash_redirects(pages.router)
    return pages


def _state(s, attempts: list[Attempt], max_attempts: int) -> dict:
    """Where the member stands in a round: not started, in progress (question x/y), or finished."""
    open_attempt = next((a for a in attempts if a.submitted_at is None), None)
    if open_attempt is not None:
        pos = quiz.position_of(s, open_attempt)
        return {"kind": "doing", "attempt": open_attempt, "answered": pos.answered}
    done = [a for a in attempts if a.score is not None]
    best = max(done, key=lambda a: a.score, default=None)
    return {"kind": "done" if best else "new", "best": best, "left": max_attempts - len(attempts)}
