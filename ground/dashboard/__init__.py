"""The operators' dashboard: a static page over a JSON API, /metrics and login.

``setup(app, home)`` registers every route on an aiohttp application; `ground serve`
calls it. No build step: the page is plain HTML/CSS/JS under ``static/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from .. import operators
from ..home import GroundHome
from .api import READER_KEY, ROUTES, STOP_KEY, STREAMS_KEY, not_found
from .auth import HOME_KEY, IDLE_KEY, LIMITER_KEY, LoginLimiter, now_ms
from .reader import Reader

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/dashboard/static"
# How often idle browser sessions nobody comes back to are ended (and audited); a session
# that does come back is refused on the spot whatever this says.
IDLE_SWEEP_S = 60.0

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


async def _idle_sweeper(app: web.Application) -> AsyncIterator[None]:
    async def sweep() -> None:
        while True:
            try:
                operators.end_idle_sessions(app[HOME_KEY].conn, now_ms(), idle_ms=app[IDLE_KEY])
            except sqlite3.Error as exc:  # busy database: the next sweep catches up
                log.warning("ending idle operator sessions failed: %s", exc)
            await asyncio.sleep(IDLE_SWEEP_S)

    task = asyncio.ensure_future(sweep())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(
    app: web.Application,
    home: GroundHome,
    *,
    limiter: LoginLimiter | None = None,
    session_idle_ms: int = operators.SESSION_IDLE_MS,
) -> None:
    """Register the dashboard page, its static files, the JSON API, /metrics and login/logout.

    ``session_idle_ms``: a browser session unused this long ends (0: only the absolute limit).
    """
    conn = home.conn
    operators.ensure_schema(conn)
    app[HOME_KEY] = home
    app[IDLE_KEY] = session_idle_ms
    app[LIMITER_KEY] = limiter or LoginLimiter()
    app[STOP_KEY] = asyncio.Event()
    app[STREAMS_KEY] = {}
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
    if session_idle_ms > 0:
        app.cleanup_ctx.append(_idle_sweeper)


__all__ = ["setup"]
