"""Who is calling: session cookies, bearer tokens, CSRF checks, roles and login rate limits.

A browser logs in once (POST /api/login) and gets an HttpOnly, SameSite=Strict cookie plus
a CSRF token it must echo in ``X-CSRF-Token`` on every state-changing request; scripts and
Prometheus use ``Authorization: Bearer <token>`` from ``ground operator token`` (not
sent automatically by browsers, so not subject to CSRF). Unauthenticated → 401 with no
data; a read-only operator attempting an action → 403.

A browser session also ends after ``operators.SESSION_IDLE_MS`` without use. Every
authenticated request is a use, except those the page marks ``X-Orbitpost-Background: 1``
(its own polling, sent while nobody has touched the page) and the event stream (the
browser reopens it by itself): otherwise an open, unattended dashboard would never idle.
A session that ended (idle, expired, logged out) gets 401 with ``reason`` naming why.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .. import logs, operators
from ..home import GroundHome
from ..login_limits import LoginLimiter as LoginLimiter  # re-exported: setup(limiter=...) takes one

COOKIE = "orbitpost_session"
CSRF_HEADER = "X-CSRF-Token"
BACKGROUND_HEADER = "X-Orbitpost-Background"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

HOME_KEY = web.AppKey("orbitpost_dashboard_home", GroundHome)
IDLE_KEY = web.AppKey("orbitpost_dashboard_session_idle_ms", int)


def json_error(status: int, message: str, **headers: str) -> web.Response:
    """Every refusal is JSON naming the problem; never a stack trace, never data."""
    return web.json_response(
        {"error": message}, status=status, headers={"Cache-Control": "no-store", **headers}
    )


def now_ms() -> int:
    return int(time.time() * 1000)


LIMITER_KEY = web.AppKey("orbitpost_dashboard_limiter", LoginLimiter)
# Typed request-scoped key where aiohttp has them (3.13+), else the plain string it accepted before.
SESSION_KEY: Any = (
    web.RequestKey("orbitpost_session", operators.Session)
    if hasattr(web, "RequestKey")
    else "orbitpost_session"
)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def session_of(request: web.Request, *, touch: bool = True) -> operators.Session | operators.Refused:
    """The live session behind the request's bearer token or cookie, or why there is none.

    With ``touch`` (and no background header) the request counts as a use of a browser session.
    """
    conn = request.app[HOME_KEY].conn
    idle_ms = request.app[IDLE_KEY]
    touch = touch and request.headers.get(BACKGROUND_HEADER, "") != "1"
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        token_sha256 = operators.token_hash(auth[7:].strip())
        return operators.check_session(conn, token_sha256, now_ms(), idle_ms=idle_ms, touch=touch)
    token = request.cookies.get(COOKIE)
    if token:
        found = operators.check_session(
            conn, operators.token_hash(token), now_ms(), idle_ms=idle_ms, touch=touch
        )
        if isinstance(found, operators.Refused) or found.kind == "session":
            return found
    return operators.Refused(reason=operators.SessionEnd.UNKNOWN)


_NOT_LOGGED_IN = "not logged in: POST /api/login or send Authorization: Bearer <token>"


def refusal_message(refused: operators.Refused, idle_ms: int) -> str:
    """What a person reads when their token stops working: why, and what to do."""
    match refused.reason:
        case operators.SessionEnd.IDLE:
            # idle_ms is today's setting; a session ended under another reads "without use".
            after = f" after {idle_ms // 60000} min" if idle_ms >= 60000 else ""
            return f"session ended{after} without use; log in again"
        case operators.SessionEnd.EXPIRED:
            return "session expired; log in again"
        case operators.SessionEnd.LOGGED_OUT:
            return "session ended by logout; log in again"
        case operators.SessionEnd.OPERATOR_REMOVED:
            return "this operator was removed; ask an admin"
        case _:
            return _NOT_LOGGED_IN


def unauthorized(request: web.Request, refused: operators.Refused) -> web.Response:
    """401 naming why: no ``reason`` for a token never seen here (nothing to tell a forger)."""
    headers = {"Cache-Control": "no-store", "WWW-Authenticate": 'Bearer realm="orbitpost"'}
    body: dict[str, str] = {"error": refusal_message(refused, request.app[IDLE_KEY])}
    if request.headers.get("Authorization") or request.cookies.get(COOKIE):
        kind = "api_token" if request.headers.get("Authorization") else "session_cookie"
        logs.event(
            "credential_refused",
            f"operator {kind.replace('_', ' ')} refused ({refused.reason}) from {request.remote or '?'}",
            level=logging.WARNING,
            credential=kind,
            addr=request.remote or "?",
        )
    if refused.reason is not operators.SessionEnd.UNKNOWN:
        body["reason"] = str(refused.reason)
    return web.json_response(body, status=401, headers=headers)


def _csrf_ok(request: web.Request, session: operators.Session) -> str | None:
    """None if this state-changing request is safe from cross-site forgery, else why not."""
    if request.headers.get("Authorization", "")[:7].lower() == "bearer ":
        return None  # browsers never attach bearer tokens on their own
    origin = request.headers.get("Origin")
    # Host only, not scheme: behind a TLS-terminating proxy the browser says https while
    # aiohttp sees http; a forging site can never present our host.
    if origin is not None and urlsplit(origin).netloc != request.host:
        return f"cross-origin request from {origin} refused"
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        return f"missing or wrong {CSRF_HEADER} header (GET /api/me returns the token for this session)"
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def require(*, admin: bool = False, use: bool = True) -> Callable[[Handler], Handler]:
    """Decorate a handler: 401 without a live session, 403 for read-only on actions or bad CSRF.

    ``use=False``: calling this route does not keep a browser session from going idle.
    """

    def deco(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = session_of(request, touch=use)
            if isinstance(session, operators.Refused):
                return unauthorized(request, session)
            if request.method not in SAFE_METHODS:
                why = _csrf_ok(request, session)
                if why:
                    return json_error(403, why)
            if admin and not session.operator.can_act:
                return json_error(
                    403, f"operator {session.operator.name} is read-only; this action needs an admin"
                )
            request[SESSION_KEY] = session
            return await handler(request)

        setattr(wrapped, "auth_required", "admin" if admin else "any")  # noqa: B010 (read by the route tests)
        return wrapped

    return deco


def current(request: web.Request) -> operators.Session:
    s: Any = request[SESSION_KEY]
    assert isinstance(s, operators.Session)
    return s


def actor(request: web.Request) -> str:
    return f"operator:{current(request).operator.name}"
