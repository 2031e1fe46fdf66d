"""Ground operators: accounts, roles, password hashes and login sessions.

Operators watch the relay and act on it (retry, pause, revoke); they never touch content.
Passwords are hashed with scrypt (``cryptography``), parameters stored beside each hash so
they can be raised later without breaking old accounts. A session or API token is 32
random bytes handed to the client once; only its sha256 is stored, so a leaked database
cannot be replayed as a login.

A browser session ends at the first of: logout, its absolute lifetime (``SESSION_TTL_MS``),
or ``SESSION_IDLE_MS`` without use (an unattended browser); API tokens have no idle limit
(a scraper calls on its own schedule). ``check_session`` says which, so the caller can
tell the operator why they must log in again.

Errors: ``OperatorError`` (a ``GroundError``) for every operator-management mistake.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .db import audit, transaction
from .errors import GroundError

SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'read-only')),
    password_hash TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    disabled_ms   INTEGER
);
CREATE TABLE IF NOT EXISTS operator_sessions (
    token_sha256 TEXT PRIMARY KEY,
    operator     TEXT NOT NULL REFERENCES operators(name),
    kind         TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    csrf         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    ended_ms     INTEGER,
    last_used_ms INTEGER,  -- NULL: not used since created_ms (added later: ground/db.py _migrate)
    end_reason   TEXT      -- why ended_ms was set: logout, idle, operator-removed (NULL: logout)
);
"""

# scrypt cost: N=2^15, r=8 → 32 MiB and ~0.1 s per check on this class of machine; high
# enough to make offline guessing expensive, low enough for a login page.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD_CHARS = 12
SESSION_TTL_MS = 12 * 3600 * 1000  # one shift
API_TOKEN_TTL_MS = 90 * 86400 * 1000  # a scraper's token, rotated quarterly
# A browser left logged in on a console nobody watches ends after this long without use.
SESSION_IDLE_MS = 30 * 60 * 1000
# Last use is written at most once a minute per session: a durable write (WAL + fsync) on
# every request would cost more than the lookup it guards, and a minute is nothing against
# a 30-minute limit. The stored value lags by under a minute, so a session may end up to a
# minute early, never late.
LAST_USE_GRANULARITY_MS = 60 * 1000

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class OperatorError(GroundError):
    """Bad operator name, role or password; unknown or disabled operator."""


class SessionEnd(StrEnum):
    """Why a presented token does not (or no longer) open a session."""

    UNKNOWN = "unknown"  # never issued here (forged, or from another ground)
    LOGGED_OUT = "logged-out"
    IDLE = "idle"
    EXPIRED = "expired"
    OPERATOR_REMOVED = "operator-removed"


class Role(StrEnum):
    ADMIN = "admin"
    READ_ONLY = "read-only"


@dataclass(frozen=True, slots=True, kw_only=True)
class Operator:
    name: str
    role: Role
    created_ms: int
    disabled_ms: int | None = None

    @property
    def can_act(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    operator: Operator
    kind: str  # 'session' (browser cookie) or 'api' (bearer token)
    csrf: str
    expires_ms: int
    token_sha256: str
    last_used_ms: int | None = None  # as stored (may lag by LAST_USE_GRANULARITY_MS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """A token that opens no session, and why (``SessionEnd``)."""

    reason: SessionEnd
    ended_ms: int | None = None  # when it ended, if it was ever live


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the operator tables if this database predates them (idempotent, cheap when done)."""
    # executescript would COMMIT an open transaction, so only run it when something is missing.
    if (
        conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('operators', 'operator_sessions')"
        ).fetchone()[0]
        < 2
    ):
        conn.executescript(SCHEMA)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) for ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(password.encode())
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored`` (constant-time compare inside the KDF)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        kdf = Scrypt(salt=base64.b64decode(salt), length=32, n=int(n), r=int(r), p=int(p))
        kdf.verify(password.encode(), base64.b64decode(digest))
    except (ValueError, InvalidKey):
        return False
    return True


# Checked against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password("not a real password", salt=b"\x00" * 16)


def generate_password() -> str:
    """A random password an operator can type: 16 url-safe characters (~96 bits)."""
    return secrets.token_urlsafe(12)


def _row_to_operator(row: tuple[str, str, int, int | None]) -> Operator:
    return Operator(name=row[0], role=Role(row[1]), created_ms=row[2], disabled_ms=row[3])


def add_operator(
    conn: sqlite3.Connection, name: str, password: str, role: Role, now_ms: int, actor: str = "cli"
) -> Operator:
    """Create operator ``name``; refuses a taken name or a short password."""
    ensure_schema(conn)
    if not _NAME.match(name):
        raise OperatorError(
            f"operator name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'"
        )
    if len(password) < MIN_PASSWORD_CHARS:
        raise OperatorError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    hashed = hash_password(password)
    with transaction(conn):
        if conn.execute("SELECT 1 FROM operators WHERE name = ?", (name,)).fetchone():
            raise OperatorError(f"operator {name!r} already exists (ground operator remove {name} first)")
        conn.execute(
            "INSERT INTO operators (name, role, password_hash, created_ms) VALUES (?, ?, ?, ?)",
            (name, str(role), hashed, now_ms),
        )
        audit(conn, now_ms, actor, "operator-add", f"{name} role {role}")
    return Operator(name=name, role=role, created_ms=now_ms)


def remove_operator(conn: sqlite3.Connection, name: str, now_ms: int, actor: str = "cli") -> None:
    """Disable ``name`` and end every session and token it holds (the row stays for the audit trail)."""
    ensure_schema(conn)
    with transaction(conn):
        row = conn.execute("SELECT disabled_ms FROM operators WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise OperatorError(f"no operator named {name!r}")
        conn.execute(
            "UPDATE operators SET disabled_ms = ? WHERE name = ? AND disabled_ms IS NULL", (now_ms, name)
        )
        conn.execute(
            "UPDATE operator_sessions SET ended_ms = ?, end_reason = ? WHERE operator = ? AND ended_ms IS NULL",
            (now_ms, str(SessionEnd.OPERATOR_REMOVED), name),
        )
        audit(conn, now_ms, actor, "operator-remove", name)


def list_operators(conn: sqlite3.Connection) -> list[Operator]:
    ensure_schema(conn)
    return [
        _row_to_operator(r)
        for r in conn.execute("SELECT name, role, created_ms, disabled_ms FROM operators ORDER BY name")
    ]


def get_operator(conn: sqlite3.Connection, name: str) -> Operator | None:
    ensure_schema(conn)
    row = conn.execute(
        "SELECT name, role, created_ms, disabled_ms FROM operators WHERE name = ?", (name,)
    ).fetchone()
    return _row_to_operator(row) if row else None


def login_record(conn: sqlite3.Connection, name: str) -> tuple[Operator | None, str]:
    """The active operator ``name`` and its hash, or (None, a dummy hash) so a check costs the same.

    Split from the check so the slow KDF can run off the event loop while the database
    is only touched from it.
    """
    ensure_schema(conn)
    row = conn.execute(
        "SELECT name, role, created_ms, disabled_ms, password_hash FROM operators WHERE name = ?", (name,)
    ).fetchone()
    if row is None or row[3] is not None:
        return None, _DUMMY_HASH
    return _row_to_operator(row[:4]), row[4]


def authenticate(conn: sqlite3.Connection, name: str, password: str) -> Operator | None:
    """The active operator ``name`` if ``password`` is right, else None (same cost either way)."""
    op, stored = login_record(conn, name)
    ok = check_password(password, stored)
    return op if ok and op is not None else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(
    conn: sqlite3.Connection,
    operator: Operator,
    now_ms: int,
    *,
    kind: str = "session",
    ttl_ms: int | None = None,
) -> tuple[str, Session]:
    """Start a session (or API token) for ``operator``; returns the secret token, shown once."""
    ensure_schema(conn)
    ttl = ttl_ms if ttl_ms is not None else (SESSION_TTL_MS if kind == "session" else API_TOKEN_TTL_MS)
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    th = _token_hash(token)
    with transaction(conn):
        conn.execute(
            "INSERT INTO operator_sessions (token_sha256, operator, kind, csrf, created_ms, expires_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (th, operator.name, kind, csrf, now_ms, now_ms + ttl),
        )
        if kind == "api":
            audit(
                conn,
                now_ms,
                "cli",
                "token-issue",
                f"API token for {operator.name}, expires in {ttl // 86400000} d",
            )
    return token, Session(operator=operator, kind=kind, csrf=csrf, expires_ms=now_ms + ttl, token_sha256=th)


def session_for(
    conn: sqlite3.Connection, token: str, now_ms: int, *, idle_ms: int = SESSION_IDLE_MS
) -> Session | None:
    """The live session behind ``token``, or None if unknown, ended, expired, idle or its operator disabled."""
    return session_for_hash(conn, _token_hash(token), now_ms, idle_ms=idle_ms)


def session_for_hash(
    conn: sqlite3.Connection, token_sha256: str, now_ms: int, *, idle_ms: int = SESSION_IDLE_MS
) -> Session | None:
    """As ``session_for``, by the stored hash (to re-check a session a long request holds)."""
    found = check_session(conn, token_sha256, now_ms, idle_ms=idle_ms, touch=False)
    return found if isinstance(found, Session) else None


def token_hash(token: str) -> str:
    """What is stored for ``token`` (its sha256, hex): pass it to ``check_session``."""
    return _token_hash(token)


def check_session(
    conn: sqlite3.Connection,
    token_sha256: str,
    now_ms: int,
    *,
    idle_ms: int = SESSION_IDLE_MS,
    touch: bool = True,
) -> Session | Refused:
    """The live session behind ``token_sha256``, or why there is none.

    A browser session found idle for ``idle_ms`` (0: no idle limit) is ended here and the
    end audited, so it stays refused with the same reason. With ``touch`` this counts as a
    use: the stored last use moves to ``now_ms`` if it is a minute or more behind.
    """
    ensure_schema(conn)
    row = conn.execute(
        "SELECT o.name, o.role, o.created_ms, o.disabled_ms, s.kind, s.csrf, s.expires_ms, "
        "s.created_ms, s.ended_ms, s.end_reason, s.last_used_ms "
        "FROM operator_sessions s JOIN operators o ON o.name = s.operator WHERE s.token_sha256 = ?",
        (token_sha256,),
    ).fetchone()
    if row is None:
        return Refused(reason=SessionEnd.UNKNOWN)
    op = _row_to_operator(row[:4])
    kind, csrf, expires_ms, created_ms, ended_ms, end_reason, last_used_ms = row[4:]
    if ended_ms is not None:
        known = {str(r) for r in SessionEnd}
        reason = SessionEnd(end_reason) if end_reason in known else SessionEnd.LOGGED_OUT
        return Refused(reason=reason, ended_ms=ended_ms)
    if op.disabled_ms is not None:
        return Refused(reason=SessionEnd.OPERATOR_REMOVED, ended_ms=op.disabled_ms)
    if expires_ms <= now_ms:
        return Refused(reason=SessionEnd.EXPIRED, ended_ms=expires_ms)
    last_use = last_used_ms if last_used_ms is not None else created_ms
    if kind == "session" and idle_ms > 0 and last_use + idle_ms <= now_ms:
        _end_idle(conn, token_sha256, op.name, last_use, idle_ms, now_ms)
        return Refused(reason=SessionEnd.IDLE, ended_ms=last_use + idle_ms)
    if touch and kind == "session" and now_ms - last_use >= LAST_USE_GRANULARITY_MS:
        # Autocommit, one row by primary key: no transaction needed, and no audit line (a use
        # is not an event; the login that started the session is).
        conn.execute(
            "UPDATE operator_sessions SET last_used_ms = ? WHERE token_sha256 = ? AND ended_ms IS NULL",
            (now_ms, token_sha256),
        )
        last_use = now_ms
    return Session(
        operator=op,
        kind=kind,
        csrf=csrf,
        expires_ms=expires_ms,
        token_sha256=token_sha256,
        last_used_ms=last_use,
    )


def _end_idle(
    conn: sqlite3.Connection, token_sha256: str, name: str, last_use_ms: int, idle_ms: int, now_ms: int
) -> bool:
    """End one idle browser session (ended_ms: when it went idle) and audit it; False if already ended."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE operator_sessions SET ended_ms = ?, end_reason = ? "
            "WHERE token_sha256 = ? AND ended_ms IS NULL",
            (last_use_ms + idle_ms, str(SessionEnd.IDLE), token_sha256),
        )
        if cur.rowcount:
            audit(
                conn,
                now_ms,
                f"operator:{name}",
                "session-idle",
                f"browser session ended after {idle_ms // 60000} min without use",
            )
    return bool(cur.rowcount)


def end_idle_sessions(conn: sqlite3.Connection, now_ms: int, *, idle_ms: int = SESSION_IDLE_MS) -> int:
    """End (and audit) every live browser session unused for ``idle_ms``; returns how many.

    ``check_session`` ends an idle session when its token comes back; this sweep ends the
    ones that never do, so the audit log shows when each one ended either way.
    """
    ensure_schema(conn)
    if idle_ms <= 0:
        return 0
    rows = conn.execute(
        "SELECT s.token_sha256, s.operator, COALESCE(s.last_used_ms, s.created_ms) AS last_use "
        "FROM operator_sessions s WHERE s.kind = 'session' AND s.ended_ms IS NULL AND s.expires_ms > ? "
        "AND COALESCE(s.last_used_ms, s.created_ms) <= ?",
        (now_ms, now_ms - idle_ms),
    ).fetchall()
    return sum(_end_idle(conn, th, name, last_use, idle_ms, now_ms) for th, name, last_use in rows)


def end_session(conn: sqlite3.Connection, session: Session, now_ms: int) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE operator_sessions SET ended_ms = ?, end_reason = ? WHERE token_sha256 = ? AND ended_ms IS NULL",
            (now_ms, str(SessionEnd.LOGGED_OUT), session.token_sha256),
        )
        audit(conn, now_ms, f"operator:{session.operator.name}", "logout", f"{session.kind} ended")
