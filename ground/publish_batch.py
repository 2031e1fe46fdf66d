"""Publishing many posts as a group, durability paid once per group (issue 18).

A platform with ``publish_batch`` (the archive: posts written to local disk) receives its due
publications in groups. For each group:

1. one transaction claims every publication ('publishing', one attempt more), exactly as
   ground/publish.py claims one before calling a platform;
2. the platform writes the whole group and makes it durable together (durable.files.FileBatch:
   one flush for every file, the renames that make posts visible, one flush for those);
3. one transaction records every publication 'published', with one audit line each.

A crash between 1 and 3 leaves the group 'publishing'; the next pass takes those rows again
and the platform's ``publish_batch`` skips what is already there (idempotent, like
``publish``): published once. A publication this path cannot take (its post or media cannot
be loaded, the platform's rules refuse it) and a group whose write fails go to the
one-by-one path, which looks up, retries and reports each on its own.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from protocol import Post
from protocol.batch_tree import BatchInclusion
from protocol.model import parse_target
from protocol.rules import PlatformRules, check_target, media_fidelity, rules_for

from . import decoded
from .db import transaction
from .errors import PublishError
from .home import GroundHome
from .platforms import Platform, Published, PublishRequest
from .publish import PublishOutcome, PubState

log = logging.getLogger(__name__)

# Publications per group: bounds how long one transaction holds the database's write lock
# (the link's accept waits for it; ~25 ms for 1,000 rows here) and the work lost to a crash.
# Each group costs ~6 fsyncs (claim, archive index, pack, its folder twice, record), which on
# a busy shared disk take 3-15 ms each: 1,000 rather than 500 halves them per post.
MAX_GROUP = 1000
# Photo bytes held in memory per group (each request carries its media).
MAX_GROUP_MEDIA_BYTES = 64 * 1024 * 1024

Row = tuple[str, str, str, int, int, str | None]  # item_id, account, state, attempts, updated_ms, remote_id


def _batch_platform(platforms: dict[str, Platform], account: str) -> Any:
    platform = platforms.get(parse_target(account)[0])
    if platform is None or not callable(getattr(platform, "publish_batch", None)):
        return None
    if getattr(platform, "rules", None) is not None:
        return None  # limits learned from the platform per account: the one-by-one path asks
    return platform


async def publish_in_batches(
    home: GroundHome, rows: Sequence[Row], platforms: dict[str, Platform], session: Any, now_ms: int
) -> tuple[list[PublishOutcome], list[Row]]:
    """Publish the due ``rows`` a group-capable platform takes; returns (outcomes, rows left)."""
    left: list[Row] = []
    groups: dict[str, list[Row]] = {}
    platform_of: dict[str, str | None] = {}  # per account, not per row
    for row in rows:
        account, name = row[1], None
        if row[2] in (PubState.PENDING, PubState.PUBLISHING):
            if account not in platform_of:
                platform_of[account] = (
                    parse_target(account)[0] if _batch_platform(platforms, account) else None
                )
            name = platform_of[account]
        if name is not None:
            groups.setdefault(name, []).append(row)
        else:
            left.append(row)
    out: list[PublishOutcome] = []
    for name, todo in groups.items():
        done, rest = await _publish_groups(home, todo, platforms[name], session, now_ms)
        out.extend(done)
        left.extend(rest)
    return out, left


Group = list[tuple[Row, PublishRequest]]


async def _publish_groups(
    home: GroundHome, rows: list[Row], platform: Any, session: Any, now_ms: int
) -> tuple[list[PublishOutcome], list[Row]]:
    """Publish ``rows`` group by group, pipelined: the next group is read and claimed while the
    platform writes the current one, and the current one recorded while it writes the next.

    Each group keeps its own order — claimed, written durably, then recorded — so a crash at
    any point leaves every row either as it was, 'publishing' (looked up again), or recorded.
    """
    conn = home.conn
    out: list[PublishOutcome] = []
    left: list[Row] = []
    writing: tuple[Group, asyncio.Future[list[Published]]] | None = None
    try:
        while rows or writing is not None:
            group: Group = []
            if rows:
                group, rest, rows = _requests(home, rows, now_ms)
                left.extend(rest)
                if group:
                    _claim(conn, group, now_ms)
            if writing is not None:
                done_group, task = writing
                writing = None
                try:
                    results = await task
                except Exception as exc:  # PublishError, or an adapter bug: never a stuck group
                    if not isinstance(exc, PublishError):
                        log.exception("%s crashed writing a group of %d", platform.name, len(done_group))
                    # Each goes the one-by-one way, which looks up what the group managed first.
                    left.extend(
                        (r[0], r[1], str(PubState.PUBLISHING), r[3] + 1, r[4], r[5]) for r, _ in done_group
                    )
                    results = None
                if group:
                    writing = (group, _start(platform, group, session))
                if results is not None:
                    out.extend(_record(conn, platform.name, done_group, results, now_ms))
            elif group:
                writing = (group, _start(platform, group, session))
    finally:
        if writing is not None:  # an exception above: let the write in flight finish (its rows stay claimed)
            await asyncio.gather(writing[1], return_exceptions=True)
    return out, left


def _start(platform: Any, group: Group, session: Any) -> asyncio.Future[list[Published]]:
    task: asyncio.Future[list[Published]] = asyncio.ensure_future(
        platform.publish_batch([q for _, q in group], session)
    )
    return task


def _claim(conn: sqlite3.Connection, group: Group, now_ms: int) -> None:
    """As _Job._claim, for a whole group: committed before the platform is called; a row
    already 'publishing' keeps its first attempt's start (updated_ms)."""
    with transaction(conn):
        conn.executemany(
            "UPDATE publications SET state = 'publishing', attempts = attempts + 1, "
            "updated_ms = CASE WHEN state = 'publishing' THEN updated_ms ELSE ? END "
            "WHERE item_id = ? AND account = ?",
            [(now_ms, r[0], r[1]) for r, _ in group],
        )


def _record(
    conn: sqlite3.Connection, platform_name: str, group: Group, results: list[Published], now_ms: int
) -> list[PublishOutcome]:
    """One transaction: every publication of a durably written group 'published', audited."""
    fidelity = str(media_fidelity(platform_name))
    updates, lines = [], []
    for (row, req), result in zip(group, results, strict=True):
        item_id, account = row[0], row[1]
        fid = result.fidelity or fidelity
        note = result.fidelity_note
        updates.append(
            (
                result.url,
                result.remote_id,
                now_ms,
                now_ms,
                fid if req.media else None,
                note or None,
                item_id,
                account,
            )
        )
        photos = f"; photos {fid}" + (f" ({note})" if note else "") if req.media else ""
        lines.append((now_ms, "publisher", "published", f"{item_id} → {account}: {result.url}{photos}"))
    with transaction(conn):
        conn.executemany(
            "UPDATE publications SET state = 'published', url = ?, remote_id = ?, last_error = NULL, "
            "retryable = NULL, next_attempt_ms = NULL, updated_ms = ?, published_ms = ?, "
            "fidelity = ?, fidelity_note = ? WHERE item_id = ? AND account = ?",
            updates,
        )
        # db.audit's row, one per publication, in the same transaction.
        conn.executemany("INSERT INTO events (ts_ms, actor, kind, detail) VALUES (?, ?, ?, ?)", lines)
    return [
        PublishOutcome(item_id=row[0], account=row[1], state="published", url=result.url)
        for (row, _), result in zip(group, results, strict=True)
    ]


def _inclusion(proofs: dict[str, BatchInclusion], item_id: str, raw: bytes) -> BatchInclusion:
    """The item's audit path, parsed once per group (a post to several accounts has one)."""
    if item_id not in proofs:
        proofs[item_id] = decoded.inclusion(raw)
    return proofs[item_id]


def _requests(
    home: GroundHome, rows: list[Row], now_ms: int
) -> tuple[list[tuple[Row, PublishRequest]], list[Row], list[Row]]:
    """Requests for a group from the head of ``rows`` (at most MAX_GROUP, MAX_GROUP_MEDIA_BYTES).

    Returns (row and request for each, rows for the one-by-one path — their post or media
    cannot be loaded or the platform's rules refuse them —, rows left for the next group).

    Reads the group's items in one query and each batch statement once: it is shared by every
    post of its signer in a bundle (one ~100 kB copy per post would be quadratic again).
    """
    conn = home.conn
    rows, later = rows[:MAX_GROUP], rows[MAX_GROUP:]
    ids = sorted({r[0] for r in rows})
    marks = ",".join("?" * len(ids))
    items = {
        r[0]: r[1:]
        for r in conn.execute(
            # ``statement``: where a release before issue 18 kept it, in the row itself.
            "SELECT id, body, signature, key_id, statement_sha256, statement, batch_proof FROM items "
            f"WHERE id IN ({marks})",
            ids,
        )
    }
    statements: dict[bytes, bytes] = {}
    posts: dict[str, Any] = {}
    proofs: dict[str, BatchInclusion] = {}
    accounts: dict[str, tuple[str, PlatformRules | None]] = {}  # parsed once per account
    out: list[tuple[Row, PublishRequest]] = []
    left: list[Row] = []
    media_bytes = 0
    for n, row in enumerate(rows):
        item_id, account, state, _attempts, updated_ms, _remote = row
        try:
            body, sig, key_id, statement_sha, inline_statement, batch_proof = items[item_id]
            if item_id not in posts:  # a post to several accounts: decoded once per group
                posts[item_id] = decoded.item(body)
            post = posts[item_id]
            if not isinstance(post, Post):
                raise ValueError(f"{item_id} is not a post")
            if account not in accounts:
                accounts[account] = (parse_target(account)[1], rules_for(account))
            name, rules = accounts[account]
            if rules is not None and (
                check_target(post, account, rules)
                # Pixel limits need each photo's size and may call for a rendition (ground/
                # renditions.py): the one-by-one path handles those.
                or (post.media and (rules.max_side_px or rules.max_pixels))
            ):
                raise ValueError("the platform's rules refuse it or call for a rendition")
            size = sum(m.size_bytes for m in post.media)
            if out and media_bytes + size > MAX_GROUP_MEDIA_BYTES:
                return out, left, rows[n:] + later
            media_bytes += size
            if statement_sha is not None and statement_sha not in statements:
                statements[statement_sha] = conn.execute(
                    "SELECT statement FROM statements WHERE sha256 = ?", (statement_sha,)
                ).fetchone()[0]
            media = tuple((m, home.blobs.get(m.sha256)) for m in post.media)
        except (OSError, KeyError, ValueError, TypeError):
            left.append(row)  # the one-by-one path reports it precisely
            continue
        req = PublishRequest(
            post=post,
            account=name,
            media=media,
            signer_fingerprint=key_id.hex(),
            signature=sig,
            body=body,
            statement=statements[statement_sha] if statement_sha is not None else (inline_statement or b""),
            # Format 3 (docs/PROTOCOL.md §17): the post's own audit path, as the one-by-one path
            # (publish.build_request) gives it.
            inclusion=None if batch_proof is None else _inclusion(proofs, item_id, bytes(batch_proof)),
            ambiguous_since_ms=updated_ms if state == PubState.PUBLISHING else None,
            now_ms=now_ms,
        )
        out.append((row, req))
    return out, left, later
