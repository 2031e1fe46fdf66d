"""What an operator may do: retry a publication (or cut its backoff wait), pause/resume a platform or account, revoke a key.

Each action is one transaction that changes state *and* appends who did it to the audit
log, so the log cannot miss an action that happened. There is deliberately no action
that edits an item's content or creates a post: the operator surface cannot speak for
an astronaut.

Errors: ``ActionError`` (a ``GroundError``) with ``status`` 404 (no such thing) or 409
(not possible in its current state); the API turns it into a JSON error.
"""

from __future__ import annotations

import sqlite3

from .. import publish
from ..db import audit, transaction
from ..enroll import revoke as enroll_revoke
from ..errors import EnrollError, GroundError


class ActionError(GroundError):
    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def paused_platforms(conn: sqlite3.Connection) -> set[str]:
    """Platforms paused by an operator (``platform_pauses`` in ground/db.py; the engine skips them)."""
    return {p for (p,) in conn.execute("SELECT platform FROM platform_pauses")}


def retry_publication(conn: sqlite3.Connection, item_id: str, account: str, now_ms: int, actor: str) -> None:
    """Put a failed publication (or failed retraction) back in the engine's queue."""
    row = conn.execute(
        "SELECT state FROM publications WHERE item_id = ? AND account = ?", (item_id, account)
    ).fetchone()
    if row is None:
        raise ActionError(f"no publication of post {item_id} to {account}", status=404)
    try:
        # The engine owns the state machine (ground/publish.py); this is `ground retry`'s path.
        publish.retry(conn, item_id, now_ms, account, actor=actor)
    except GroundError as exc:
        raise ActionError(f"{exc}; only failed publications can be retried", status=409) from exc


def retry_publication_now(
    conn: sqlite3.Connection, item_id: str, account: str, now_ms: int, actor: str
) -> str:
    """Cut the backoff wait of a publication due to be retried; returns its (unchanged) state."""
    exists = conn.execute(
        "SELECT 1 FROM publications WHERE item_id = ? AND account = ?", (item_id.strip().upper(), account)
    ).fetchone()
    if exists is None:
        raise ActionError(f"no publication of post {item_id} to {account}", status=404)
    try:
        return publish.retry_now(conn, item_id, account, now_ms, actor=actor)
    except GroundError as exc:
        raise ActionError(
            f"{exc}; only a publication waiting out a backoff can be retried now", status=409
        ) from exc


def set_platform_paused(
    conn: sqlite3.Connection, platform: str, paused: bool, now_ms: int, actor: str
) -> None:
    """Pause or resume every publication to ``platform`` (must be one ground publishes to)."""
    with transaction(conn):
        known = conn.execute(
            "SELECT 1 FROM accounts WHERE account LIKE ? || ':%' UNION SELECT 1 FROM platform_pauses WHERE platform = ?",
            (platform, platform),
        ).fetchone()
        if known is None:
            raise ActionError(f"no account on platform {platform!r} is enrolled", status=404)
        if paused:
            conn.execute(
                "INSERT OR IGNORE INTO platform_pauses (platform, paused_ms, actor) VALUES (?, ?, ?)",
                (platform, now_ms, actor),
            )
        else:
            conn.execute("DELETE FROM platform_pauses WHERE platform = ?", (platform,))
        audit(conn, now_ms, actor, "pause-platform" if paused else "resume-platform", platform)


def set_account_paused(conn: sqlite3.Connection, account: str, paused: bool, now_ms: int, actor: str) -> None:
    """Pause or resume publishing to one ``platform:account``."""
    with transaction(conn):
        n = conn.execute("UPDATE accounts SET paused = ? WHERE account = ?", (int(paused), account)).rowcount
        if n == 0:
            raise ActionError(f"no enrolled account {account!r}", status=404)
        audit(conn, now_ms, actor, "pause-account" if paused else "resume-account", account)


def revoke_key(conn: sqlite3.Connection, fingerprint: str, now_ms: int, actor: str) -> str:
    """Revoke an astronaut key; returns the astronaut's name."""
    row = conn.execute(
        "SELECT revoked_ms FROM keys WHERE lower(hex(key_id)) = lower(?)", (fingerprint,)
    ).fetchone()
    if row is None:
        raise ActionError(f"no enrolled key with fingerprint {fingerprint}", status=404)
    if row[0] is not None:
        raise ActionError(f"key {fingerprint} is already revoked", status=409)
    try:
        return enroll_revoke(conn, fingerprint, now_ms, actor=actor)
    except EnrollError as exc:
        raise ActionError(str(exc), status=404) from exc
