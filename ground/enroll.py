"""Astronauts, their public keys and the accounts each may publish to."""

from __future__ import annotations

import re
import sqlite3

from protocol import KnownKey, LocalProtocolError, fingerprint, key_id, parse_public_key
from protocol.model import parse_target

from .db import audit, transaction
from .errors import EnrollError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def enroll(
    conn: sqlite3.Connection, name: str, key_line: str, accounts: list[str], now_ms: int, actor: str = "cli"
) -> str:
    """Trust ``key_line`` as ``name``'s key and allow ``accounts``; returns the fingerprint.

    Re-enrolling the same key is harmless (accounts are added); a key already held by
    another astronaut is refused.
    """
    if not _NAME.match(name):
        raise EnrollError(f"astronaut name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'")
    try:
        public = parse_public_key(key_line)
        for a in accounts:
            parse_target(a)
    except LocalProtocolError as exc:
        raise EnrollError(str(exc)) from exc
    kid = key_id(public)
    with transaction(conn):
        row = conn.execute("SELECT astronaut, revoked_ms FROM keys WHERE key_id = ?", (kid,)).fetchone()
        if row and row[0] != name:
            raise EnrollError(f"key {kid.hex()} is already enrolled for astronaut {row[0]!r}")
        if row and row[1] is not None:
            raise EnrollError(f"key {kid.hex()} was revoked; a revoked key cannot be enrolled again")
        conn.execute("INSERT OR IGNORE INTO astronauts (name, created_ms) VALUES (?, ?)", (name, now_ms))
        if not row:
            conn.execute(
                "INSERT INTO keys (key_id, astronaut, public_key, enrolled_ms) VALUES (?, ?, ?, ?)",
                (kid, name, public, now_ms),
            )
        for a in accounts:
            conn.execute("INSERT OR IGNORE INTO accounts (astronaut, account) VALUES (?, ?)", (name, a))
        audit(conn, now_ms, actor, "enroll", f"{name} key {kid.hex()} accounts {','.join(accounts) or '-'}")
    return fingerprint(public)


def revoke(conn: sqlite3.Connection, fp: str, now_ms: int, actor: str = "cli") -> str:
    """Revoke the key with fingerprint ``fp``; later bundles signed by it are rejected."""
    with transaction(conn):
        row = conn.execute("SELECT astronaut FROM keys WHERE lower(hex(key_id)) = lower(?)", (fp,)).fetchone()
        if row is None:
            raise EnrollError(f"no enrolled key with fingerprint {fp}")
        conn.execute(
            "UPDATE keys SET revoked_ms = ? WHERE lower(hex(key_id)) = lower(?) AND revoked_ms IS NULL",
            (now_ms, fp),
        )
        audit(conn, now_ms, actor, "revoke", f"{row[0]} key {fp}")
    return str(row[0])


def keyring(conn: sqlite3.Connection) -> dict[bytes, KnownKey]:
    """Every enrolled key, revoked ones included (so the error can say 'revoked')."""
    return {
        kid: KnownKey(astronaut=name, public_key=pub, revoked=revoked is not None)
        for kid, name, pub, revoked in conn.execute(
            "SELECT key_id, astronaut, public_key, revoked_ms FROM keys"
        )
    }


def accounts_of(conn: sqlite3.Connection, name: str) -> set[str]:
    return {a for (a,) in conn.execute("SELECT account FROM accounts WHERE astronaut = ?", (name,))}
