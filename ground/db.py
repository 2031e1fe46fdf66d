"""Ground's SQLite database: schema, connection settings and the transaction helper.

Every state change that matters (a bundle accepted, a publication's state) is one
transaction, so a crash leaves the database either before or after it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from durable.sqlitedb import open_db
from durable.sqlitedb import transaction as transaction  # re-exported: ground modules use db.transaction

from . import changes

SCHEMA = """
CREATE TABLE IF NOT EXISTS astronauts (
    name        TEXT PRIMARY KEY,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key_id      BLOB PRIMARY KEY,
    astronaut   TEXT NOT NULL REFERENCES astronauts(name),
    public_key  BLOB NOT NULL UNIQUE,
    enrolled_ms INTEGER NOT NULL,
    revoked_ms  INTEGER
);
CREATE TABLE IF NOT EXISTS accounts (
    astronaut   TEXT NOT NULL REFERENCES astronauts(name),
    account     TEXT NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (astronaut, account)
);
-- Platforms an operator paused (dashboard): the publisher skips every account on them.
CREATE TABLE IF NOT EXISTS platform_pauses (
    platform   TEXT PRIMARY KEY,
    paused_ms  INTEGER NOT NULL,
    actor      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bundles (
    bundle_id   TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE,
    received_ms INTEGER NOT NULL,
    source      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    item_count  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id            TEXT PRIMARY KEY,
    bundle_id     TEXT NOT NULL REFERENCES bundles(bundle_id),
    kind          TEXT NOT NULL,
    author        TEXT NOT NULL,
    key_id        BLOB NOT NULL,
    body          BLOB NOT NULL,
    signature     BLOB NOT NULL,
    -- NULL: signature is over this body alone (bundle format 1). Otherwise the batch
    -- statement the signature covers; it lists sha256(body) (format 2, docs/PROTOCOL.md §14).
    statement     BLOB,
    -- Format 2 from this release on: sha256 of the statement, kept once in `statements`
    -- (a statement lists every post of its signer in the bundle: one copy per post was
    -- quadratic in the bundle size). `statement` above stays NULL for these rows.
    statement_sha256 BLOB,
    created_ms    INTEGER NOT NULL,
    publish_at_ms INTEGER,
    target_id     TEXT,
    received_ms   INTEGER NOT NULL,
    -- Bundle format 3: BatchInclusion.to_bytes() of this item (its tree size, leaf index and
    -- audit path: ⌈log₂ n⌉ hashes); with `signature` and `body` it proves the item alone.
    batch_proof   BLOB
);
CREATE TABLE IF NOT EXISTS statements (
    sha256     BLOB PRIMARY KEY,
    statement  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS publications (
    item_id         TEXT NOT NULL REFERENCES items(id),
    account         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    url             TEXT,
    remote_id       TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    retryable       INTEGER,
    next_attempt_ms INTEGER,
    updated_ms      INTEGER NOT NULL,
    published_ms    INTEGER,
    PRIMARY KEY (item_id, account)
);
CREATE INDEX IF NOT EXISTS publications_state ON publications(state, next_attempt_ms);
-- The dashboard lists posts newest first, for everyone or one astronaut (ground/dashboard/queries.py).
CREATE INDEX IF NOT EXISTS items_received ON items(received_ms, id);
CREATE INDEX IF NOT EXISTS items_author_received ON items(author, received_ms, id);
CREATE TABLE IF NOT EXISTS rejections (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    source      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    code        TEXT NOT NULL,
    message     TEXT NOT NULL
);
-- The live link (ground/server.py, issue 3). Stations authenticate with a bearer token;
-- only its sha256 is stored.
CREATE TABLE IF NOT EXISTS stations (
    name          TEXT PRIMARY KEY,
    token_sha256  BLOB NOT NULL UNIQUE,
    created_ms    INTEGER NOT NULL,
    revoked_ms    INTEGER,
    quota_bytes   INTEGER  -- staged bytes allowed at once; NULL = the server default
);
-- One row per station: when it was last heard from and how much it moved (dashboard:
-- "last contact").
CREATE TABLE IF NOT EXISTS link_contacts (
    station       TEXT PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    requests      INTEGER NOT NULL DEFAULT 0,
    bytes_in      INTEGER NOT NULL DEFAULT 0,
    bytes_out     INTEGER NOT NULL DEFAULT 0,
    last_addr     TEXT
);
-- One row per upload a station opened (dashboard: per-transfer progress). transfer_id is
-- "<station>/<kind>:<sha256 hex>" (kind blob, coded_blob or bundle); the kind column is 'blob'
-- (a photo, as-is or JPEG XL) or 'bundle'; state is
-- 'receiving' → 'complete' | 'failed' (code/message say why). ranges is the durable
-- received ranges as msgpack [start, stop, ...]; received_bytes is their total.
CREATE TABLE IF NOT EXISTS transfers (
    transfer_id    TEXT PRIMARY KEY,
    station        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    sha256         BLOB NOT NULL,
    source         TEXT NOT NULL,
    owner          TEXT NOT NULL,
    state          TEXT NOT NULL,
    total_bytes    INTEGER NOT NULL,
    received_bytes INTEGER NOT NULL DEFAULT 0,
    ranges         BLOB NOT NULL,
    code           TEXT,
    message        TEXT,
    started_ms     INTEGER NOT NULL,
    updated_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_state ON transfers(state, updated_ms);
-- Traffic per station per minute (dashboard: bytes per day = SUM over the day; current
-- bytes/s = the last full minutes). bytes_in counts request bodies, bytes_out responses.
CREATE TABLE IF NOT EXISTS link_traffic (
    station     TEXT NOT NULL,
    minute_ms   INTEGER NOT NULL,
    bytes_in    INTEGER NOT NULL DEFAULT 0,
    bytes_out   INTEGER NOT NULL DEFAULT 0,
    requests    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (station, minute_ms)
);
-- Limits learned from a platform for one account (a Mastodon instance's /api/v2/instance),
-- sent to stations in signed receipts so onboard checks posts against the same numbers
-- ground will (ground/account_limits.py). NULL: the platform default.
CREATE TABLE IF NOT EXISTS account_limits (
    account         TEXT PRIMARY KEY,   -- platform:account
    max_text        INTEGER,
    max_media       INTEGER,
    max_media_bytes INTEGER,
    url_length      INTEGER,
    max_alt         INTEGER,
    media_types     TEXT,               -- space-separated, or NULL
    updated_ms      INTEGER NOT NULL
);
-- Failed operator logins (ground/login_limits.py): kept here, not in memory, so a restart
-- does not hand an attacker a fresh budget. Rows older than the limiter's window are pruned
-- on each failure, and the table is capped, so it stays small.
CREATE TABLE IF NOT EXISTS login_failures (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms  INTEGER NOT NULL,
    name   TEXT NOT NULL,
    addr   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_name ON login_failures(name, ts_ms);
CREATE INDEX IF NOT EXISTS login_failures_addr ON login_failures(addr, ts_ms);
CREATE INDEX IF NOT EXISTS login_failures_ts ON login_failures(ts_ms);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL
);
-- The audit trail is append-only: the database itself refuses edits and deletes.
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open ground's database with WAL and full fsync; creates the schema if new."""
    conn = open_db(path, SCHEMA, check_same_thread=False)
    _migrate(conn)
    changes.ensure_schema(conn)  # the receipts' change log and its triggers (docs/PROTOCOL.md §9)
    return conn


# Columns added since the first release: (table, column, type), in the order they came.
_ADDED = (
    ("items", "statement", "BLOB"),
    ("items", "statement_sha256", "BLOB"),
    # Format 3 (docs/PROTOCOL.md §17): the item's own proof, a few hundred bytes whatever the
    # bundle size (tree size, leaf index, audit path; protocol.batch_tree.BatchInclusion).
    ("items", "batch_proof", "BLOB"),
    # Operator sessions gained an idle timeout (ground/operators.py): when each was last used,
    # and why it ended. The table itself is created by operators.ensure_schema, with them.
    ("operator_sessions", "last_used_ms", "INTEGER"),
    ("operator_sessions", "end_reason", "TEXT"),
    # What "unchanged" meant for each publication (issue 13): the platform's declared media
    # fidelity ('exact' / 're-encoded', protocol/rules.py) and what a read-back found.
    ("publications", "fidelity", "TEXT"),
    ("publications", "fidelity_note", "TEXT"),
    # Renditions ground made with the astronaut's signed consent (ground/renditions.py): a JSON
    # list naming, per photo, the signed original's sha256, the rendition's and the recipe.
    ("publications", "renditions", "TEXT"),
)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an earlier release up to this schema (additive changes only).

    A table that does not exist yet is left alone: whoever creates it creates it whole.
    """
    for table, column, kind in _ADDED:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if columns and column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


# An item's batch statement, wherever this release or an earlier one kept it (``i`` is items).
ITEM_STATEMENT = (
    "COALESCE(i.statement, (SELECT s.statement FROM statements s WHERE s.sha256 = i.statement_sha256))"
)


def store_statement(conn: sqlite3.Connection, statement: bytes) -> bytes | None:
    """Keep ``statement`` once (inside the caller's transaction); returns its sha256, None if empty."""
    if not statement:
        return None
    sha = hashlib.sha256(statement).digest()
    conn.execute("INSERT OR IGNORE INTO statements (sha256, statement) VALUES (?, ?)", (sha, statement))
    return sha


def audit(conn: sqlite3.Connection, now_ms: int, actor: str, kind: str, detail: str) -> None:
    """Append one line to the audit trail (call inside the transaction it describes)."""
    conn.execute(
        "INSERT INTO events (ts_ms, actor, kind, detail) VALUES (?, ?, ?, ?)", (now_ms, actor, kind, detail)
    )
