"""The operators' JSON API: read views, the live change stream, login/logout and the four actions.

Routes are listed once in ``ROUTES`` (method, path, handler); ``setup`` registers them and
the tests check each one against the OpenAPI document and the auth rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from typing import Any

from aiohttp import web

from .. import logs, operators
from ..db import audit, transaction
from . import actions, queries
from .auth import (
    COOKIE,
    HOME_KEY,
    IDLE_KEY,
    LIMITER_KEY,
    actor,
    client_address,
    current,
    json_error,
    now_ms,
    refusal_message,
    require,
)
from .openapi import openapi_document
from .reader import Reader

MAX_BODY_BYTES = 4096  # a login is two short strings; nothing else here takes a body
MAX_STREAMS = 64  # live dashboards at once; more would only be a way to tie up the server
# One operator or one address may hold only a few (a browser with a few tabs), so no single
# viewer can take them all; the last ADMIN_RESERVED_STREAMS are kept for admins, so an admin
# can always watch what the read-only viewers are doing.
MAX_STREAMS_PER_OPERATOR = 8
MAX_STREAMS_PER_ADDRESS = 16
ADMIN_RESERVED_STREAMS = 8
STREAM_POLL_S = 1.0
STREAM_HEARTBEAT_S = 15.0

STOP_KEY = web.AppKey("orbitpost_dashboard_stop", asyncio.Event)
READER_KEY = web.AppKey("orbitpost_dashboard_reader", Reader)
# Each open stream and who holds it: (operator name, client address).
STREAMS_KEY = web.AppKey("orbitpost_dashboard_streams", dict)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


def _int_param(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"query parameter {name!r} must be an integer, got {raw!r}"}),
            content_type="application/json",
        ) from None
    if not lo <= v <= hi:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"query parameter {name!r} must be between {lo} and {hi}, got {v}"}),
            content_type="application/json",
        )
    return v


def _conn(request: web.Request) -> sqlite3.Connection:
    """The server's connection: writes (actions, sessions) and quick lookups, on the loop."""
    return request.app[HOME_KEY].conn


async def _read(request: web.Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A read-only view, computed in the reader thread (see reader.py)."""
    return await request.app[READER_KEY].run(fn, *args, **kwargs)


# --- login / logout / me ---------------------------------------------------------------


async def login(request: web.Request) -> web.StreamResponse:
    if request.content_type != "application/json":
        return json_error(415, 'send the login as JSON: {"name": ..., "password": ...}')
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return json_error(413, f"login body larger than {MAX_BODY_BYTES} bytes")
    try:
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        body = json.loads(raw) if len(raw) <= MAX_BODY_BYTES else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]] (issue 16)
        return json_error(400, "login body is not valid JSON")
    if body is None:
        return json_error(413, f"login body larger than {MAX_BODY_BYTES} bytes")
    name, password = (body.get("name"), body.get("password")) if isinstance(body, dict) else (None, None)
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        return json_error(400, "login needs string fields 'name' and 'password'")
    ip = client_address(request)
    limiter = request.app[LIMITER_KEY]
    name = name[:64]
    conn = _conn(request)
    wait = limiter.retry_after_s(conn, name, ip, now_ms())
    if wait > 0:
        return _too_many(wait)
    op, stored = operators.login_record(conn, name)
    ok = await asyncio.get_running_loop().run_in_executor(None, operators.check_password, password, stored)
    ts = now_ms()
    # Checked again after the KDF: parallel guesses all pass the first check, and once the
    # budget is full, right and wrong passwords alike get 429 (a 401 next to a 429 would
    # tell a racing guesser which guess was right).
    if not ok or op is None:
        with transaction(conn):
            full_s = limiter.retry_after_s(conn, name, ip, ts)
            limiter.failed(conn, name, ip, ts)
            audit(conn, ts, "login", "login-failed", f"operator {name!r} from {ip}: wrong name or password")
            logs.event(
                "credential_refused",
                f"operator login refused for {name!r} from {ip}",
                level=logging.WARNING,
                credential="operator_password",
                addr=ip,
            )
            locked_s = limiter.retry_after_s(conn, name, ip, ts)
            if locked_s > 0 and full_s <= 0:  # this failure started the pause
                n = conn.execute(
                    "SELECT COUNT(*) FROM login_failures WHERE addr = ? AND ts_ms > ?",
                    (ip, ts - limiter.window_ms),
                ).fetchone()[0]
                audit(
                    conn,
                    ts,
                    "login",
                    "login-limited",
                    f"logins for {name!r} / {ip} paused for {int(locked_s) + 1} s "
                    f"({n} failures within {int(limiter.window_s)} s)",
                )
        return _too_many(locked_s) if full_s > 0 else json_error(401, "wrong operator name or password")
    with transaction(conn):
        wait = limiter.retry_after_s(conn, name, ip, ts)
        if wait <= 0:
            limiter.succeeded(conn, name, ip)
    if wait > 0:
        return _too_many(wait)
    token, session = operators.open_session(conn, op, ts)
    guessed = limiter.name_under_attack_ms(conn, name, ts) > 0
    with transaction(conn):
        # Logged in from a clean address while others guess this name: say so (issue 16 item 12).
        note = " while this name is being guessed from other addresses" if guessed else ""
        audit(conn, ts, f"operator:{op.name}", "login", f"from {ip}{note}")
    resp = _json(_me(session))
    resp.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
        max_age=operators.SESSION_TTL_MS // 1000,
    )
    return resp


def _too_many(wait_s: float) -> web.Response:
    return json_error(
        429,
        f"too many failed logins; try again in {int(wait_s) + 1} s",
        **{"Retry-After": str(int(wait_s) + 1)},
    )


def _me(session: operators.Session) -> dict[str, Any]:
    return {
        "operator": session.operator.name,
        "role": str(session.operator.role),
        "can_act": session.operator.can_act,
        "csrf_token": session.csrf,
        "expires_ms": session.expires_ms,
    }


@require()
async def logout(request: web.Request) -> web.StreamResponse:
    operators.end_session(_conn(request), current(request), now_ms())
    resp = _json({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


@require()
async def me(request: web.Request) -> web.StreamResponse:
    return _json(_me(current(request)))


# --- read views ------------------------------------------------------------------------


@require()
async def summary(request: web.Request) -> web.StreamResponse:
    return _json(await _read(request, queries.summary, now_ms()))


@require()
async def transfers(request: web.Request) -> web.StreamResponse:
    limit = _int_param(request, "limit", 50, 1, 500) or 50
    now = now_ms()

    def view(conn: sqlite3.Connection) -> dict[str, Any]:
        return {
            "link": queries.link_status(conn, now),
            "transfers": queries.link_transfers(conn, now, limit=limit),
            "bundles": queries.bundles(conn, now, limit=limit),
        }

    return _json(await _read(request, view))


@require()
async def posts(request: web.Request) -> web.StreamResponse:
    limit = _int_param(request, "limit", 100, 1, 500)
    astronaut = request.query.get("astronaut") or None
    return _json(
        {"posts": await _read(request, queries.posts, now_ms(), astronaut=astronaut, limit=limit or 100)}
    )


@require()
async def security(request: web.Request) -> web.StreamResponse:
    limit = _int_param(request, "limit", 100, 1, 500)
    return _json({"events": await _read(request, queries.security_events, limit=limit or 100)})


@require()
async def platforms(request: web.Request) -> web.StreamResponse:
    data = await _read(request, queries.platforms, now_ms())
    # Token lifetimes live in the credential files, not the database (ground/credentials.py).
    expiry = token_expiry(request.app[HOME_KEY].root, now_ms())
    for p in data:
        for a in p["accounts"]:
            a["token"] = expiry.get(a["account"])
    return _json({"platforms": data})


def token_expiry(home_root: Any, now: int) -> dict[str, str]:
    """``platform:account`` → "expires in N days" for accounts with OAuth tokens (never a secret)."""
    from ..credentials import expiry_text, store_for
    from ..errors import GroundError

    store = store_for(home_root)
    out = {}
    for cred in store.all():
        try:
            text = expiry_text(store.load_tokens(cred.target), now)
        except GroundError as exc:
            text = f"reconnect this account ({exc})"
        if text:
            out[cred.target] = text
    return out


@require()
async def astronauts(request: web.Request) -> web.StreamResponse:
    return _json({"astronauts": await _read(request, queries.astronauts)})


@require()
async def audit_log(request: web.Request) -> web.StreamResponse:
    limit = _int_param(request, "limit", 100, 1, 500)
    before = _int_param(request, "before_id", None, 1, 2**62)
    only = request.query.get("operators_only", "") in ("1", "true", "yes")
    events = await _read(
        request, queries.audit_log, before_id=before, operators_only=only, limit=limit or 100
    )
    return _json({"events": events})


@require(use=False)  # the browser reopens a dropped stream by itself: not a sign anyone is there
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: 'change' whenever anything the dashboard shows changed."""
    streams = request.app[STREAMS_KEY]
    session = current(request)
    refusal = _stream_refusal(streams, session, client_address(request))
    if refusal is not None:
        return json_error(503, refusal)
    stop = request.app[STOP_KEY]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    streams[resp] = (session.operator.name, client_address(request))
    conn = _conn(request)  # session checks: quick primary-key lookups
    idle_ms = request.app[IDLE_KEY]
    last: tuple[Any, ...] | None = None
    last_sent = time.monotonic()
    try:
        await resp.write(b"retry: 2000\n\n")
        while not stop.is_set():
            found = operators.check_session(
                conn, session.token_sha256, now_ms(), idle_ms=idle_ms, touch=False
            )
            if isinstance(found, operators.Refused):
                why = {"error": refusal_message(found, idle_ms), "reason": str(found.reason)}
                await resp.write(f"event: logout\ndata: {json.dumps(why)}\n\n".encode())
                break
            marker = await _read(request, queries.change_marker)
            if marker != last:
                last = marker
                await resp.write(f"event: change\ndata: {json.dumps({'ts_ms': now_ms()})}\n\n".encode())
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent > STREAM_HEARTBEAT_S:
                await resp.write(b": keepalive\n\n")
                last_sent = time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), timeout=STREAM_POLL_S)
            except TimeoutError:
                pass
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        streams.pop(resp, None)
    return resp


def _stream_refusal(
    streams: dict[web.StreamResponse, tuple[str, str]], session: operators.Session, addr: str
) -> str | None:
    """Why a new live stream is refused (per operator, per address, overall), or None."""
    name = session.operator.name
    if sum(1 for who, _ in streams.values() if who == name) >= MAX_STREAMS_PER_OPERATOR:
        return (
            f"operator {name} already has {MAX_STREAMS_PER_OPERATOR} live dashboards open; "
            "close one (another tab or browser) or poll the API"
        )
    if sum(1 for _, a in streams.values() if a == addr) >= MAX_STREAMS_PER_ADDRESS:
        return f"{MAX_STREAMS_PER_ADDRESS} live dashboards are already open from {addr}; close one"
    admin = session.operator.role is operators.Role.ADMIN
    cap = MAX_STREAMS if admin else MAX_STREAMS - ADMIN_RESERVED_STREAMS
    if len(streams) >= cap:
        return f"too many live dashboards open (max {cap}); close one or poll the API"
    return None


@require()
async def metrics(request: web.Request) -> web.StreamResponse:
    from ..metrics import render

    body, content_type = await _read(request, render, now_ms())
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


async def openapi(request: web.Request) -> web.StreamResponse:
    # Public on purpose: it describes the API and holds no data.
    return _json(openapi_document())


# --- actions (admin only; each one audited inside its transaction) --------------------


def _act(fn: Any, *args: Any) -> web.Response | None:
    try:
        fn(*args)
    except actions.ActionError as exc:
        return json_error(exc.status, str(exc))
    return None


@require(admin=True)
async def retry(request: web.Request) -> web.StreamResponse:
    item_id, account = request.match_info["item_id"], request.match_info["account"]
    err = _act(actions.retry_publication, _conn(request), item_id, account, now_ms(), actor(request))
    return err or _json({"ok": True, "item_id": item_id, "account": account, "state": "pending"})


@require(admin=True)
async def retry_now(request: web.Request) -> web.StreamResponse:
    item_id, account = request.match_info["item_id"], request.match_info["account"]
    try:
        state = actions.retry_publication_now(_conn(request), item_id, account, now_ms(), actor(request))
    except actions.ActionError as exc:
        return json_error(exc.status, str(exc))
    return _json({"ok": True, "item_id": item_id, "account": account, "state": state})


def _pause_handler(kind: str, paused: bool) -> Any:
    @require(admin=True)
    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info[kind]
        fn = actions.set_platform_paused if kind == "platform" else actions.set_account_paused
        err = _act(fn, _conn(request), name, paused, now_ms(), actor(request))
        return err or _json({"ok": True, kind: name, "paused": paused})

    handler.__name__ = f"{'pause' if paused else 'resume'}_{kind}"
    return handler


@require(admin=True)
async def revoke(request: web.Request) -> web.StreamResponse:
    fp = request.match_info["fingerprint"]
    try:
        name = actions.revoke_key(_conn(request), fp, now_ms(), actor(request))
    except actions.ActionError as exc:
        return json_error(exc.status, str(exc))
    return _json({"ok": True, "fingerprint": fp.lower(), "astronaut": name})


async def not_found(request: web.Request) -> web.StreamResponse:
    """Any other /api/ path or method: a JSON 404 naming it (registered after ROUTES)."""
    return json_error(404, f"no API endpoint {request.method} {request.path}; see /api/openapi.json")


ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/api/login", login),
    ("POST", "/api/logout", logout),
    ("GET", "/api/me", me),
    ("GET", "/api/summary", summary),
    ("GET", "/api/transfers", transfers),
    ("GET", "/api/posts", posts),
    ("GET", "/api/security", security),
    ("GET", "/api/platforms", platforms),
    ("GET", "/api/astronauts", astronauts),
    ("GET", "/api/audit", audit_log),
    ("GET", "/api/stream", stream),
    ("GET", "/api/openapi.json", openapi),
    ("GET", "/metrics", metrics),
    ("POST", "/api/publications/{item_id}/{account}/retry", retry),
    ("POST", "/api/publications/{item_id}/{account}/retry-now", retry_now),
    ("POST", "/api/platforms/{platform}/pause", _pause_handler("platform", True)),
    ("POST", "/api/platforms/{platform}/resume", _pause_handler("platform", False)),
    ("POST", "/api/accounts/{account}/pause", _pause_handler("account", True)),
    ("POST", "/api/accounts/{account}/resume", _pause_handler("account", False)),
    ("POST", "/api/keys/{fingerprint}/revoke", revoke),
]
