"""Stations: who may use the upload endpoint, by bearer token (only its sha256 is kept).

``ground station add NAME --token-out T`` writes T (mode 0600) holding everything the
station needs to pin: its name, its token and ground's receipt public key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .db import audit, transaction
from .errors import GroundError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TOKEN_FILE_FORMAT = "orbitpost-station-token/1"


class StationError(GroundError):
    """A station name, token or token file that cannot be used."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Station:
    name: str
    quota_bytes: int | None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def add_station(
    conn: sqlite3.Connection, name: str, now_ms: int, actor: str = "cli", quota_bytes: int | None = None
) -> str:
    """Register station ``name`` and return its new token (shown once, never stored).

    ``quota_bytes`` caps the bytes its unfinished uploads may hold on ground (None: server default).
    """
    if quota_bytes is not None and quota_bytes <= 0:
        raise StationError("a station quota must be a positive number of bytes")
    if not _NAME.match(name):
        raise StationError(f"station name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'")
    token = secrets.token_urlsafe(32)
    with transaction(conn):
        if conn.execute("SELECT 1 FROM stations WHERE name = ?", (name,)).fetchone():
            raise StationError(f"station {name!r} already exists; revoke it first to issue a new token")
        conn.execute(
            "INSERT INTO stations (name, token_sha256, created_ms, quota_bytes) VALUES (?, ?, ?, ?)",
            (name, _hash(token), now_ms, quota_bytes),
        )
        audit(conn, now_ms, actor, "station-add", name)
    return token


def revoke_station(conn: sqlite3.Connection, name: str, now_ms: int, actor: str = "cli") -> None:
    with transaction(conn):
        cur = conn.execute(
            "UPDATE stations SET revoked_ms = ? WHERE name = ? AND revoked_ms IS NULL", (now_ms, name)
        )
        if cur.rowcount == 0:
            raise StationError(f"no active station {name!r}")
        audit(conn, now_ms, actor, "station-revoke", name)


def authenticate(conn: sqlite3.Connection, token: str) -> Station | None:
    """The active station holding ``token``, or None."""
    if not token or len(token) > 256:
        return None
    digest = _hash(token)
    row = conn.execute(
        "SELECT name, token_sha256, quota_bytes FROM stations WHERE token_sha256 = ? AND revoked_ms IS NULL",
        (digest,),
    ).fetchone()
    # The lookup is by hash (no timing leak of the token); compare again in constant time.
    if row is None or not hmac.compare_digest(row[1], digest):
        return None
    return Station(name=row[0], quota_bytes=row[2])


def write_token_file(
    path: Path,
    *,
    station: str,
    token: str,
    ground_key_line: str,
    ground_decodes: str | None = None,
    tls_sha256: str | None = None,
) -> None:
    """Write the station's credential file, mode 0600 from the first byte.

    ``ground_decodes`` is ground's capability token (docs §5.3): which codecs the station may use.
    """
    doc = {
        "format": TOKEN_FILE_FORMAT,
        "station": station,
        "token": token,
        "ground_receipt_key": ground_key_line,
    }
    if ground_decodes is not None:
        doc["ground_decodes"] = ground_decodes
    if tls_sha256 is not None:
        doc["ground_tls_sha256"] = tls_sha256  # the station pins ground's certificate (ground/tls.py)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise StationError(f"{path} already exists; refusing to overwrite a credential") from None
    except OSError as exc:
        raise StationError(f"cannot write {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def token_fingerprint(token: str) -> str:
    return base64.b32encode(_hash(token)[:5]).decode().lower()
