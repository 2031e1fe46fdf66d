"""The operators' dashboard: a static page over a JSON API, /metrics and login.

``setup(app, home)`` registers every route on an aiohttp application; `ground serve`
calls it. No build step: the page is plain HTML/CSS/JS under ``static/``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from .. import operators
from ..home import GroundHome
from .api import READER_KEY, ROUTES, STOP_KEY, STREAMS_KEY, not_found
from .auth import HOME_KEY, LIMITER_KEY, LoginLimiter
from .reader import Reader

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/dashboard/static"

# The page runs only our own script and styles; nothing may frame it (clickjacking).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


async def _page(request: web.Request) -> web.StreamResponse:
    # The shell holds no data (the API does, behind login), so it is served to anyone.
    return web.FileResponse(STATIC_DIR / "index.html", headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith((STATIC_PREFIX, "/api/", "/metrics")):
        for k, v in PAGE_HEADERS.items():
            response.headers.setdefault(k, v)


async def _on_shutdown(app: web.Application) -> None:
    # Open event streams would otherwise hold the server's shutdown until they time out.
    app[STOP_KEY].set()
    await asyncio.sleep(0)


async def _on_cleanup(app: web.Application) -> None:
    await app[READER_KEY].close()


def setup(app: web.Application, home: GroundHome, *, limiter: LoginLimiter | None = None) -> None:
    """Register the dashboard page, its static files, the JSON API, /metrics and login/logout."""
    conn = home.conn
    operators.ensure_schema(conn)
    app[HOME_KEY] = home
    app[LIMITER_KEY] = limiter or LoginLimiter()
    app[STOP_KEY] = asyncio.Event()
    app[STREAMS_KEY] = set()
    app[READER_KEY] = Reader(home.db_path)
    app.router.add_get("/", _page, name="dashboard")
    app.router.add_get("/dashboard", _page)
    app.router.add_static(STATIC_PREFIX, STATIC_DIR, name="dashboard_static")
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_route("*", "/api/{tail:.*}", not_found)
    app.on_response_prepare.append(_on_prepare)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)


__all__ = ["setup"]
