"""The change log: one gap-free, ordered sequence number per change a receipt reports (§9).

Every row a receipt describes (a publication, a bundle, a rejected bundle, an account's
limits, an astronaut's enrolled accounts, a cancel/retract outcome) has one row in
``changes``, stamped by SQLite triggers *inside the transaction that made the change*. The
stamp is an AUTOINCREMENT key, and SQLite lets one writer at a time hold the database, so
stamps are committed in the order they are handed out: a reader that has seen stamp N has
seen every change stamped at or below N. "Everything after N" is therefore exact, whatever
the wall clock does (steps back, equal milliseconds) and whoever writes (the publisher,
`ground ingest`, the dashboard, `ground retry`), which a time cursor could not promise.

A row that changes again is stamped again (its old stamp is deleted), so the log holds one
row per thing described, not one per change, and a reader always gets the current state.

Stations see only their own posts: those in bundles they uploaded over the link, or in
bundles they *claim* by sha256 (a file hand-off: only a holder of the bundle's bytes knows
its hash). A first claim re-stamps that bundle's rows so a station whose cursor is already
past them still gets them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from durable.sqlitedb import transaction

# What makes the publications' INSERT trigger stand aside for a group stamp
# (stamping_inserts_by_group).
_UNLESS_BY_GROUP = "NOT EXISTS (SELECT 1 FROM changes_by_group)"

# (kind, table, key columns as SQL over NEW/OLD, trigger events, condition). One place for all
# of them; a database whose trigger reads otherwise (an earlier release's) gets this one.
_STAMPED = (
    ("pub", "publications", ("item_id", "account"), "INSERT", _UNLESS_BY_GROUP),
    (
        "pub",
        "publications",
        ("item_id", "account"),
        "UPDATE OF state, url, last_error, remote_id",
        "OLD.state IS NOT NEW.state OR OLD.url IS NOT NEW.url OR OLD.last_error IS NOT NEW.last_error "
        "OR OLD.remote_id IS NOT NEW.remote_id",
    ),
    ("bundle", "bundles", ("bundle_id",), "INSERT", None),
    ("rejection", "rejections", ("id",), "INSERT", None),
    ("limits", "account_limits", ("account",), "INSERT", None),
    ("limits", "account_limits", ("account",), "UPDATE", None),
    ("enrolled", "accounts", ("astronaut",), "INSERT", None),
    ("enrolled", "accounts", ("astronaut",), "UPDATE OF account, astronaut", None),
    ("enrolled", "accounts", ("astronaut",), "DELETE", None),
    ("command", "commands", ("item_id",), "INSERT", None),
    ("command", "commands", ("item_id",), "UPDATE", None),
    # Appended (receipts version 3, docs/PROTOCOL.md §9.4): the photo fidelity a receipt carries.
    # A new entry, not an edit of the one above, so an existing database gains it too.
    (
        "pub",
        "publications",
        ("item_id", "account"),
        "UPDATE OF fidelity, fidelity_note, renditions",
        "OLD.fidelity IS NOT NEW.fidelity OR OLD.fidelity_note IS NOT NEW.fidelity_note "
        "OR OLD.renditions IS NOT NEW.renditions",
    ),
    # Appended (receipts version 4, docs/PROTOCOL.md §9.5): an account's URL template, made once.
    ("template", "url_templates", ("id",), "INSERT", None),
)

SCHEMA = """
-- Holds a row only inside a transaction that stamps new publications a group at a time
-- (stamping_inserts_by_group): the publications' triggers stand aside while it is there.
CREATE TABLE IF NOT EXISTS changes_by_group (one INTEGER PRIMARY KEY CHECK (one = 1));
CREATE TABLE IF NOT EXISTS changes (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, only grows (docs/PROTOCOL.md §9)
    kind  TEXT NOT NULL,                       -- pub | bundle | rejection | limits | enrolled | command | template
    k1    TEXT NOT NULL,
    k2    TEXT NOT NULL DEFAULT '',
    UNIQUE (kind, k1, k2)
);
-- Bundles a station claimed by sha256 (file hand-off): it may read their receipts.
CREATE TABLE IF NOT EXISTS station_claims (
    station     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    claimed_ms  INTEGER NOT NULL,
    PRIMARY KEY (station, sha256)
);
-- URL templates (receipts version 4, docs/PROTOCOL.md §9.5): an account's fixed URL parts, as
-- JSON (protocol/receipt_templates.py; 'null': none). Never changed: a new one gets a new id.
CREATE TABLE IF NOT EXISTS url_templates (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT NOT NULL,
    url         TEXT NOT NULL,
    remote_id   TEXT NOT NULL,
    UNIQUE (account, url, remote_id)
);
-- The change seq from which each station has read version-4 documents only: it holds every
-- template stamped after it up to its cursor; raised by every live document of an older
-- version (ground/url_templates.py).
CREATE TABLE IF NOT EXISTS receipt_readers (
    station     TEXT PRIMARY KEY,
    v4_from     INTEGER NOT NULL
);
-- Cancel/retract outcomes (ground/publish.py); created here too because its triggers need it.
CREATE TABLE IF NOT EXISTS commands (
    item_id     TEXT PRIMARY KEY REFERENCES items(id),
    state       TEXT NOT NULL,      -- 'done' or 'refused'
    detail      TEXT NOT NULL,
    applied_ms  INTEGER NOT NULL
);
"""

# A claim list longer than this is cut: a station has at most a few hand-off files awaiting.
MAX_CLAIMS = 256


def _trigger(n: int, kind: str, table: str, keys: tuple[str, ...], event: str, when: str | None) -> str:
    row = "OLD" if event == "DELETE" else "NEW"
    k = [f"CAST({row}.{c} AS TEXT)" for c in keys] + ["''"] * (2 - len(keys))
    # Written as SQLite keeps it in sqlite_master, so ensure_schema can compare the two.
    return (
        f"CREATE TRIGGER changes_{table}_{n} AFTER {event} ON {table} "
        + (f"WHEN {when} " if when else "")
        + f"BEGIN DELETE FROM changes WHERE kind = '{kind}' AND k1 = {k[0]} AND k2 = {k[1]}; "
        f"INSERT INTO changes (kind, k1, k2) VALUES ('{kind}', {k[0]}, {k[1]}); END"
    )


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the log and its triggers; a database from before them gets every row stamped once."""
    fresh = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'changes'").fetchone() is None
    conn.executescript(SCHEMA)
    for n, (kind, table, keys, event, when) in enumerate(_STAMPED):
        name = f"changes_{table}_{n}"
        found = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,))
        old, sql = found.fetchone(), _trigger(n, kind, table, keys, event, when)
        if old and old[0] != sql:
            conn.execute(f"DROP TRIGGER {name}")  # an earlier release's (e.g. stamping row by row only)
        if not old or old[0] != sql:
            conn.execute(sql)
    if fresh:
        _backfill(conn)


def _backfill(conn: sqlite3.Connection) -> None:
    """Stamp what an earlier release recorded, oldest first (its order by time is the best known)."""
    with transaction(conn):
        conn.execute(
            "INSERT OR IGNORE INTO changes (kind, k1, k2) SELECT kind, k1, k2 FROM ("
            "SELECT 'bundle' AS kind, bundle_id AS k1, '' AS k2, received_ms AS t FROM bundles "
            "UNION ALL SELECT 'rejection', CAST(id AS TEXT), '', received_ms FROM rejections "
            "UNION ALL SELECT 'pub', item_id, account, updated_ms FROM publications "
            "UNION ALL SELECT 'limits', account, '', updated_ms FROM account_limits "
            "UNION ALL SELECT 'command', item_id, '', applied_ms FROM commands "
            "UNION ALL SELECT DISTINCT 'enrolled', astronaut, '', 0 FROM accounts) ORDER BY t"
        )


def restamp(conn: sqlite3.Connection, rows: Iterable[tuple[str, str, str]]) -> None:
    """Give these (kind, k1, k2) fresh stamps (call inside a write transaction)."""
    for kind, k1, k2 in rows:
        conn.execute("DELETE FROM changes WHERE kind = ? AND k1 = ? AND k2 = ?", (kind, k1, k2))
        conn.execute("INSERT INTO changes (kind, k1, k2) VALUES (?, ?, ?)", (kind, k1, k2))


def claim(conn: sqlite3.Connection, station: str, shas: Iterable[bytes], now_ms: int) -> int:
    """Let ``station`` read the receipts of the bundles (accepted or rejected) with these hashes.

    Only bundles ground has count; a first claim re-stamps their rows so a cursor already
    past them picks them up. Returns how many bundles were newly claimed.
    """
    wanted = [s.hex() for s in list(shas)[:MAX_CLAIMS] if len(s) == 32]
    if not wanted:
        return 0
    new = 0
    with transaction(conn):
        for sha in wanted:
            bundle = conn.execute("SELECT bundle_id FROM bundles WHERE sha256 = ?", (sha,)).fetchone()
            rejected = conn.execute("SELECT id FROM rejections WHERE sha256 = ?", (sha,)).fetchall()
            if bundle is None and not rejected:
                continue  # not here (yet): claim again later
            cur = conn.execute(
                "INSERT OR IGNORE INTO station_claims (station, sha256, claimed_ms) VALUES (?, ?, ?)",
                (station, sha, now_ms),
            )
            if not cur.rowcount:
                continue
            new += 1
            rows: list[tuple[str, str, str]] = [("rejection", str(r), "") for (r,) in rejected]
            if bundle is not None:
                rows.append(("bundle", bundle[0], ""))
                for item_id, account in conn.execute(
                    "SELECT p.item_id, p.account FROM publications p JOIN items i ON i.id = p.item_id "
                    "WHERE i.bundle_id = ?",
                    (bundle[0],),
                ):
                    rows.append(("pub", item_id, account))
                for (cmd,) in conn.execute(
                    "SELECT c.item_id FROM commands c JOIN items i ON i.id = c.item_id WHERE i.bundle_id = ?",
                    (bundle[0],),
                ):
                    rows.append(("command", cmd, ""))
            restamp(conn, rows)
    return new


# The change log of a group of new publications in one statement (issue 18): for every
# (item id, account) of the JSON list, in list order, what each row's AFTER INSERT trigger does:
# its old stamp deleted (REPLACE), a fresh one added.
_STAMP_INSERTED = (
    "INSERT OR REPLACE INTO changes (kind, k1, k2) SELECT 'pub', p.item_id, p.account "
    "FROM json_each(?) AS j JOIN publications AS p "
    "ON p.item_id = json_extract(j.value, '$[0]') AND p.account = json_extract(j.value, '$[1]') "
    "ORDER BY j.key"
)


@contextmanager
def stamping_inserts_by_group(conn: sqlite3.Connection, keys: Sequence[Sequence[str]]) -> Iterator[None]:
    """Around one INSERT of the publications ``keys`` ((item id, account) each), inside the
    caller's write transaction: their stamps are added by one statement, in ``keys`` order,
    while the per-row triggers stand aside; the log ends as the triggers leave it
    (tests/test_changes_by_group.py) at under half the cost for a 10,000-post bundle.

    Updates keep their triggers: measured, stamping a claimed or recorded group of 1,000 this
    way (its condition checked against each row first) cost more than the triggers did.
    """
    if not conn.in_transaction:
        raise RuntimeError("stamping a group needs the caller's write transaction")
    conn.execute("INSERT INTO changes_by_group (one) VALUES (1)")
    try:
        yield
    finally:
        conn.execute("DELETE FROM changes_by_group")
    conn.execute(_STAMP_INSERTED, (json.dumps([list(k) for k in keys]),))
