"""SQLite settings and the transaction helper shared by onboard's queue and ground's database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_db(path: Path, schema: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode with WAL and full fsync, creating ``schema`` if new.

    synchronous=FULL because both sides acknowledge data (a queued post, an acked chunk)
    only after it is committed: it must survive power loss, not just a process crash.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=check_same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(schema)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
