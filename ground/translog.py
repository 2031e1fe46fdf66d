"""Ground's transparency log: an append-only Merkle log of keys, items and outcomes (§15).

The log *follows* the database rather than being written by every code path that changes
it: ``catch_up`` appends a leaf for each fact not logged yet (a key enrolled or revoked, an
account enrolled, an item accepted, a publication reaching published / failed for good /
cancelled / retracted), in one transaction, then signs a new checkpoint. It follows the
receipts' change sequence (ground/changes.py, docs/PROTOCOL.md §9.1) from a stored cursor, so
each pass reads only what changed since the last. Facts are keyed (``tlog_leaves.fact``,
UNIQUE), so running it twice, or after a crash, adds nothing twice.
A revocation is as old as the checkpoint that first contains it: it cannot be back-dated
past checkpoints already signed, whatever ``revoked_ms`` says.

Leaves live in ground.db (``tlog_leaves``, append-only by trigger); pymerkle computes roots
and proofs over them through ``_SqlTree`` (docs/TRANSPARENCY.md says why pymerkle).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pymerkle import BaseMerkleTree

from protocol import format_public_key, rules
from protocol.tlog import Checkpoint, SignedCheckpoint, canonical_entry, leaf_hash, sign_checkpoint

from .db import transaction
from .home import GroundHome
from .receipts import ground_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS tlog_leaves (
    idx     INTEGER PRIMARY KEY,       -- 1-based leaf index, as pymerkle counts
    fact    TEXT NOT NULL UNIQUE,      -- what the leaf records, so it is logged once
    entry   BLOB NOT NULL,             -- canonical JSON (protocol/tlog.py)
    digest  BLOB NOT NULL,             -- RFC 9162 leaf hash of entry
    ts_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tlog_checkpoints (
    size    INTEGER PRIMARY KEY,
    note    TEXT NOT NULL,             -- the signed note, exactly as served
    ts_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tlog_witnesses (
    name        TEXT PRIMARY KEY,
    public_key  BLOB NOT NULL,
    added_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tlog_cosignatures (
    size        INTEGER NOT NULL,
    witness     TEXT NOT NULL,
    time_s      INTEGER NOT NULL,
    signature   BLOB NOT NULL,
    PRIMARY KEY (size, witness)
);
-- How far catch_up has followed the change log (ground/changes.py, docs/PROTOCOL.md §9.1).
CREATE TABLE IF NOT EXISTS tlog_cursor (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS tlog_leaves_no_update BEFORE UPDATE ON tlog_leaves
BEGIN SELECT RAISE(ABORT, 'the transparency log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS tlog_leaves_no_delete BEFORE DELETE ON tlog_leaves
BEGIN SELECT RAISE(ABORT, 'the transparency log is append-only'); END;
"""

# Outcomes a reader cares about; 'failed' only once ground gave up (retryable = 0).
LOGGED_STATES = ("published", "cancelled", "retracted", "failed")
# Changes followed per transaction: a huge backlog is logged in steps, never one long write lock.
BATCH = 2_000


def media_fidelity(platform: str) -> str:
    """'exact' where the platform keeps the photo's bytes, else 're-encoded' (protocol/rules.py)."""
    return str(rules.media_fidelity(platform).value)


def origin(home: GroundHome) -> str:
    """The log's name in its checkpoints: stable for a ground, different between grounds."""
    return f"orbitpost/{ground_key(home).public_key[:8].hex()}"


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone():
        # catch_up finds a changed bundle's items by it (a bare log, as in tests, has no items).
        conn.execute("CREATE INDEX IF NOT EXISTS items_bundle ON items(bundle_id)")


class _SqlTree(BaseMerkleTree):  # type: ignore[misc]
    """pymerkle's tree over ``tlog_leaves``: it reads leaf hashes, we do the appending."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        super().__init__("sha256")

    def _encode_entry(self, data: bytes) -> bytes:
        return data

    def _store_leaf(self, data: bytes, digest: bytes) -> int:
        raise NotImplementedError("leaves are appended by translog.catch_up only")

    def _get_leaf(self, index: int) -> bytes:
        row = self.conn.execute("SELECT digest FROM tlog_leaves WHERE idx = ?", (index,)).fetchone()
        return bytes(row[0])

    def _get_leaves(self, offset: int, width: int) -> list[bytes]:
        rows = self.conn.execute(
            "SELECT digest FROM tlog_leaves WHERE idx > ? AND idx <= ? ORDER BY idx", (offset, offset + width)
        )
        return [bytes(d) for (d,) in rows]

    def _get_size(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(idx), 0) FROM tlog_leaves").fetchone()[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    key: str
    entry: dict[str, Any]


def _keys(conn: sqlite3.Connection) -> Iterator[Fact]:
    # Keys are not in the change log; their table holds a row or two per astronaut, and each
    # check below is one lookup in tlog_leaves' fact index, so every pass reads them all.
    for kid, name, pub, enrolled, revoked, enrolled_logged, revoked_logged in conn.execute(
        "SELECT key_id, astronaut, public_key, enrolled_ms, revoked_ms, "
        "EXISTS (SELECT 1 FROM tlog_leaves WHERE fact = 'key:' || lower(hex(key_id))), "
        "EXISTS (SELECT 1 FROM tlog_leaves WHERE fact = 'revoke:' || lower(hex(key_id))) "
        "FROM keys ORDER BY enrolled_ms, key_id"
    ):
        if not enrolled_logged:
            yield Fact(
                key=f"key:{bytes(kid).hex()}",
                entry={
                    "kind": "key-enrolled",
                    "astronaut": name,
                    "key_id": bytes(kid).hex(),
                    "public_key": format_public_key(bytes(pub)),
                    "enrolled_ms": enrolled,
                },
            )
        if revoked is not None and not revoked_logged:
            yield Fact(
                key=f"revoke:{bytes(kid).hex()}",
                entry={
                    "kind": "key-revoked",
                    "astronaut": name,
                    "key_id": bytes(kid).hex(),
                    "revoked_ms": revoked,
                },
            )


def _accounts(conn: sqlite3.Connection, astronaut: str) -> Iterator[Fact]:
    for (account,) in conn.execute(
        "SELECT account FROM accounts WHERE astronaut = ? AND NOT EXISTS "
        "(SELECT 1 FROM tlog_leaves l WHERE l.fact = 'account:' || astronaut || ':' || account) ORDER BY account",
        (astronaut,),
    ):
        yield Fact(
            key=f"account:{astronaut}:{account}",
            entry={"kind": "account-enrolled", "astronaut": astronaut, "account": account},
        )


_ITEMS = (
    "SELECT i.id, i.kind, i.author, i.key_id, i.body, i.statement_sha256, i.statement, "
    "i.target_id, b.sha256, i.received_ms "
    "FROM items i JOIN bundles b ON b.bundle_id = i.bundle_id "
    "WHERE {where} AND NOT EXISTS (SELECT 1 FROM tlog_leaves l WHERE l.fact = 'item:' || i.id) "
    "ORDER BY i.received_ms, i.id"
)


def _items(conn: sqlite3.Connection, where: str, arg: str) -> Iterator[Fact]:
    """Items not logged yet among those ``where`` (SQL over ``i``, one ``?``) selects."""
    for item_id, kind, author, kid, body, st_sha, statement, target, bundle_sha, received in conn.execute(
        _ITEMS.format(where=where), (arg,)
    ):
        # Hashes only, never text: an embargoed post must not be readable from the log.
        yield Fact(
            key=f"item:{item_id}",
            entry={
                "kind": "item",
                "item_id": item_id,
                "item_kind": kind,
                "astronaut": author,
                "key_id": bytes(kid).hex(),
                "body_sha256": hashlib.sha256(bytes(body)).hexdigest(),
                "statement_sha256": _statement_sha(st_sha, statement),
                "target_id": target,
                "bundle_sha256": bundle_sha,
                "received_ms": received,
            },
        )


def _statement_sha(st_sha: bytes | None, statement: bytes | None) -> str | None:
    """Hex sha256 of an item's batch statement (kept by hash from this release, whole before)."""
    if st_sha is not None:
        return bytes(st_sha).hex()
    return None if statement is None else hashlib.sha256(bytes(statement)).hexdigest()


def _media_hashes(conn: sqlite3.Connection, item_id: str) -> list[str]:
    from protocol import decode_item
    from protocol.model import Post

    row = conn.execute("SELECT body FROM items WHERE id = ?", (item_id,)).fetchone()
    item = decode_item(bytes(row[0]))
    return [m.sha256.hex() for m in item.media] if isinstance(item, Post) else []


def _publication(conn: sqlite3.Connection, item_id: str, account: str) -> Iterator[Fact]:
    """The outcome of one (post, account), if it is one the log records and not logged yet."""
    marks = ",".join("?" * len(LOGGED_STATES))
    row = conn.execute(
        "SELECT state, url, published_ms, fidelity, fidelity_note, renditions FROM publications "
        f"WHERE item_id = ? AND account = ? AND state IN ({marks}) AND (state != 'failed' OR retryable = 0) "
        "AND NOT EXISTS (SELECT 1 FROM tlog_leaves l WHERE l.fact = "
        "'pub:' || item_id || ':' || account || ':' || state)",
        (item_id, account, *LOGGED_STATES),
    ).fetchone()
    if row is None:
        return
    state, url, published, fidelity, note, made = row
    # An outcome's item is logged before it, even when its bundle's change is stamped later
    # (a station's claim re-stamps a bundle after its publications).
    yield from _items(conn, "i.id = ?", item_id)
    entry: dict[str, Any] = {
        "kind": "publication",
        "item_id": item_id,
        "account": account,
        "state": state,
        "url": url,
        "published_ms": published,
        "text_fidelity": "exact",
        "media_fidelity": media_fidelity(account.partition(":")[0]),
    }
    if state == "published":
        entry["original_media_sha256"] = _media_hashes(conn, item_id)
        # What the adapter found reading the copy back (issue 13): the fidelity it observed
        # (a Flickr original that came back different is re-encoded) and its words.
        if fidelity:
            entry["media_fidelity"] = fidelity
        if note:
            entry["read_back"] = note
        if made:
            # Photos sent as a rendition the signed post allowed (docs/PROTOCOL.md §15):
            # both hashes and the recipe, so the log says exactly what was changed.
            entry["renditions"] = [
                {k: r[k] for k in ("photo", "original_sha256", "sha256", "recipe")} for r in json.loads(made)
            ]
    yield Fact(key=f"pub:{item_id}:{account}:{state}", entry=entry)


def _facts_of(conn: sqlite3.Connection, kind: str, k1: str, k2: str) -> Iterator[Fact]:
    """What one change of ground/changes.py may add to the log (other kinds add nothing)."""
    if kind == "bundle":
        yield from _items(conn, "i.bundle_id = ?", k1)
    elif kind == "pub":
        yield from _publication(conn, k1, k2)
    elif kind == "enrolled":
        yield from _accounts(conn, k1)


def cursor(conn: sqlite3.Connection) -> int:
    """The change sequence number (ground/changes.py) up to which every fact is logged."""
    row = conn.execute("SELECT seq FROM tlog_cursor WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


def _append(conn: sqlite3.Connection, facts: list[Fact], now_ms: int) -> None:
    size = int(conn.execute("SELECT COALESCE(MAX(idx), 0) FROM tlog_leaves").fetchone()[0])
    seen: set[str] = set()
    for fact in facts:
        if fact.key in seen:  # an item reached twice in one batch (its bundle and an outcome)
            continue
        seen.add(fact.key)
        size += 1
        data = canonical_entry(fact.entry)
        conn.execute(
            "INSERT INTO tlog_leaves (idx, fact, entry, digest, ts_ms) VALUES (?, ?, ?, ?, ?)",
            (size, fact.key, data, leaf_hash(data), now_ms),
        )


def catch_up(home: GroundHome, now_ms: int) -> int:
    """Log every fact changed since the stored cursor, sign a checkpoint if the tree grew.

    Each pass reads the keys (a few rows) and the changes (docs/PROTOCOL.md §9.1) numbered
    above ``tlog_cursor``, at most ``BATCH`` per transaction; the leaves and the new cursor
    commit together, so a crash repeats nothing and skips nothing. Facts are unique, so a row
    stamped again (it changed again, or a station claimed its bundle) is never logged twice.
    Blocking: ``ground serve`` runs it in a worker thread with a connection of its own.
    Returns the leaves added.
    """
    conn = home.conn
    ensure_schema(conn)
    before = _size(conn)
    while True:
        with transaction(conn):
            since = cursor(conn)
            rows = conn.execute(
                "SELECT seq, kind, k1, k2 FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (since, BATCH)
            ).fetchall()
            facts = list(_keys(conn))
            for _seq, kind, k1, k2 in rows:
                facts.extend(_facts_of(conn, kind, k1, k2))
            _append(conn, facts, now_ms)
            if rows:
                conn.execute(
                    "INSERT INTO tlog_cursor (id, seq) VALUES (1, ?) "
                    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
                    (rows[-1][0],),
                )
        if len(rows) < BATCH:
            break
    added = _size(conn) - before
    if added or latest(home) is None:
        _sign_head(home, now_ms)
    return added


def _size(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(idx), 0) FROM tlog_leaves").fetchone()[0])


def _sign_head(home: GroundHome, now_ms: int) -> SignedCheckpoint:
    tree = _SqlTree(home.conn)
    size = tree.get_size()
    cp = Checkpoint(origin=origin(home), size=size, root=tree.get_root(size), time_ms=now_ms)
    signed = sign_checkpoint(ground_key(home), origin(home), cp)
    with transaction(home.conn):
        home.conn.execute(
            "INSERT OR IGNORE INTO tlog_checkpoints (size, note, ts_ms) VALUES (?, ?, ?)",
            (size, signed.note(), now_ms),
        )
    return signed


def latest(home: GroundHome) -> str | None:
    """The newest signed checkpoint (a C2SP signed note), or None before the first."""
    ensure_schema(home.conn)
    row = home.conn.execute("SELECT note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def checkpoint_at(home: GroundHome, size: int) -> str | None:
    row = home.conn.execute("SELECT note FROM tlog_checkpoints WHERE size = ?", (size,)).fetchone()
    return None if row is None else str(row[0])


def inclusion_proof(home: GroundHome, index: int, size: int) -> dict[str, Any]:
    """pymerkle's serialised inclusion proof of leaf ``index`` (1-based) in the tree of ``size``."""
    return dict(_SqlTree(home.conn).prove_inclusion(index, size).serialize())


def consistency_proof(home: GroundHome, old_size: int, new_size: int) -> dict[str, Any]:
    return dict(_SqlTree(home.conn).prove_consistency(old_size, new_size).serialize())


def leaf(home: GroundHome, fact: str) -> tuple[int, bytes] | None:
    """(index, entry bytes) of the leaf recording ``fact`` (e.g. ``item:<id>``), if logged."""
    ensure_schema(home.conn)
    row = home.conn.execute("SELECT idx, entry FROM tlog_leaves WHERE fact = ?", (fact,)).fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]))


def leaves(home: GroundHome, start: int, end: int) -> list[tuple[int, bytes]]:
    """Leaves ``start`` .. ``end - 1`` (1-based), for auditors replaying the log."""
    rows = home.conn.execute(
        "SELECT idx, entry FROM tlog_leaves WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
    )
    return [(int(i), bytes(e)) for i, e in rows]


def add_witness(home: GroundHome, name: str, public_key: bytes, now_ms: int) -> None:
    ensure_schema(home.conn)
    with transaction(home.conn):
        home.conn.execute(
            "INSERT OR REPLACE INTO tlog_witnesses (name, public_key, added_ms) VALUES (?, ?, ?)",
            (name, public_key, now_ms),
        )


def witnesses(home: GroundHome) -> dict[str, bytes]:
    ensure_schema(home.conn)
    return {n: bytes(k) for n, k in home.conn.execute("SELECT name, public_key FROM tlog_witnesses")}


def add_cosignature(home: GroundHome, size: int, witness: str, time_s: int, signature: bytes) -> None:
    with transaction(home.conn):
        home.conn.execute(
            "INSERT OR REPLACE INTO tlog_cosignatures (size, witness, time_s, signature) VALUES (?, ?, ?, ?)",
            (size, witness, time_s, signature),
        )


def cosignatures(home: GroundHome, size: int) -> list[dict[str, Any]]:
    return [
        {"witness": w, "time_s": t, "signature": bytes(s).hex()}
        for w, t, s in home.conn.execute(
            "SELECT witness, time_s, signature FROM tlog_cosignatures WHERE size = ? ORDER BY witness",
            (size,),
        )
    ]
