"""Who may use the page: a per-start secret, a session cookie, CSRF tokens, a Host check.

``onboard ui`` prints (and opens) ``/login?secret=S``: S is random per start, so only
someone who can read that terminal (or the browser it opened) gets in. Login trades S for
a session cookie (HttpOnly, SameSite=Strict, named for the port so two instances do not
collide) and a CSRF token the page echoes in ``X-CSRF-Token`` on every action.

The Host header must name the loopback address we listen on: a page from the internet
whose DNS name was rebound to 127.0.0.1 sends its own name, and is refused (DNS rebinding).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .keyring import KeyRing

CSRF_HEADER = "X-CSRF-Token"
# The page's own polling: not a sign that someone is at the keyboard (keys still lock).
BACKGROUND_HEADER = "X-Onboard-Background"
SAFE_METHODS = frozenset({"GET", "HEAD"})
# Sessions per server: a crew opening tabs, not an attacker (who has no secret) filling memory.
MAX_SESSIONS = 32


@dataclass(slots=True, kw_only=True)
class Session:
    token: str
    csrf: str
    keys: KeyRing
    astronaut: str | None = None
    created: float = field(default_factory=time.monotonic)
    # (change token, ETag, body) of the last /api/state built for this session.
    state_cache: tuple[str, str, bytes] | None = None


@dataclass(slots=True, kw_only=True)
class Gate:
    """The server's secret, its sessions and the Host names it answers to."""

    secret: str
    port: int
    lock_after_s: float
    sessions: dict[str, Session] = field(default_factory=dict)

    @property
    def cookie(self) -> str:
        return f"onboard_ui_{self.port}"

    def allowed_hosts(self) -> frozenset[str]:
        return frozenset(f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]"))

    def login(self, secret: str) -> Session | None:
        if not hmac.compare_digest(secret.encode(), self.secret.encode()):
            return None
        if len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.created)
            oldest.keys.lock_all()
            del self.sessions[oldest.token]
        s = Session(
            token=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            keys=KeyRing(lock_after_s=self.lock_after_s),
        )
        self.sessions[s.token] = s
        return s

    def session_for(self, request: web.Request) -> Session | None:
        token = request.cookies.get(self.cookie, "")
        for t, s in self.sessions.items():
            if token and hmac.compare_digest(t.encode(), token.encode()):
                return s
        return None


GATE_KEY = web.AppKey("onboard_ui_gate", Gate)
SESSION_KEY: Any = web.RequestKey("onboard_ui_session", Session) if hasattr(web, "RequestKey") else "session"


def refuse(status: int, message: str) -> web.Response:
    """Every refusal is JSON naming the problem, never data."""
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})


# Pages and API answers: nothing from outside, nothing inline, never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Host check, then session, then CSRF on anything that changes state."""
    gate = request.app[GATE_KEY]
    if request.host not in gate.allowed_hosts():
        return refuse(421, f"wrong Host {request.host!r}: open the address `onboard ui` printed")
    if request.path == "/login":
        resp = await handler(request)
    else:
        session = gate.session_for(request)
        if session is None:
            return refuse(401, "no session: open the address `onboard ui` printed (it carries the secret)")
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return refuse(403, "request from another origin refused")
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                return refuse(403, "missing or wrong CSRF token: reload the page")
        if request.headers.get(BACKGROUND_HEADER) != "1":
            session.keys.touch()
        session.keys.expire()
        request[SESSION_KEY] = session
        resp = await handler(request)
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp
