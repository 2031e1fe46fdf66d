"""SQLite settings and the transaction helper shared by onboard's queue and ground's database."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_db(path: Path, schema: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode with WAL and full fsync, creating ``schema`` if new.

    synchronous=FULL because both sides acknowledge data (a queued post, an acked chunk)
    only after it is committed: it must survive power loss, not just a process crash.

    The file and its -wal/-shm companions are private (0600) whatever the umask: they hold
    password hashes, session and CSRF tokens, the audit log and embargoed posts.
    """
    make_private(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=check_same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(schema)
    # SQLite creates -wal and -shm with the database file's mode; an older release's files
    # (created 0644) are narrowed here too.
    for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists():
            make_private(companion)
    return conn


def make_private(path: Path) -> None:
    """Create ``path`` (empty) if missing, and make it readable and writable by its owner only."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        # A COMMIT that failed (busy, disk full) may leave the transaction open, holding the
        # write lock and showing this connection writes that never became durable.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
