"""``GET /zalo-oa/callback``: where Zalo sends the OA admin's browser after "allow"; the code is exchanged
for the tokens here, and the admin reads the outcome on a page instead of copying the address into a shell.

Only a request carrying the ``state`` of the authorisation last started (from the console's "Kết nối với
Zalo" or ``hoctap zalo-oa authorize``), within 10 minutes, reaches Zalo's token endpoint; anything else is
refused on the page without a call. The code and the tokens never appear on the page or in a log line.
"""

from __future__ import annotations

import html
import logging
from datetime import datetime
from typing import Callable
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bot.channels.zalo_oa.tokens import CallbackRefused, OAError, TokenStore
from bot.timeutil import fmt_datetime, utcnow

log = logging.getLogger(__package__)
PATH = "/zalo-oa/callback"
CONSOLE_PAGE = "/quantri/zalo-oa"
AGAIN = "Đồng chí vào trang quản trị, mục «Zalo OA», bấm lại «Kết nối với Zalo»."
REFUSALS = {
    "no_code": "Zalo không gửi mã cấp quyền: có thể đồng chí chưa bấm «Cho phép». " + AGAIN,
    "not_started": "Yêu cầu cấp quyền này không do trang quản trị tạo ra, hoặc đã được dùng. " + AGAIN,
    "state": "Yêu cầu cấp quyền này không khớp với lần bấm «Kết nối với Zalo» gần nhất. " + AGAIN,
    "expired": "Yêu cầu cấp quyền đã quá 10 phút. " + AGAIN,
    "refused": "Zalo từ chối mã cấp quyền. " + AGAIN,
}
PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kết nối Zalo OA</title><link rel="stylesheet" href="/quantri/static/console.css"></head>
<body><header><strong>Quản trị học tập</strong></header><main>
<h1>Kết nối Zalo Official Account</h1><p class="{css}" id="outcome">{text}</p>
<p><a href="{back}" id="back">Về trang Zalo OA</a></p></main></body></html>"""


def _page(text: str, status: int, css: str) -> HTMLResponse:
    return HTMLResponse(PAGE.format(css=css, text=html.escape(text), back=CONSOLE_PAGE), status_code=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def callback_endpoint(tokens: TokenStore, tz: ZoneInfo, clock: Callable[[], datetime] = utcnow):
    async def endpoint(request: Request) -> Response:
        try:
            expires = await run_in_threadpool(tokens.complete, str(request.url), clock())
        except CallbackRefused as exc:
            log.warning("Zalo OA callback refused: %s", exc)
            return _page(REFUSALS[exc.kind], 400, "error")
        except OAError as exc:  # the token endpoint busy or unreachable: the code is unspent for its 10 minutes
            log.warning("Zalo OA callback: the token endpoint failed (%s)", exc.code)
            return _page("Chưa liên lạc được với Zalo. Đồng chí tải lại trang này sau ít phút (trong vòng 10 phút).",
                         503, "error")
        log.info("Zalo OA: authorised from the callback page")
        return _page(f"Đã kết nối. Mã truy cập được gia hạn tự động (lần này đến {fmt_datetime(expires, tz)}); "
                     "tin nhắn qua Zalo OA được gửi từ bây giờ.", 200, "notice")
    return endpoint
