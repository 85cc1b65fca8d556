"""What every web surface (study pages, console) answers a request of a method its path does not take, or of
a path that differs from one of its pages by a trailing slash."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Match, Route, Router


def allowed_methods(request: Request) -> str:
    """A 405's ``Allow``: the methods of every route of the request's path in its app (Starlette names
    only the first route's, and a page and its form are often two routes)."""
    allowed = {m for route in request.app.routes if isinstance(route, Route) and route.methods
               and route.matches(request.scope)[0] != Match.NONE for m in route.methods}
    return ", ".join(sorted(allowed))


def without_slash_redirects(router: Router) -> Router:
    """Turn off Starlette's own trailing-slash redirect: its Location is built from the request's Host header,
    which anyone can set (``slash_redirect`` in the 404 handler answers instead)."""
    router.redirect_slashes = False
    return router


def slash_redirect(request: Request) -> RedirectResponse | None:
    """What Starlette's ``redirect_slashes`` answers (``/quantri`` → ``/quantri/``, ``/hoc/ketqua/`` →
    ``/hoc/ketqua``), with a Location relative to the host the browser asked: never the Host header's."""
    scope = request.scope
    path = scope["path"]
    if scope["type"] != "http" or path in ("", "/") or path == scope.get("root_path", "") + "/":
        return None
    other = dict(scope, path=path.rstrip("/") if path.endswith("/") else path + "/")
    if not other["path"] or other["path"].startswith(("//", "/\\")):  # a Location to another host
        return None
    if not any(route.matches(other)[0] != Match.NONE for route in request.app.routes):
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    return RedirectResponse(other["path"] + (f"?{query}" if query else ""))
