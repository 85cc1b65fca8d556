"""What every web surface (study pages, console) answers a request of a method its path does not take."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Match, Route


def allowed_methods(request: Request) -> str:
    """A 405's ``Allow``: the methods of every route of the request's path in its app (Starlette names
    only the first route's, and a page and its form are often two routes)."""
    allowed = {m for route in request.app.routes if isinstance(route, Route) and route.methods
               and route.matches(request.scope)[0] != Match.NONE for m in route.methods}
    return ", ".join(sorted(allowed))
