"""Who is calling: session cookies, bearer tokens, CSRF checks, roles and login rate limits.

A browser logs in once (POST /api/login) and gets an HttpOnly, SameSite=Strict cookie plus
a CSRF token it must echo in ``X-CSRF-Token`` on every state-changing request; scripts and
Prometheus use ``Authorization: Bearer <token>`` from ``ground operator token`` (not
sent automatically by browsers, so not subject to CSRF). Unauthenticated → 401 with no
data; a read-only operator attempting an action → 403.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .. import operators
from ..home import GroundHome

COOKIE = "orbitpost_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

HOME_KEY = web.AppKey("orbitpost_dashboard_home", GroundHome)


def json_error(status: int, message: str, **headers: str) -> web.Response:
    """Every refusal is JSON naming the problem; never a stack trace, never data."""
    return web.json_response(
        {"error": message}, status=status, headers={"Cache-Control": "no-store", **headers}
    )


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class LoginLimiter:
    """At most ``max_failures`` failed logins per ``window_s``, per client address and per name.

    In memory on purpose: a restart forgets lockouts, which costs an attacker a restart
    they cannot cause; the audit log keeps every failure anyway.
    """

    max_failures: int = 5
    window_s: float = 60.0
    max_keys: int = 10_000  # bounded memory under a spray of names/addresses
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        cutoff = self.clock() - self.window_s
        while q and q[0] <= cutoff:
            q.popleft()
        return q

    def retry_after_s(self, *keys: str) -> float:
        """Seconds until a login for these keys may be tried again (0 = now)."""
        wait = 0.0
        for k in keys:
            q = self._recent(k)
            if len(q) >= self.max_failures:
                wait = max(wait, q[0] + self.window_s - self.clock())
        return wait

    def failed(self, *keys: str) -> None:
        if len(self._failures) >= self.max_keys:
            cutoff = self.clock() - self.window_s
            for k in [k for k, q in self._failures.items() if not q or q[-1] <= cutoff]:
                del self._failures[k]
            if len(self._failures) >= self.max_keys:
                self._failures.clear()
        for k in keys:
            self._failures.setdefault(k, deque(maxlen=self.max_failures)).append(self.clock())

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


LIMITER_KEY = web.AppKey("orbitpost_dashboard_limiter", LoginLimiter)
# Typed request-scoped key where aiohttp has them (3.13+), else the plain string it accepted before.
SESSION_KEY: Any = (
    web.RequestKey("orbitpost_session", operators.Session)
    if hasattr(web, "RequestKey")
    else "orbitpost_session"
)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def session_of(request: web.Request) -> operators.Session | None:
    """The live session behind the request's bearer token or cookie, if any."""
    conn = request.app[HOME_KEY].conn
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return operators.session_for(conn, auth[7:].strip(), now_ms())
    token = request.cookies.get(COOKIE)
    if token:
        s = operators.session_for(conn, token, now_ms())
        if s is not None and s.kind == "session":
            return s
    return None


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


def require(*, admin: bool = False) -> Callable[[Handler], Handler]:
    """Decorate a handler: 401 without a live session, 403 for read-only on actions or bad CSRF."""

    def deco(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = session_of(request)
            if session is None:
                return json_error(
                    401,
                    "not logged in: POST /api/login or send Authorization: Bearer <token>",
                    **{"WWW-Authenticate": 'Bearer realm="orbitpost"'},
                )
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
