"""Applying ground's signed receipts to the queue (live over the link, or from a file).

A receipt only moves a delivery forward (queued → sending → received → published/failed);
applying the same document twice changes nothing. Documents not signed by the pinned
ground key are refused before anything is read from them (docs/PROTOCOL.md §9).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from protocol import RemoteProtocolError, Retract
from protocol.receipts import (
    AccountLimitsReceipt,
    BundleReceipt,
    PublicationReceipt,
    ReceiptDocument,
    verify_receipts,
)
from protocol.rules import PlatformRules, rules_for, with_limits

from . import link, queue
from .errors import OnboardError

# How far along a delivery is; a receipt never moves one backwards. 'failed' ranks with
# 'received' so an operator's retry (failed → pending) shows as received again.
_RANK = {"queued": 0, "exported": 1, "sending": 1, "received": 2, "failed": 2, "published": 3}
_GROUND_TO_ONBOARD = {"pending": "received", "publishing": "received", "scheduled": "received"}


# Delivery states after which ground has nothing more to say (ground/publish.py's diagram);
# 'queued' and 'exported' ones are not on the live link at all.
FINAL_STATES = ("published", "failed", "cancelled", "retracted", "retract_failed")


def awaiting_receipts(conn: sqlite3.Connection) -> int:
    """How many of this station's deliveries ground has yet to settle: sent over the link and
    not in a final state, plus published ones whose retract is on its way."""
    marks = ", ".join("?" * len(FINAL_STATES))
    (n,) = conn.execute(
        f"SELECT COUNT(*) FROM deliveries WHERE state NOT IN ('queued', 'exported', {marks})", FINAL_STATES
    ).fetchone()
    for status in ("sending", "received"):
        for q in queue.items(conn, status=status, kind="retract"):
            if isinstance(q.item, Retract):
                (k,) = conn.execute(
                    "SELECT COUNT(*) FROM deliveries WHERE item_id = ? AND state = 'published'",
                    (q.item.target_id,),
                ).fetchone()
                n += k
    return int(n)


@dataclass(slots=True, kw_only=True)
class ReceiptsPoll:
    """When `onboard sync` asks ground for receipts: only while something awaits them
    (``awaiting_receipts``), every ``every_s`` while answers bring news, doubling up to
    ``max_s`` while they bring none. A quiet station sends no receipt requests at all."""

    every_s: float = 20.0
    # Five minutes: a post's fate still shows within minutes, and a day of waiting on a
    # scheduled post costs ~300 small requests instead of ~4,000.
    max_s: float = 320.0
    interval_s: float = field(default=0.0)
    next_at: float = 0.0  # 0: as soon as something awaits

    def __post_init__(self) -> None:
        self.interval_s = self.every_s

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def idle(self, now: float, recheck_s: float = 1.0) -> None:
        """Nothing awaits receipts: look again in ``recheck_s`` (the check is a local query)."""
        self.next_at = now + recheck_s

    def answered(self, now: float, changed: int) -> None:
        """A receipts exchange finished; ``changed`` deliveries moved."""
        self.interval_s = self.every_s if changed else min(self.interval_s * 2, self.max_s)
        self.next_at = now + self.interval_s

    def kick(self) -> None:
        """Ground has new posts from us: ask soon, at the base interval."""
        self.interval_s, self.next_at = self.every_s, 0.0


# Limits ground learned for an account (a Mastodon instance's own), from signed receipts:
# compose checks that account's posts against these instead of the platform defaults.
LIMITS_SCHEMA = """
CREATE TABLE IF NOT EXISTS account_limits (
    account         TEXT PRIMARY KEY,
    max_text        INTEGER,
    max_media       INTEGER,
    max_media_bytes INTEGER,
    url_length      INTEGER,
    max_alt         INTEGER,
    media_types     TEXT,
    updated_ms      INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    receipts: int
    changed: int


def verify_document(conn: sqlite3.Connection, data: bytes, ground_key: bytes) -> ReceiptDocument:
    try:
        return verify_receipts(data, ground_key)
    except RemoteProtocolError as exc:
        raise OnboardError(f"receipts refused: {exc}") from exc


def apply_document(conn: sqlite3.Connection, doc: ReceiptDocument) -> Applied:
    """Update deliveries and items from a verified document; returns how many rows changed."""
    link.ensure_schema(conn)
    conn.executescript(LIMITS_SCHEMA)
    changed = 0
    now = int(time.time() * 1000)
    with queue.transaction(conn):
        for r in doc.receipts:
            if isinstance(r, PublicationReceipt):
                changed += _apply_publication(conn, r, now)
            elif isinstance(r, AccountLimitsReceipt):
                changed += _apply_limits(conn, r)
            else:
                changed += _apply_bundle(conn, r, now)
    return Applied(receipts=len(doc.receipts), changed=changed)


def _apply_publication(conn: sqlite3.Connection, r: PublicationReceipt, now: int) -> int:
    state = _GROUND_TO_ONBOARD.get(r.state, r.state)
    row = conn.execute(
        "SELECT state, url, detail FROM deliveries WHERE item_id = ? AND target = ?", (r.item_id, r.account)
    ).fetchone()
    if row is None:
        return 0  # a post from another station or laptop
    old = row[0]
    if _RANK.get(state, 4) < _RANK.get(old, 0):
        return 0
    detail = r.error if state == "failed" else None
    if (old, row[1], row[2]) == (state, r.url, detail):
        return 0
    conn.execute(
        "UPDATE deliveries SET state = ?, url = ?, detail = ?, updated_ms = ? WHERE item_id = ? AND target = ?",
        (state, r.url, detail, now, r.item_id, r.account),
    )
    _roll_up(conn, r.item_id)
    return 1


def _apply_limits(conn: sqlite3.Connection, r: AccountLimitsReceipt) -> int:
    """Keep the newest limits per account (an older document never overwrites a newer one)."""
    cur = conn.execute(
        "INSERT INTO account_limits (account, max_text, max_media, max_media_bytes, url_length, max_alt, "
        "media_types, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(account) DO UPDATE SET max_text = excluded.max_text, max_media = excluded.max_media, "
        "max_media_bytes = excluded.max_media_bytes, url_length = excluded.url_length, "
        "max_alt = excluded.max_alt, media_types = excluded.media_types, updated_ms = excluded.updated_ms "
        "WHERE excluded.updated_ms > account_limits.updated_ms",
        (
            r.account,
            r.max_text,
            r.max_media,
            r.max_media_bytes,
            r.url_length,
            r.max_alt,
            None if r.media_types is None else "\n".join(r.media_types),
            r.updated_ms,
        ),
    )
    return cur.rowcount


def known_rules(conn: sqlite3.Connection) -> dict[str, PlatformRules]:
    """Rules per ``platform:account`` from the limits ground sent (for protocol.rules.violations)."""
    try:
        rows = conn.execute(
            "SELECT account, max_text, max_media, max_media_bytes, url_length, max_alt, media_types "
            "FROM account_limits"
        ).fetchall()
    except sqlite3.OperationalError:
        return {}  # no receipts applied yet on this laptop
    out: dict[str, PlatformRules] = {}
    for account, mt, mm, mb, ul, ma, types in rows:
        base = rules_for(account)
        if base is None:
            continue  # a platform this laptop has no rules for: nothing to refine
        out[account] = with_limits(
            base,
            max_text=base.max_text if mt is None else mt,
            max_media=base.max_media if mm is None else mm,
            max_media_bytes=base.max_media_bytes if mb is None else mb,
            url_length=base.url_length if ul is None else ul,
            max_alt=base.max_alt if ma is None else ma,
            media_types=base.media_types if types is None else frozenset(types.split("\n")),
        )
    return out


def _roll_up(conn: sqlite3.Connection, item_id: str) -> None:
    """An item's own status summarises its deliveries once ground has it."""
    states = {s for (s,) in conn.execute("SELECT state FROM deliveries WHERE item_id = ?", (item_id,))}
    if states == {"published"}:
        status = "published"
    elif "failed" in states and not states & {"queued", "sending", "exported", "received"}:
        status = "failed"
    else:
        status = "received"
    conn.execute(
        "UPDATE items SET status = ? WHERE id = ? AND status IN ('queued', 'sending', 'exported', 'received', "
        "'published', 'failed')",
        (status, item_id),
    )


def _apply_bundle(conn: sqlite3.Connection, r: BundleReceipt, now: int) -> int:
    changed = 0
    if r.accepted:
        for i in r.item_ids:
            cur = conn.execute(
                "UPDATE items SET status = 'received' WHERE id = ? AND status IN ('queued', 'sending', 'exported')",
                (i,),
            )
            cur2 = conn.execute(
                "UPDATE deliveries SET state = 'received', updated_ms = ? WHERE item_id = ? "
                "AND state IN ('queued', 'sending', 'exported')",
                (now, i),
            )
            changed += cur.rowcount + cur2.rowcount
        return changed
    ids = [
        i
        for (i,) in conn.execute(
            "SELECT i.item_id FROM link_transfer_items i JOIN link_transfers t ON t.name = i.name WHERE t.sha256 = ?",
            (r.bundle_sha256,),
        )
    ]
    ids += _exported_items_with_sha(conn, r.bundle_sha256)
    reason = f"ground rejected the bundle: [{r.code}] {r.message}"
    for i in ids:
        cur = conn.execute(
            "UPDATE deliveries SET state = 'failed', detail = ?, updated_ms = ? WHERE item_id = ? "
            "AND state IN ('queued', 'sending', 'exported')",
            (reason, now, i),
        )
        if cur.rowcount:
            conn.execute("UPDATE items SET status = 'failed', detail = ? WHERE id = ?", (reason, i))
            changed += cur.rowcount
    return changed


def _exported_items_with_sha(conn: sqlite3.Connection, sha: bytes) -> list[str]:
    """Items handed off in a bundle file whose bytes hash to ``sha`` (file hand-off rejections)."""
    out: list[str] = []
    paths = {
        p for (p,) in conn.execute("SELECT DISTINCT exported_to FROM items WHERE status = 'exported'") if p
    }
    for p in paths:
        try:
            digest = hashlib.sha256(Path(p).read_bytes()).digest()
        except OSError:
            continue
        if digest == sha:
            out += [i for (i,) in conn.execute("SELECT id FROM items WHERE exported_to = ?", (p,))]
    return out


def import_file(conn: sqlite3.Connection, path: Path, ground_key: bytes) -> Applied:
    """`onboard receipts import F`: verify a receipts file against the pinned key and apply it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OnboardError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return apply_document(conn, verify_document(conn, data, ground_key))
