"""The publishing engine: moves each (post, account) from pending to published, once.

State lives in the ``publications`` table: pending → publishing → published | failed.
'publishing' is committed *before* the platform call, so after a crash we know to ask
the platform (``lookup``) before trying again — never a blind second post.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from protocol import Post, decode_item
from protocol.model import parse_target

from .db import audit, transaction
from .errors import PublishError
from .home import GroundHome
from .platforms import ArchivePlatform, Platform, PublishRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishOutcome:
    item_id: str
    account: str
    state: str
    url: str | None = None
    error: str | None = None


def default_platforms(home: GroundHome) -> dict[str, Platform]:
    return {"archive": ArchivePlatform(home.archive_dir)}


def build_request(home: GroundHome, conn: sqlite3.Connection, item_id: str, account: str) -> PublishRequest:
    body, sig, key_id = conn.execute(
        "SELECT body, signature, key_id FROM items WHERE id = ?", (item_id,)
    ).fetchone()
    post = decode_item(body)
    assert isinstance(post, Post)
    _, acct = parse_target(account)
    media = tuple((m, home.blobs.get(m.sha256)) for m in post.media)
    return PublishRequest(
        post=post, account=acct, media=media, signer_fingerprint=key_id.hex(), signature=sig, body=body
    )


async def publish_due(
    home: GroundHome, now_ms: int, platforms: dict[str, Platform] | None = None, session: Any = None
) -> list[PublishOutcome]:
    """Publish every pending publication whose time has come; returns what happened."""
    platforms = platforms if platforms is not None else default_platforms(home)
    conn = home.conn
    rows = conn.execute(
        "SELECT item_id, account, state FROM publications WHERE state IN ('pending', 'publishing') "
        "AND (next_attempt_ms IS NULL OR next_attempt_ms <= ?) ORDER BY item_id, account",
        (now_ms,),
    ).fetchall()
    out: list[PublishOutcome] = []
    for item_id, account, state in rows:
        out.append(await _publish_one(home, conn, item_id, account, state, now_ms, platforms, session))
    return out


async def _publish_one(
    home: GroundHome,
    conn: sqlite3.Connection,
    item_id: str,
    account: str,
    state: str,
    now_ms: int,
    platforms: dict[str, Platform],
    session: Any,
) -> PublishOutcome:
    platform_name, _ = parse_target(account)
    platform = platforms.get(platform_name)
    if platform is None:
        return _fail(
            conn, item_id, account, now_ms, f"no adapter for platform {platform_name!r}", retryable=True
        )
    req = build_request(home, conn, item_id, account)
    with transaction(conn):
        conn.execute(
            "UPDATE publications SET state = 'publishing', attempts = attempts + 1, updated_ms = ? "
            "WHERE item_id = ? AND account = ?",
            (now_ms, item_id, account),
        )
    try:
        # A row left 'publishing' by a crash may already be out there: ask first.
        result = await platform.lookup(req, session) if state == "publishing" else None
        if result is None:
            result = await platform.publish(req, session)
    except PublishError as exc:
        return _fail(conn, item_id, account, now_ms, str(exc), retryable=exc.retryable)
    with transaction(conn):
        conn.execute(
            "UPDATE publications SET state = 'published', url = ?, remote_id = ?, last_error = NULL, "
            "updated_ms = ?, published_ms = ? WHERE item_id = ? AND account = ?",
            (result.url, result.remote_id, now_ms, now_ms, item_id, account),
        )
        audit(conn, now_ms, "publisher", "published", f"{item_id} → {account}: {result.url}")
    return PublishOutcome(item_id=item_id, account=account, state="published", url=result.url)


def _fail(
    conn: sqlite3.Connection, item_id: str, account: str, now_ms: int, reason: str, *, retryable: bool
) -> PublishOutcome:
    with transaction(conn):
        conn.execute(
            "UPDATE publications SET state = 'failed', last_error = ?, retryable = ?, updated_ms = ? "
            "WHERE item_id = ? AND account = ?",
            (reason, int(retryable), now_ms, item_id, account),
        )
        audit(conn, now_ms, "publisher", "failed", f"{item_id} → {account}: {reason}")
    return PublishOutcome(item_id=item_id, account=account, state="failed", error=reason)


async def run_forever(
    home: GroundHome,
    stop: asyncio.Event,
    *,
    interval_s: float = 1.0,
    platforms: dict[str, Platform] | None = None,
    session: Any = None,
) -> None:
    """Publish due posts until ``stop`` is set; what `ground serve` runs beside the HTTP server."""
    while not stop.is_set():
        await publish_due(home, int(time.time() * 1000), platforms, session)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
