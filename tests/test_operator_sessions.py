"""Operators' browser sessions end when idle; failed logins are limited in SQLite, across restarts.

Time is injected: ``now_ms`` passed to ground/operators.py and ground/login_limits.py, a
fake clock patched into the dashboard for the API tests, and rows back-dated in the real
server's database for the end-to-end tests. Nothing here sleeps for a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from dashboard_support import ADMIN, READER, make_home

import ground.dashboard
import ground.dashboard.api
import ground.dashboard.auth
from ground import db, operators
from ground.dashboard import setup
from ground.dashboard.openapi import openapi_document
from ground.demo import stop_server
from ground.home import GroundHome
from ground.login_limits import LoginLimiter
from ground.operators import Refused, Session, SessionEnd
from protocol import SigningKey

T0 = 1_790_000_000_000
MIN = 60_000


@pytest.fixture
def home(tmp_path: Path, alice_key: SigningKey) -> Iterator[GroundHome]:
    h = make_home(tmp_path / "G", alice_key)
    yield h
    h.close()


def open_for(home: GroundHome, name: str, now: int, kind: str = "session") -> str:
    """A new session (or API token) for ``name`` at ``now``; returns the stored token hash."""
    op = operators.get_operator(home.conn, name)
    assert op is not None
    token, session = operators.open_session(home.conn, op, now, kind=kind)
    assert session.token_sha256 == operators.token_hash(token)
    return session.token_sha256


def audit_kinds(conn: sqlite3.Connection, kind: str) -> list[tuple[str, str]]:
    return conn.execute("SELECT actor, detail FROM events WHERE kind = ? ORDER BY id", (kind,)).fetchall()


def last_used(conn: sqlite3.Connection, th: str) -> int | None:
    row = conn.execute("SELECT last_used_ms FROM operator_sessions WHERE token_sha256 = ?", (th,)).fetchone()
    return row[0]  # type: ignore[no-any-return]


# --- idle timeout: ground/operators.py, time passed in -----------------------------------------


def test_a_session_in_use_lives_on_and_an_idle_one_ends_and_stays_ended(home: GroundHome) -> None:
    th = open_for(home, ADMIN[0], T0)
    assert isinstance(operators.check_session(home.conn, th, T0 + 29 * MIN), Session)
    assert isinstance(
        operators.check_session(home.conn, th, T0 + 58 * MIN), Session
    )  # 29 min after the last use
    found = operators.check_session(home.conn, th, T0 + 88 * MIN)
    assert found == Refused(reason=SessionEnd.IDLE, ended_ms=T0 + 88 * MIN)
    # Ended for good: the same reason later, and never live again.
    assert operators.check_session(home.conn, th, T0 + 200 * MIN) == Refused(
        reason=SessionEnd.IDLE, ended_ms=T0 + 88 * MIN
    )
    assert operators.session_for_hash(home.conn, th, T0 + 89 * MIN) is None
    ((actor, detail),) = audit_kinds(home.conn, "session-idle")
    assert actor == "operator:ada" and "30 min without use" in detail


def test_idle_is_measured_from_login_when_never_used(home: GroundHome) -> None:
    th = open_for(home, READER[0], T0)
    assert isinstance(operators.check_session(home.conn, th, T0 + 30 * MIN - 1, touch=False), Session)
    assert operators.check_session(home.conn, th, T0 + 30 * MIN).reason is SessionEnd.IDLE  # type: ignore[union-attr]


def test_last_use_is_written_at_most_once_a_minute(home: GroundHome) -> None:
    th = open_for(home, ADMIN[0], T0)
    writes = home.conn.total_changes
    for t in (T0 + 1_000, T0 + 30_000, T0 + 59_999):
        assert isinstance(operators.check_session(home.conn, th, t), Session)
    assert home.conn.total_changes == writes and last_used(home.conn, th) is None
    operators.check_session(home.conn, th, T0 + 60_000)
    assert last_used(home.conn, th) == T0 + 60_000 and home.conn.total_changes == writes + 1
    operators.check_session(home.conn, th, T0 + 100_000)  # 40 s later: not written
    assert last_used(home.conn, th) == T0 + 60_000
    # The price of the coarse write: the session may end up to a minute early, never late.
    assert operators.check_session(home.conn, th, T0 + 60_000 + 30 * MIN).reason is SessionEnd.IDLE  # type: ignore[union-attr]


def test_a_check_without_touch_is_not_a_use(home: GroundHome) -> None:
    th = open_for(home, ADMIN[0], T0)
    for t in range(T0, T0 + 30 * MIN, 5 * MIN):
        assert isinstance(operators.check_session(home.conn, th, t, touch=False), Session)
    assert last_used(home.conn, th) is None
    assert operators.check_session(home.conn, th, T0 + 30 * MIN, touch=False).reason is SessionEnd.IDLE  # type: ignore[union-attr]


def test_api_tokens_never_idle_and_idle_zero_turns_the_limit_off(home: GroundHome) -> None:
    api = open_for(home, READER[0], T0, kind="api")
    assert isinstance(operators.check_session(home.conn, api, T0 + 10 * 86400_000), Session)
    assert last_used(home.conn, api) is None  # nothing written for a token's uses
    th = open_for(home, ADMIN[0], T0)
    assert isinstance(operators.check_session(home.conn, th, T0 + 11 * 3600_000, idle_ms=0), Session)


def test_every_other_way_a_session_ends_has_its_own_reason(home: GroundHome) -> None:
    assert operators.check_session(home.conn, "00" * 32, T0) == Refused(reason=SessionEnd.UNKNOWN)
    expired = open_for(home, ADMIN[0], T0)
    end = T0 + operators.SESSION_TTL_MS
    for t in range(T0, end, 20 * MIN):  # kept busy all shift
        assert isinstance(operators.check_session(home.conn, expired, t), Session)
    assert operators.check_session(home.conn, expired, end) == Refused(
        reason=SessionEnd.EXPIRED, ended_ms=end
    )
    assert audit_kinds(home.conn, "session-idle") == []  # expiry is not an idle end
    out = open_for(home, ADMIN[0], T0)
    s = operators.check_session(home.conn, out, T0 + MIN)
    assert isinstance(s, Session)
    operators.end_session(home.conn, s, T0 + 2 * MIN)
    assert operators.check_session(home.conn, out, T0 + 3 * MIN) == Refused(
        reason=SessionEnd.LOGGED_OUT, ended_ms=T0 + 2 * MIN
    )
    removed = open_for(home, READER[0], T0)
    operators.remove_operator(home.conn, READER[0], T0 + 5 * MIN)
    assert operators.check_session(home.conn, removed, T0 + 6 * MIN).reason is SessionEnd.OPERATOR_REMOVED  # type: ignore[union-attr]


def test_the_sweep_ends_and_audits_only_idle_browser_sessions(home: GroundHome) -> None:
    idle = open_for(home, ADMIN[0], T0)
    busy = open_for(home, ADMIN[0], T0)
    operators.check_session(home.conn, busy, T0 + 20 * MIN)
    api = open_for(home, READER[0], T0, kind="api")
    assert operators.end_idle_sessions(home.conn, T0 + 35 * MIN) == 1
    assert operators.end_idle_sessions(home.conn, T0 + 35 * MIN) == 0
    assert operators.check_session(home.conn, idle, T0 + 36 * MIN) == Refused(
        reason=SessionEnd.IDLE, ended_ms=T0 + 30 * MIN
    )
    assert isinstance(operators.check_session(home.conn, busy, T0 + 36 * MIN), Session)
    assert isinstance(operators.check_session(home.conn, api, T0 + 36 * MIN), Session)
    assert len(audit_kinds(home.conn, "session-idle")) == 1
    assert operators.end_idle_sessions(home.conn, T0 + 99 * MIN, idle_ms=0) == 0


# The operator tables as the release before the idle timeout made them.
OLD_OPERATOR_SCHEMA = """
CREATE TABLE operators (
    name TEXT PRIMARY KEY, role TEXT NOT NULL CHECK (role IN ('admin', 'read-only')),
    password_hash TEXT NOT NULL, created_ms INTEGER NOT NULL, disabled_ms INTEGER
);
CREATE TABLE operator_sessions (
    token_sha256 TEXT PRIMARY KEY, operator TEXT NOT NULL REFERENCES operators(name),
    kind TEXT NOT NULL CHECK (kind IN ('session', 'api')), csrf TEXT NOT NULL,
    created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, ended_ms INTEGER
);
"""


def test_a_database_from_the_previous_release_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "ground.db"
    old = sqlite3.connect(path)
    old.executescript(OLD_OPERATOR_SCHEMA)
    live, ended = "aa" * 32, "bb" * 32
    with old:
        old.execute("INSERT INTO operators VALUES ('ada', 'admin', 'scrypt$1$1$1$AA==$AA==', ?, NULL)", (T0,))
        old.execute(
            "INSERT INTO operator_sessions VALUES (?, 'ada', 'session', 'c', ?, ?, NULL)",
            (live, T0, T0 + 12 * 3600_000),
        )
        old.execute(
            "INSERT INTO operator_sessions VALUES (?, 'ada', 'session', 'c', ?, ?, ?)",
            (ended, T0, T0 + 12 * 3600_000, T0 + MIN),
        )
    old.close()
    conn = db.connect(path)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(operator_sessions)")}
    assert {"last_used_ms", "end_reason"} <= columns
    assert conn.execute("SELECT COUNT(*) FROM login_failures").fetchone() == (0,)
    assert isinstance(operators.check_session(conn, live, T0 + 29 * MIN), Session)  # idle counted from login
    assert operators.check_session(conn, ended, T0 + 2 * MIN) == Refused(
        reason=SessionEnd.LOGGED_OUT, ended_ms=T0 + MIN
    )
    conn.close()
    db.connect(path).close()  # migrating twice is a no-op


# --- the persistent login limiter: ground/login_limits.py, time passed in -------------------------


def fail(lim: LoginLimiter, conn: sqlite3.Connection, name: str, addr: str, now: int) -> None:
    with db.transaction(conn):
        lim.failed(conn, name, addr, now)


def test_an_address_gets_three_free_failures_then_growing_delays_then_a_pause(home: GroundHome) -> None:
    lim, conn = LoginLimiter(), home.conn
    for i in range(9):
        fail(lim, conn, "ada", "198.51.100.7", T0 + i * MIN)
        n = i + 1
        delay_s = 0 if n < 3 else 2 ** (n - 3)  # 0, 0, 1, 2, 4 ... 64 s after the latest failure
        assert lim.retry_after_s(conn, "ada", "198.51.100.7", T0 + i * MIN) == delay_s
        assert lim.retry_after_s(conn, "ada", "198.51.100.7", T0 + i * MIN + delay_s * 1000) == 0
    fail(lim, conn, "ada", "198.51.100.7", T0 + 9 * MIN)
    assert (
        lim.retry_after_s(conn, "ada", "198.51.100.7", T0 + 9 * MIN) == 6 * 60
    )  # ten: until the first is 15 min old
    assert lim.retry_after_s(conn, "ada", "198.51.100.7", T0 + 15 * MIN - 1) == 0.001
    assert lim.retry_after_s(conn, "ada", "198.51.100.7", T0 + 15 * MIN) == 0
    # The same address is paused for every name; another address is not.
    assert lim.retry_after_s(conn, "rita", "198.51.100.7", T0 + 9 * MIN) == 6 * 60
    assert lim.retry_after_s(conn, "ada", "198.51.100.8", T0 + 9 * MIN) == 0


def test_a_name_guessed_from_many_addresses_still_lets_its_owner_in(home: GroundHome) -> None:
    lim, conn = LoginLimiter(), home.conn
    for i in range(10):  # one name guessed from ten addresses
        fail(lim, conn, "ada", f"203.0.113.{i}", T0)
    assert lim.name_under_attack_ms(conn, "ada", T0 + 1) > 0
    assert lim.retry_after_s(conn, "ada", "192.0.2.1", T0 + 1) == 0  # ada at her desk: not locked out
    assert lim.retry_after_s(conn, "ada", "203.0.113.0", T0 + 1) > 14 * 60  # a guesser: no second try
    assert lim.retry_after_s(conn, "rita", "203.0.113.0", T0 + 1) == 0  # one failure is no block elsewhere
    for i in range(10):  # ten names sprayed from one address
        fail(lim, conn, f"user{i}", "192.0.2.50", T0)
    assert lim.retry_after_s(conn, "rita", "192.0.2.50", T0 + 1) > 0
    assert lim.retry_after_s(conn, "rita", "192.0.2.51", T0 + 1) == 0


def test_a_success_forgets_only_its_own_address_failures(home: GroundHome) -> None:
    lim, conn = LoginLimiter(), home.conn
    for _ in range(5):
        fail(lim, conn, "ada", "203.0.113.66", T0)  # an attacker
        fail(lim, conn, "ada", "192.0.2.10", T0)  # ada's own typos
    with db.transaction(conn):
        lim.succeeded(conn, "ada", "192.0.2.10")
    assert lim.retry_after_s(conn, "ada", "192.0.2.10", T0 + 1) == 0
    for _ in range(5):  # the attacker's five still count against the name...
        fail(lim, conn, "ada", "203.0.113.67", T0 + 1)
    assert lim.name_under_attack_ms(conn, "ada", T0 + 2) > 0
    assert lim.retry_after_s(conn, "ada", "203.0.113.66", T0 + 2) > 14 * 60
    # ...but not against ada's own address, whose failures her success forgave.
    assert lim.retry_after_s(conn, "ada", "192.0.2.10", T0 + 2) == 0


def test_the_table_stays_small(home: GroundHome) -> None:
    lim, conn = LoginLimiter(max_rows=50), home.conn
    fail(lim, conn, "old", "192.0.2.1", T0)
    fail(lim, conn, "new", "192.0.2.2", T0 + 15 * MIN)  # the first is out of the window: pruned
    assert conn.execute("SELECT name FROM login_failures").fetchall() == [("new",)]
    for i in range(200):  # a spray of names: capped at max_rows, newest kept
        fail(lim, conn, f"n{i}", f"2001:db8::{i:x}", T0 + 16 * MIN)
    assert conn.execute("SELECT COUNT(*) FROM login_failures").fetchone() == (50,)
    assert conn.execute("SELECT 1 FROM login_failures WHERE name = 'n199'").fetchone()


# --- the API, with a fake clock ------------------------------------------------------------------


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock(int(time.time() * 1000))
    for module in (ground.dashboard, ground.dashboard.api, ground.dashboard.auth):
        monkeypatch.setattr(module, "now_ms", c)
    return c


@pytest.fixture
async def client(home: GroundHome, clock: Clock) -> AsyncIterator[TestClient]:
    app = web.Application()
    setup(app, home, limiter=LoginLimiter(max_failures=3, window_s=60))
    async with TestClient(TestServer(app)) as c:
        yield c


async def login(c: TestClient, who: tuple[str, str]) -> dict[str, Any]:
    r = await c.post("/api/login", json={"name": who[0], "password": who[1]})
    assert r.status == 200, await r.text()
    return await r.json()  # type: ignore[no-any-return]


async def test_an_idle_session_gets_401_naming_the_reason_like_an_expired_one(
    client: TestClient, clock: Clock, home: GroundHome
) -> None:
    me = await login(client, ADMIN)
    clock.ms += 29 * MIN
    assert (await client.get("/api/me")).status == 200
    clock.ms += 30 * MIN
    for method, path, headers in [
        ("GET", "/api/me", {}),
        ("GET", "/api/summary", {}),
        ("POST", "/api/platforms/archive/pause", {"X-CSRF-Token": me["csrf_token"]}),
    ]:
        r = await client.request(method, path, headers=headers)
        assert r.status == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        body = await r.json()
        assert body == {"error": "session ended after 30 min without use; log in again", "reason": "idle"}
        schema = {"$ref": "#/components/schemas/AuthError", "components": openapi_document()["components"]}
        jsonschema.Draft202012Validator(schema).validate(body)
    assert home.conn.execute("SELECT COUNT(*) FROM platform_pauses").fetchone() == (0,)
    assert len(audit_kinds(home.conn, "session-idle")) == 1
    # An expired session: the same status and shape, its own reason.
    await login(client, READER)
    for _ in range(operators.SESSION_TTL_MS // (20 * MIN)):
        clock.ms += 20 * MIN
        r = await client.get("/api/me")
    assert r.status == 401 and await r.json() == {
        "error": "session expired; log in again",
        "reason": "expired",
    }
    # A new login works at once.
    assert (await login(client, ADMIN))["operator"] == "ada"


async def test_the_pages_own_polling_does_not_keep_a_session_alive(client: TestClient, clock: Clock) -> None:
    await login(client, READER)
    background = {"X-Orbitpost-Background": "1"}
    for _ in range(5):
        clock.ms += 5 * MIN
        assert (await client.get("/api/summary", headers=background)).status == 200
    clock.ms += 5 * MIN  # 30 min since the operator last did anything
    r = await client.get("/api/summary", headers=background)
    assert r.status == 401 and (await r.json())["reason"] == "idle"
    # Without the header every request is a use: an hour of them keeps the session.
    await login(client, READER)
    for _ in range(12):
        clock.ms += 5 * MIN
        assert (await client.get("/api/summary")).status == 200


async def test_the_stream_is_not_a_use_and_says_why_the_session_ended(
    client: TestClient, clock: Clock
) -> None:
    await login(client, ADMIN)
    clock.ms += 20 * MIN
    r = await client.get("/api/stream")
    assert r.status == 200
    clock.ms += 10 * MIN  # 30 min since login: opening the stream did not count
    text = await asyncio.wait_for(r.content.read(), timeout=10)  # the server ends the stream
    assert b"event: logout" in text
    assert b'"reason": "idle"' in text and b"without use" in text


async def test_api_tokens_do_not_idle_over_http(client: TestClient, clock: Clock, home: GroundHome) -> None:
    op = operators.get_operator(home.conn, READER[0])
    assert op is not None
    token, _ = operators.open_session(home.conn, op, clock.ms, kind="api")
    clock.ms += 24 * 3600_000
    assert (await client.get("/api/summary", headers={"Authorization": f"Bearer {token}"})).status == 200


async def test_once_the_budget_is_full_a_right_password_gets_429_too(
    client: TestClient, home: GroundHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guesses racing in parallel all pass the first check; the budget fills while this one's
    # password is being hashed. Its right password must not tell the guesser it was right.
    real_check = operators.check_password

    def check_while_others_fail(password: str, stored: str) -> bool:
        other = sqlite3.connect(home.db_path, timeout=30)
        with other:
            for _ in range(3):
                # The guesser's own parallel guesses (the same address as this request).
                LoginLimiter(max_failures=3, window_s=60).failed(
                    other, ADMIN[0], "127.0.0.1", int(time.time() * 1000)
                )
        other.close()
        return real_check(password, stored)

    monkeypatch.setattr(operators, "check_password", check_while_others_fail)
    r = await client.post("/api/login", json={"name": ADMIN[0], "password": ADMIN[1]})
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    assert home.conn.execute("SELECT COUNT(*) FROM operator_sessions").fetchone() == (0,)


async def test_failed_logins_are_recorded_in_the_database(client: TestClient, home: GroundHome) -> None:
    for _ in range(3):
        r = await client.post("/api/login", json={"name": ADMIN[0], "password": "wrong guess 1234"})
        assert r.status == 401
    rows = home.conn.execute("SELECT name, addr FROM login_failures").fetchall()
    assert rows == [("ada", "127.0.0.1")] * 3
    ((_, detail),) = audit_kinds(home.conn, "login-limited")
    assert "3 failures within 60 s" in detail
    r = await client.post("/api/login", json={"name": ADMIN[0], "password": ADMIN[1]})
    assert r.status == 429 and "too many failed logins" in (await r.json())["error"]


# --- end to end: the real `ground serve` on loopback ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(ground_home: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ground", "--home", str(ground_home), "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("ground serve did not start within 20 s")


def back_date(db_path: Path, token: str, by_ms: int) -> None:
    """Make a live session look unused for ``by_ms`` (the server's clock is real; its data is not)."""
    conn = sqlite3.connect(db_path, timeout=30)
    with conn:
        n = conn.execute(
            "UPDATE operator_sessions SET created_ms = created_ms - ?, "
            "last_used_ms = COALESCE(last_used_ms, created_ms) - ? WHERE token_sha256 = ?",
            (by_ms, by_ms, hashlib.sha256(token.encode()).hexdigest()),
        ).rowcount
    conn.close()
    assert n == 1


async def login_over_http(url: str, who: tuple[str, str]) -> tuple[aiohttp.ClientSession, str]:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await http.post(url + "/api/login", json={"name": who[0], "password": who[1]})
    assert r.status == 200, await r.text()
    return http, r.cookies["orbitpost_session"].value


async def test_real_server_ends_idle_sessions_and_keeps_the_limiter_across_a_restart(
    tmp_path: Path, alice_key: SigningKey, subprocess_env: dict[str, str]
) -> None:
    g = tmp_path / "G"
    make_home(g, alice_key).close()
    env = {**subprocess_env, "ORBITPOST_SESSION_IDLE_MIN": "5"}  # the env var; the option below
    proc, url = start_serve(g, env)
    try:
        idle_http, idle_token = await login_over_http(url, ADMIN)
        busy_http, busy_token = await login_over_http(url, READER)
        async with idle_http, busy_http:
            back_date(g / "ground.db", idle_token, 6 * MIN)
            back_date(g / "ground.db", busy_token, 4 * MIN)
            r = await idle_http.get(url + "/api/me")
            assert r.status == 401
            assert await r.json() == {
                "error": "session ended after 5 min without use; log in again",
                "reason": "idle",
            }
            assert (await busy_http.get(url + "/api/me")).status == 200

            # Three wrong passwords for ada are free (plain 401s); the next try at once waits.
            async with aiohttp.ClientSession() as anon:
                for _ in range(3):
                    r = await anon.post(
                        url + "/api/login", json={"name": "ada", "password": "not the password"}
                    )
                    assert r.status == 401
                r = await anon.post(url + "/api/login", json={"name": "ada", "password": "not the password"})
                assert r.status == 429 and int(r.headers["Retry-After"]) <= 2
                # Seven more (as if the guesser had waited out each growing delay): ten in all,
                # and this address is refused even the right password until the window passes.
                conn = sqlite3.connect(g / "ground.db")
                with conn:
                    for _ in range(7):
                        LoginLimiter().failed(conn, "ada", "127.0.0.1", int(time.time() * 1000))
                conn.close()
                r = await anon.post(url + "/api/login", json={"name": "ada", "password": ADMIN[1]})
                assert r.status == 429 and int(r.headers["Retry-After"]) > 14 * 60
    finally:
        stop_server(proc)

    proc, url = start_serve(g, subprocess_env, "--session-idle-min", "5")
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as anon:
            r = await anon.post(url + "/api/login", json={"name": "ada", "password": ADMIN[1]})
            assert r.status == 429, "a restart must not reset the login limiter"
            assert 14 * 60 < int(r.headers["Retry-After"]) <= 15 * 60
            assert "too many failed logins" in (await r.json())["error"]
            # The idle session stays ended across the restart, with its reason.
            r = await anon.get(url + "/api/me", cookies={"orbitpost_session": idle_token})
            assert r.status == 401 and (await r.json())["reason"] == "idle"
            # rita's name is clean, but her address is the one that sent the ten failures.
            r = await anon.post(url + "/api/login", json={"name": "rita", "password": READER[1]})
            assert r.status == 429
    finally:
        stop_server(proc)
    conn = sqlite3.connect(g / "ground.db")
    kinds = [
        k
        for (k,) in conn.execute("SELECT kind FROM events WHERE kind LIKE 'login%' OR kind = 'session-idle'")
    ]
    conn.close()
    assert kinds.count("login-failed") == 3 and kinds.count("login-limited") == 1
    assert kinds.count("session-idle") == 1


def test_refusal_messages_say_what_to_do() -> None:
    from ground.dashboard.auth import refusal_message

    idle = Refused(reason=SessionEnd.IDLE)
    assert refusal_message(idle, 30 * MIN) == "session ended after 30 min without use; log in again"
    assert refusal_message(idle, 0) == "session ended without use; log in again"  # limit since turned off
    assert "ask an admin" in refusal_message(Refused(reason=SessionEnd.OPERATOR_REMOVED), 30 * MIN)
    assert refusal_message(Refused(reason=SessionEnd.UNKNOWN), 30 * MIN).startswith("not logged in")
