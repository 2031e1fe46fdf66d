"""The onboard queue: signed items waiting to leave, and what became of them (SQLite).

Each item is stored already signed, so what leaves the laptop is exactly what the astronaut
approved. Per target, a delivery moves queued → exported/sending → received → what ground
says (published, failed, rejected, cancelled, retracting → retracted | retract_failed), from
signed receipts (onboard/receipts.py); a post's status sums its deliveries up
(``receipts.post_status``). A cancel or retract item ends 'done' or 'refused' with ground's
words in ``detail``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from durable.sqlitedb import open_db
from durable.sqlitedb import transaction as transaction  # re-exported: callers use queue.transaction
from protocol import Item, Post, SignedItem, decode_item

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    author      TEXT NOT NULL,
    body        BLOB NOT NULL,
    key_id      BLOB NOT NULL,
    signature   BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    status      TEXT NOT NULL DEFAULT 'queued',
    bundle_id   TEXT,
    exported_to TEXT,
    detail      TEXT,
    exported_sha256 BLOB    -- sha256 of the bundle file it was exported in (receipt claims, §9)
);
CREATE TABLE IF NOT EXISTS item_media (
    item_id TEXT NOT NULL REFERENCES items(id),
    sha256  BLOB NOT NULL,
    PRIMARY KEY (item_id, sha256)
);
CREATE TABLE IF NOT EXISTS deliveries (
    item_id TEXT NOT NULL REFERENCES items(id),
    target  TEXT NOT NULL,
    state   TEXT NOT NULL DEFAULT 'queued',
    url     TEXT,
    detail  TEXT,
    updated_ms INTEGER,
    remote_id  TEXT,     -- the platform's id of the published post (Bluesky: its at:// URI)
    ground_seq INTEGER,  -- change seq of the last receipt applied (§9); NULL: none yet
    PRIMARY KEY (item_id, target)
);
"""

# Columns added after the first release: (table, column, type).
_ADDED = (
    ("items", "exported_sha256", "BLOB"),
    ("deliveries", "remote_id", "TEXT"),
    ("deliveries", "ground_seq", "INTEGER"),
    # Receipts version 3 (docs/PROTOCOL.md §9.4): per photo [fidelity, original sha256 hex] as
    # JSON, and ground's words on reading the copy back. NULL: no receipt has said.
    ("deliveries", "photos", "TEXT"),
    ("deliveries", "read_back", "TEXT"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedItem:
    item: Item
    signed: SignedItem
    status: str
    bundle_id: str | None
    exported_to: str | None
    detail: str | None


def connect(path: Path) -> sqlite3.Connection:
    """Open the queue database (WAL, full sync: an accepted post must survive power loss)."""
    conn = open_db(path, SCHEMA)
    for table, column, kind in _ADDED:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    return conn


def add_item(conn: sqlite3.Connection, signed: SignedItem, item: Item) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT INTO items (id, kind, author, body, key_id, signature, created_ms) VALUES (?,?,?,?,?,?,?)",
            (
                item.id,
                item.kind.name.lower(),
                item.author,
                signed.body,
                signed.key_id,
                signed.signature,
                item.created_ms,
            ),
        )
        if isinstance(item, Post):
            for m in item.media:
                conn.execute("INSERT OR IGNORE INTO item_media VALUES (?, ?)", (item.id, m.sha256))
            for t in item.targets:
                conn.execute(
                    "INSERT INTO deliveries (item_id, target, updated_ms) VALUES (?, ?, ?)",
                    (item.id, t, int(time.time() * 1000)),
                )


def _row_to_item(row: sqlite3.Row | tuple) -> QueuedItem:  # type: ignore[type-arg]
    body, key_id, sig, status, bundle_id, exported_to, detail = row
    return QueuedItem(
        item=decode_item(body),
        signed=SignedItem(body=body, key_id=key_id, signature=sig),
        status=status,
        bundle_id=bundle_id,
        exported_to=exported_to,
        detail=detail,
    )


_COLS = "body, key_id, signature, status, bundle_id, exported_to, detail"


def items(
    conn: sqlite3.Connection, *, status: str | None = None, kind: str | None = None
) -> list[QueuedItem]:
    """Queued items, oldest first; ``status`` and ``kind`` ('post', 'cancel', 'retract') filter."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM items WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2) ORDER BY id",
        (status, kind),
    ).fetchall()
    return [_row_to_item(r) for r in rows]


def get(conn: sqlite3.Connection, item_id: str) -> QueuedItem | None:
    row = conn.execute(f"SELECT {_COLS} FROM items WHERE id = ?", (item_id.upper(),)).fetchone()
    return None if row is None else _row_to_item(row)


def deliveries(conn: sqlite3.Connection, item_id: str) -> list[tuple[str, str, str | None, str | None]]:
    """(target, state, url, detail) per account; for Bluesky the url is followed by the post's
    at:// URI (its web address depends on the service, the URI does not)."""
    return [
        (
            t,
            st,
            url if not rid or not rid.startswith("at://") or url == rid else f"{url or ''} {rid}".strip(),
            det,
        )
        for t, st, url, det, rid in conn.execute(
            "SELECT target, state, url, detail, remote_id FROM deliveries WHERE item_id = ? ORDER BY target",
            (item_id,),
        )
    ]


def mark_exported(
    conn: sqlite3.Connection, item_ids: list[str], bundle_id: str, path: str, sha256: bytes | None = None
) -> None:
    """The items left in the bundle file at ``path`` (written already: its hash is kept, §9);
    ``sha256`` is the bundle's hash where it never was a file (the simulator's bundle POST)."""
    sha = sha256 if sha256 is not None else hashlib.sha256(Path(path).read_bytes()).digest()
    with transaction(conn):
        for i in item_ids:
            conn.execute(
                "UPDATE items SET status = 'exported', bundle_id = ?, exported_to = ?, exported_sha256 = ? "
                "WHERE id = ?",
                (bundle_id, path, sha, i),
            )
            conn.execute(
                "UPDATE deliveries SET state = 'exported', updated_ms = ? WHERE item_id = ? AND state = 'queued'",
                (int(time.time() * 1000), i),
            )


def cancel_locally(conn: sqlite3.Connection, item_id: str) -> None:
    """Mark a post ground never accepted (its bundle was refused) cancelled, here only."""
    with transaction(conn):
        conn.execute(
            "UPDATE items SET status = 'cancelled', detail = 'cancelled on this laptop' WHERE id = ?",
            (item_id,),
        )
        conn.execute(
            "UPDATE deliveries SET state = 'cancelled', detail = NULL, updated_ms = ? WHERE item_id = ?",
            (int(time.time() * 1000), item_id),
        )
